"""One run, one folder: a finished run's resume changes nothing, a new run never writes into an
old folder (``--overwrite`` replaces one deliberately), a folder another process writes is refused."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TINY_RUN

from vaezoo.cli import main

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def finished_run(tmp_path, monkeypatch, isolated_cache) -> Path:
    monkeypatch.chdir(REPO)
    run = tmp_path / "run"
    assert main(["train", "-c", "configs/vae.yaml", *TINY_RUN, "--run-dir", str(run)]) == 0
    return run


@pytest.mark.slow
def test_resuming_a_finished_run_says_so_and_changes_nothing(finished_run, capsys):
    before = snapshot(finished_run)
    capsys.readouterr()
    assert main(["train", "--resume", str(finished_run)]) == 0
    err = capsys.readouterr().err
    assert "has already finished" in err and "--train.max_epochs" in err
    assert snapshot(finished_run) == before  # no event file, grid, checkpoint or config rewritten


@pytest.mark.slow
def test_a_new_run_never_writes_into_an_old_folder(finished_run, capsys):
    before = snapshot(finished_run)
    capsys.readouterr()
    assert main(["train", "-c", "configs/vae.yaml", *TINY_RUN, "--run-dir", str(finished_run)]) == 2
    err = capsys.readouterr().err
    assert f"--run-dir {finished_run} already holds files" in err and "--overwrite" in err
    assert snapshot(finished_run) == before

    stray = finished_run / "notes.txt"
    stray.write_text("from the old run")
    argv = ["train", "-c", "configs/vae.yaml", *TINY_RUN, "--run-dir", str(finished_run), "--overwrite"]
    assert main([*argv, "--train.max_epochs", "1"]) == 0
    assert not stray.exists()  # replaced, not mixed
    assert "max_epochs: 1" in (finished_run / "config.yaml").read_text()
    assert sorted(p.name for p in (finished_run / "images").iterdir()) == [
        "reconstructions_epoch000.png",
        "samples_epoch000.png",
        "traversals_epoch000.gif",
    ]


HOLD_LOCK = """
import sys, time
from vaezoo.training.runlock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_folder_another_process_writes_is_refused_until_it_dies(finished_run, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(finished_run)],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = snapshot(finished_run)
        capsys.readouterr()
        assert main(["train", "--resume", str(finished_run), "--train.max_epochs", "3"]) == 2
        err = capsys.readouterr().err
        assert f"{finished_run} is being written by another vaezoo process" in err
        assert f"pid {holder.pid}" in err
        assert snapshot(finished_run) == before
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert main(["train", "--resume", str(finished_run), "--train.max_epochs", "3"]) == 0  # no stale lock


@pytest.mark.slow
def test_a_torn_last_checkpoint_is_named_with_the_intact_one_to_use(finished_run, capsys):
    last = finished_run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy or a save cut short
    before = snapshot(finished_run)
    capsys.readouterr()
    assert main(["train", "--resume", str(finished_run), "--train.max_epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert f"cannot resume from {last}" in err and "damaged checkpoint" in err
    assert "best-epoch001-step6.ckpt is intact" in err and "Traceback" not in err
    assert snapshot(finished_run) == before  # nothing written, not even config.yaml
