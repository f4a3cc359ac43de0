"""No file a user hands vaezoo is unpickled with code execution, at any entry point.

Each test crafts a file whose unpickling runs a shell command that creates a marker file (the
first test proves that the payload really does run when unpickled the unsafe way), hands it to
one entry point and checks that (a) the marker never appears, (b) the entry point fails with
vaezoo's own message (exit 2 from the CLI, never a traceback), (c) the run folder it came from is
byte for byte what it was. A genuine checkpoint of a real training run reads whole with
``weights_only=True``: Lightning's loops, callbacks, optimizer and scheduler state are plain data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_RUN

from vaezoo.cli import main
from vaezoo.io import CheckpointError, check_checkpoint, load_checkpoint, load_run, model_from_checkpoint

REPO = Path(__file__).resolve().parents[1]
REFUSED = "holds more than tensors and plain data: it names posix.system; loading it could run code, so it is refused"


class RunsCode:
    """Unpickling this runs ``touch MARKER`` (pickle calls ``os.system`` with the command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def poison(checkpoint: Path, marker: Path) -> None:
    """Turn a genuine checkpoint into a malicious one: the same state, with code hidden in its loops."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["loops"]["fit_loop"]["payload"] = RunsCode(marker)
    torch.save(state, checkpoint)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def plain_leaves(value: object, where: str = "checkpoint") -> list[str]:
    """Where ``value`` holds anything but tensors, numbers, strings, None and containers of them."""
    if isinstance(value, dict):
        return [bad for key, item in value.items() for bad in plain_leaves(item, f"{where}[{key!r}]")]
    if isinstance(value, (list, tuple)):
        return [bad for i, item in enumerate(value) for bad in plain_leaves(item, f"{where}[{i}]")]
    plain = isinstance(value, (torch.Tensor, int, float, str, bool, type(None)))
    return [] if plain else [f"{where}: {type(value).__name__}"]


@pytest.fixture(scope="module")
def genuine_run(tmp_path_factory) -> Path:
    """A real tiny training run (with an lr schedule, so its scheduler state is in the checkpoint)."""
    tmp = tmp_path_factory.mktemp("genuine")
    args = ["train", "-c", str(REPO / "configs/vae.yaml"), *TINY_RUN, "--train.scheduler", "exponential"]
    assert main([*args, "--logging.save_dir", str(tmp / "runs")]) == 0
    (run,) = sorted((tmp / "runs").glob("*/version_*"))
    return run


@pytest.fixture
def poisoned_run(genuine_run, tmp_path) -> tuple[Path, Path]:
    """A copy of the genuine run whose last and best checkpoints carry code; and the marker's path."""
    run = tmp_path / "run"
    shutil.copytree(genuine_run, run)
    marker = tmp_path / "marker"
    for checkpoint in (run / "checkpoints").glob("*.ckpt"):
        poison(checkpoint, marker)
    return run, marker


def best_checkpoint(run: Path) -> Path:
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    return best


def test_the_crafted_payload_really_runs_when_unpickled_unsafely(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.ckpt"
    torch.save({"vaezoo": {}, "state_dict": {}, "loops": {"payload": RunsCode(marker)}}, path)
    torch.load(path, weights_only=False)  # what every entry point below must never do
    assert marker.is_file()


@pytest.mark.slow
def test_a_genuine_checkpoint_reads_whole_with_weights_only(genuine_run):
    for path in (genuine_run / "checkpoints" / "last.ckpt", best_checkpoint(genuine_run)):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert {"state_dict", "loops", "callbacks", "optimizer_states", "lr_schedulers", "vaezoo"} <= set(
            checkpoint
        )
        assert checkpoint["optimizer_states"][0]["state"], "Adam's moments are in the checkpoint"
        assert checkpoint["lr_schedulers"] and any(
            k.startswith("ModelCheckpoint") for k in checkpoint["callbacks"]
        )
        assert plain_leaves(checkpoint) == []
        assert check_checkpoint(path) == path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


CLI_CASES = {
    "sample last.ckpt": lambda run: ["sample", str(run / "checkpoints" / "last.ckpt"), "-n", "4"],
    "sample best": lambda run: ["sample", str(best_checkpoint(run)), "-n", "4"],
    "reconstruct run folder": lambda run: ["reconstruct", str(run), "-n", "4"],
    "evaluate run folder": lambda run: ["evaluate", str(run), "--metrics", "reconstruction", "--no-progress"],
    "evaluate best": lambda run: ["evaluate", str(best_checkpoint(run)), "--no-progress"],
    "train --resume": lambda run: ["train", "--resume", str(run)],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CLI_CASES)
def test_the_cli_refuses_a_checkpoint_holding_code(poisoned_run, case, tmp_path, capsys, monkeypatch):
    run, marker = poisoned_run
    monkeypatch.chdir(tmp_path)  # where sample / reconstruct would write their pictures
    before = snapshot(run)
    command = CLI_CASES[case](run)
    code, err = run_cli(command, capsys)
    assert not marker.exists(), "the pickled code ran"
    assert code == 2, err
    assert err.startswith(f"vaezoo {command[0]}: error: {run / 'checkpoints'}/"), err
    assert REFUSED in err and "(nothing in it was run)" in err
    assert snapshot(run) == before  # nothing in the run folder changed, and nothing was added
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no picture written either


@pytest.mark.slow
def test_benchmark_reevaluate_refuses_a_checkpoint_holding_code(poisoned_run, tmp_path, capsys):
    run, marker = poisoned_run
    results = tmp_path / "results"
    results.mkdir()
    (results / "results.json").write_text(
        json.dumps({"suite": "tiny", "rows": {"VAE": {"run_dir": str(run)}}})
    )
    suite = {
        "name": "tiny",
        "output": str(results),
        "data": {"name": "dsprites", "subset": 400, "image_size": 32},
        "models": [{"label": "VAE", "config": str(REPO / "configs/vae.yaml")}],
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    before = snapshot(run)
    code, err = run_cli(
        ["benchmark", "-c", str(tmp_path / "suite.yaml"), "--only", "VAE", "--reevaluate"], capsys
    )
    assert not marker.exists()
    assert code == 2 and err.startswith(f"vaezoo benchmark: error: {run / 'checkpoints' / 'last.ckpt'} "), err
    assert REFUSED in err
    assert snapshot(run) == before


@pytest.mark.slow
def test_the_python_api_refuses_a_checkpoint_holding_code(poisoned_run):
    run, marker = poisoned_run
    before = snapshot(run)
    readers = [load_checkpoint, load_run, model_from_checkpoint, check_checkpoint]
    for read in readers:
        for path in (run, run / "checkpoints" / "last.ckpt", best_checkpoint(run)):
            with pytest.raises(
                CheckpointError, match="it names posix.system; .* so it is refused"
            ) as refused:
                read(path)
            assert str(run / "checkpoints") in str(refused.value)
    assert not marker.exists()
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_two_process_resume_refuses_before_any_worker_starts(poisoned_run, isolated_cache):
    """DDP: the launcher (rank 0) vets the checkpoint before Lightning starts rank 1, and each rank
    runs the same ``train()``, so the per-rank read is the single-process one (weights_only=True)."""
    run, marker = poisoned_run
    before = snapshot(run)
    ddp = ["--train.accelerator", "cpu", "--train.devices", "2", "--train.strategy", "ddp"]
    env = {"PATH": "/usr/bin:/bin", "VAEZOO_CACHE": isolated_cache, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(REPO / "src")
    command = [sys.executable, "-m", "vaezoo.cli", "train", "--resume", str(run), *ddp]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert not marker.exists()
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and REFUSED in done.stderr
    assert snapshot(run) == before


def test_lightnings_own_loader_refuses_and_refusing_code_names_the_file(tmp_path):
    """What ``trainer.fit(ckpt_path=..., weights_only=True)`` does on every rank of a resume."""
    from lightning.fabric.utilities.cloud_io import _load

    from vaezoo.io import refusing_code

    marker = tmp_path / "marker"
    path = tmp_path / "last.ckpt"
    torch.save({"vaezoo": {}, "state_dict": {}, "loops": {"payload": RunsCode(marker)}}, path)
    with pytest.raises(CheckpointError, match=f"{path} holds more .* refused \\(nothing in it was run\\)"):
        with refusing_code(path):
            _load(path, map_location="cpu", weights_only=True)
    assert not marker.exists()


def test_other_torch_files_are_read_without_running_code(tmp_path):
    from safetensors import SafetensorError

    from vaezoo.evaluation.inception import load_inception
    from vaezoo.evaluation.samplers import load_sampler
    from vaezoo.nn.vgg import read_state_dict

    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(1), "payload": RunsCode(marker)}, evil)
    with pytest.raises(ValueError, match=f"cannot read VGG19-BN weights from '{evil}'"):
        read_state_dict(evil)  # DFCVAE's model.feature_weights
    with pytest.raises(SafetensorError):
        load_sampler(evil)  # a saved ex-post sampler is a safetensors file
    with pytest.raises(ValueError, match="is not a TorchScript file of a feature network"):
        load_inception(evil)  # evaluate --inception
    assert not marker.exists()


def test_a_torchscript_file_with_code_in_its_pickle_is_refused(tmp_path):
    """TorchScript's own unpickler knows only TorchScript types: a Python global is an error."""
    import pickle
    import zipfile

    from vaezoo.evaluation.inception import load_inception

    marker = tmp_path / "marker"
    script = tmp_path / "net.pt"
    with pytest.warns(DeprecationWarning):  # TorchScript is deprecated, but it is what --inception reads
        torch.jit.script(torch.nn.Conv2d(3, 4, 3)).save(str(script))
    evil = tmp_path / "evil_inception.pt"
    with zipfile.ZipFile(script) as source, zipfile.ZipFile(evil, "w") as target:
        for name in source.namelist():
            data = (
                pickle.dumps(RunsCode(marker), protocol=2)
                if name.endswith("/data.pkl")
                else source.read(name)
            )
            target.writestr(name, data)
    with pytest.raises(ValueError, match="Unknown type name 'posix.system'"):
        load_inception(evil)
    assert not marker.exists()


def object_npy(path: Path, marker: Path) -> Path:
    """A ``.npy`` of dtype object: its data is a pickle that runs code when loaded with allow_pickle."""
    np.save(path, np.array([RunsCode(marker)], dtype=object), allow_pickle=True)
    return path


def test_npy_files_are_never_unpickled(tmp_path, monkeypatch):
    from vaezoo.data import DataError
    from vaezoo.data.cache import read_npy_header
    from vaezoo.data.dsprites import open_packed
    from vaezoo.evaluation.inception import InceptionFeatures, cached_features, feature_cache_key

    marker = tmp_path / "marker"
    with pytest.raises(DataError, match="must be a C-ordered numeric array"):
        read_npy_header(object_npy(tmp_path / "pixels.npy", marker))  # the uint8 image cache
    with pytest.warns(UserWarning, match="unreadable dSprites cache"):
        assert open_packed(object_npy(tmp_path / "packed.npy", marker), rows=1) is None
    # The real-image Inception feature cache: a file at the key's path that holds code is recomputed.
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    extractor = InceptionFeatures(net, weights_id="test-weights")
    images = torch.rand(2, 1, 8, 8)
    cache = tmp_path / "features"
    cache.mkdir()
    object_npy(cache / f"{feature_cache_key(images, extractor)}.npy", marker)
    features = cached_features(images, extractor, progress=False, cache_dir=cache)
    assert features.shape == (2, 3) and features.dtype != object
    assert not marker.exists()


@pytest.mark.slow
def test_a_config_with_python_tags_is_refused(poisoned_run, tmp_path, capsys):
    """YAML is read with safe_load: a ``!!python/object/apply`` tag is an error, not a call."""
    run, marker = poisoned_run
    evil = f'model:\n  name: VanillaVAE\n  latent_dim: !!python/object/apply:os.system ["touch {marker}"]\n'
    (tmp_path / "evil.yaml").write_text(evil)
    code, err = run_cli(["train", "-c", str(tmp_path / "evil.yaml")], capsys)
    assert code == 2 and "could not determine a constructor for the tag" in err, err
    (run / "config.yaml").write_text(evil)  # the run folder's own config, read by --resume
    before = snapshot(run)
    code, err = run_cli(["train", "--resume", str(run)], capsys)
    assert code == 2 and f"{run / 'config.yaml'}: YAML syntax error" in err, err
    assert not marker.exists()
    assert snapshot(run) == before
