"""Two processes through Lightning's DDP (CPU, gloo): one run folder, rank-zero artefacts, synced steps."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_RUN

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_run(tmp_path, isolated_cache):
    command = [
        sys.executable,
        "-m",
        "vaezoo.cli",
        "train",
        "-c",
        "configs/vae.yaml",
        *TINY_RUN,
        "--train.accelerator",
        "cpu",
        "--train.devices",
        "2",
        "--train.strategy",
        "ddp",
        "--logging.save_dir",
        str(tmp_path / "runs"),
    ]
    env = {
        "PATH": "/usr/bin:/bin",
        "VAEZOO_CACHE": isolated_cache,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO / "src"),
    }
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "runs").glob("*/version_*"))
    assert len(runs) == 1, runs  # both processes wrote into the folder the launcher chose
    run = runs[0]
    assert sorted(p.name for p in (run / "images").iterdir()) == [
        "reconstructions_epoch000.png",
        "reconstructions_epoch001.png",
        "samples_epoch000.png",
        "samples_epoch001.png",
    ]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 6  # 3 steps an epoch on each process, in lockstep
    assert (run / "summary.json").is_file()
