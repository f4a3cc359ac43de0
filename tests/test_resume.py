"""Faults during a run: a process killed with SIGKILL mid-epoch resumes from its last mid-epoch
checkpoint, neither repeating nor skipping data, and with ``train.deterministic`` its logged loss
curve after the resume equals an uninterrupted run's, step for step."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from vaezoo.data.sampler import EpochSampler, ResumableLoader

REPO = Path(__file__).resolve().parents[1]

# 32x32 dSprites, a three-layer model: 400 images -> 380 train = 23 batches of 16 an epoch
RUN = [
    "--model.hidden_dims", "[8, 16, 32]", "--model.latent_dim", "4",
    "--data.image_size", "32", "--data.subset", "400",
    "--train.batch_size", "16", "--train.max_steps", "60", "--train.max_epochs", "null",
    "--train.limit_val_batches", "2", "--train.deterministic", "true",
    "--logging.num_images", "16", "--logging.progress_bar", "none", "--logging.logger", "csv",
    "--logging.log_every_n_steps", "1", "--logging.checkpoint_every_n_steps", "4",
]  # fmt: skip

# All of this file on one worker (make test's --dist loadgroup): its module fixtures, which train
# runs, are built once instead of once per worker.
pytestmark = pytest.mark.xdist_group("resume")


# Trains RUN in save_dir and kills itself with SIGKILL at the end of batch `kill_at` (no handler,
# no cleanup: what the OOM killer or `kill -9` does).
KILLED_RUN = """
import os, signal, sys
import lightning as L
from vaezoo.config import load_config
from vaezoo.training.run import train

class KillAt(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)

