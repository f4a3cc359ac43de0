"""Smoke test of benchmarks/train_throughput.py: a few steps of the seed network and one small model
on a tiny image folder; the markdown has the rows and columns. Behaviour only, no speed assertions."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_throughput"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_writes_rows_and_columns(tmp_path):
    bench = load_script()
    out = tmp_path / "throughput.md"
    argv = ["--model", "VanillaVAE", "--data", "image_folder", "--steps", "4", "--warmup", "1",
            "--batch-size", "8", "--images", "40", "--pool", "16",             "--workdir", str(tmp_path / "work"), "--output", str(out)]  # fmt: skip
    assert bench.main(argv) == out
    text = out.read_text()
    assert "train_throughput.py --model VanillaVAE" in text  # the exact command
    for fact in ("threads:", "torch:", "avx2", "fp32 matmul peak", "precision chosen by vaezoo"):
        assert fact in text
    header = next(line for line in text.splitlines() if line.startswith("| row | path |"))
    for column in (
        "images/s",
        "x ref",
        "x own eager",
        "GFLOP/s",
        "peak RSS MiB",
        "data wait",
        "start-up s",
        "loss",
    ):
        assert f" {column} |" in header
    measured = [line for line in text.splitlines() if line.startswith("| VanillaVAE")]
    paths = {line.split(" | ")[1] for line in measured}
    assert {"reference eager", "own eager fp32", "vaezoo default"} <= paths
    assert "failed" not in paths
    assert "## Targets" in text and ">= 4x" in text and ">= 3x" in text