config = load_config("configs/vae.yaml", sys.argv[1:])
train(config, extra_callbacks=[KillAt()])
"""


def environment(cache: str) -> dict[str, str]:
    return {**os.environ, "VAEZOO_CACHE": cache, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def vaezoo(args: list[str], cache: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vaezoo.cli", *args]
    return subprocess.run(
        command, cwd=REPO, env=environment(cache), capture_output=True, text=True, timeout=600
    )


def logged_losses(run_dir: Path) -> dict[int, float]:
    """step -> train/loss_step of a run's metrics.csv; a step logged twice keeps its last value."""
    losses: dict[int, float] = {}
    with open(run_dir / "metrics.csv") as file:
        for row in csv.DictReader(file):
            if row.get("train/loss_step"):
                losses[int(row["step"])] = float(row["train/loss_step"])
    return losses


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, isolated_cache) -> dict[int, float]:
    """The logged curve of RUN trained without interruption (60 steps: 2.6 epochs)."""
    save_dir = tmp_path_factory.mktemp("uninterrupted")
    whole = vaezoo(
        ["train", "-c", "configs/vae.yaml", *RUN, "--logging.save_dir", str(save_dir)], isolated_cache
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    return logged_losses(next(save_dir.glob("*/version_0")))


def assert_same_curve(run_dir: Path, expected: dict[int, float]) -> None:
    got = logged_losses(run_dir)
    assert sorted(got) == sorted(expected) == list(range(60))  # every step once, none missing
    gap = max(abs(got[step] - expected[step]) for step in expected)
    assert gap == 0.0, f"max |loss difference| between the resumed and the uninterrupted curve: {gap}"


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_gives_the_uninterrupted_curve(tmp_path, isolated_cache, uninterrupted):
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED_RUN.format(kill_at=10)))
    command = [sys.executable, str(script), *RUN, "--logging.save_dir", str(tmp_path / "b")]
    killed = subprocess.run(
        command, cwd=REPO, env=environment(isolated_cache), capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = next((tmp_path / "b").glob("*/version_0"))
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 8  # the mid-epoch checkpoint before the kill, whole
    assert last["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["consumed"] == 8 * 16

    resumed = vaezoo(["train", "--resume", str(run)], isolated_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr  # Lightning's warning for a loader without state
    # the killed run's log was flushed with its checkpoint (steps 0-7); the resumed run logged 8-59
    assert_same_curve(run, uninterrupted)


# What Lightning's SLURMEnvironment reads in a one-task SLURM job (srun): it is detected, and SLURM's
# warning signal before the time limit is SIGUSR1.
SLURM_JOB = {
    "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "vaezoo", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "cluster"),
    [(signal.SIGTERM, {}), (signal.SIGINT, {}), (signal.SIGUSR1, SLURM_JOB)],
    ids=["SIGTERM", "ctrl-c", "SLURM-SIGUSR1"],
)
def test_a_stop_signal_checkpoints_the_step_and_says_how_to_resume(
    tmp_path, isolated_cache, request, stop, cluster
):
    command = [sys.executable, "-m", "vaezoo.cli", "train", "-c", "configs/vae.yaml", *RUN]
    command += ["--logging.save_dir", str(tmp_path)]
    env = {**environment(isolated_cache), **cluster}
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "VanillaVAE" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # training has begun once the first mid-epoch checkpoint is there
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + stop, stderr[-3000:]
    run = checkpoint.parents[1]
    assert f"stopped by {stop.name} after " in stderr and f"vaezoo train --resume {run}" in stderr
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert 4 <= saved["global_step"] < 60  # the step the signal arrived in, not only the last multiple of 4
    logged = logged_losses(run)
    assert max(logged) == saved["global_step"] - 1  # the log reaches the step the checkpoint holds

    if stop != signal.SIGTERM:
        return  # from the checkpoint on, a resume is the same whatever stopped the run: SIGTERM checks it
    resumed = vaezoo(["train", "--resume", str(run)], isolated_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_curve(run, request.getfixturevalue("uninterrupted"))


def positions(loader: ResumableLoader) -> list[int]:
    return [int(i) for batch in loader for i in batch]


def test_the_loader_resumes_part_way_through_an_epoch_without_repeating_or_skipping():
    data = torch.arange(50)
    loader = ResumableLoader(data, EpochSampler(50, seed=3), batch_size=4, drop_last=True)
    loader.sampler.set_epoch(2)
    whole_epoch = positions(loader)
    assert sorted(whole_epoch) != whole_epoch and len(set(whole_epoch)) == 48  # shuffled, 12 batches

    taken = []
    for batch in loader:  # interrupted after 5 batches
        taken += [int(i) for i in batch]
        if len(taken) == 20:
            state = loader.state_dict()
            break
    assert state["epoch"] == 2 and state["consumed"] == 20

    fresh = ResumableLoader(data, EpochSampler(50, seed=3), batch_size=4, drop_last=True)
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(2)
    rest = positions(fresh)
    assert taken + rest == whole_epoch
    assert fresh.state_dict()["consumed"] == 48
    fresh.sampler.set_epoch(3)  # the next epoch starts from its beginning, in a new order
    assert len(positions(fresh)) == 48 and positions(fresh) != whole_epoch


def test_the_order_depends_on_seed_and_epoch_only():
    first, second = EpochSampler(20, seed=1), EpochSampler(20, seed=1)
    torch.manual_seed(0)
    second.set_epoch(1)
    first.set_epoch(1)
    torch.rand(100)  # the global generator does not matter
    assert list(first) == list(second)
    first.set_epoch(2)
    assert list(first) != list(second)
    assert list(EpochSampler(20, seed=2)) != list(EpochSampler(20, seed=1))


@pytest.mark.parametrize("size", [16, 17, 3])
def test_every_process_gets_as_many_positions_and_together_they_cover_the_split(size, monkeypatch):
    import vaezoo.data.sampler as sampler

    def shards(**kwargs: object) -> list[list[int]]:
        taken = []
        for rank in range(2):
            monkeypatch.setattr(sampler, "process_rank", lambda rank=rank: (rank, 2))
            epoch = EpochSampler(size, seed=5, **kwargs)
            taken.append(list(epoch))
            assert len(epoch) == len(taken[-1])
        return taken

    train = shards(shuffle=True, even=True)  # disjoint; the odd one out is dropped
    assert len(train[0]) == len(train[1]) == size // 2 and not set(train[0]) & set(train[1])
    evaluation = shards(shuffle=False, even=False)  # equal lengths (a rank left short would hang), all images
    assert len(evaluation[0]) == len(evaluation[1]) == -(-size // 2)
    assert set(evaluation[0]) | set(evaluation[1]) == set(range(size))


def test_a_resumed_csv_log_keeps_the_rows_before_the_checkpoint_and_appends(tmp_path):
    from vaezoo.training.loggers import ResumedExperimentWriter

    lines = ["step,train/loss", *(f"{step},{10 - step}" for step in range(6)), "6,"[:1]]  # torn last line
    (tmp_path / "metrics.csv").write_text("\n".join(lines) + "\n")
    writer = ResumedExperimentWriter(str(tmp_path), purge_step=3)  # Lightning's own deleted the file
    writer.log_metrics({"train/loss": 7.5}, step=3)
    writer.save()
    with open(tmp_path / "metrics.csv") as file:
        logged = [(int(row["step"]), float(row["train/loss"])) for row in csv.DictReader(file)]
    assert logged == [(0, 10.0), (1, 9.0), (2, 8.0), (3, 7.5)]
