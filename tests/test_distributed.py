"""Two processes through Lightning's DDP (CPU, gloo): one run folder, rank-zero artefacts, synced steps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY_RUN

from vaezoo.io import model_from_checkpoint

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
        # metrics during training: rank zero evaluates while the other rank waits in its next step
        "--logging.eval_every_n_steps",
        "2",
        "--logging.eval_groups",
        "[active_units, mig]",
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
        "traversals_epoch000.gif",
        "traversals_epoch001.gif",
    ]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 6  # 3 steps an epoch on each process, in lockstep
    assert (run / "summary.json").is_file()
    assert result.stderr.count("eval: every 2 batches on rank zero: active_units, mig") == 1
    assert "eval: 3 evaluations took" in result.stderr


# --- Python-API runs that also save what each process saw and ended with -----------------------

RUN_SCRIPT = '''
"""Train as `vaezoo train` does, through the Python API (argv: output folder, config, overrides),
saving each process's batches and final state."""
import sys
from pathlib import Path

import lightning as L
import torch

from vaezoo.config import load_config
from vaezoo.training import run


class SaveEachProcess(L.Callback):
    def __init__(self, out):
        self.out, self.train_labels, self.val_batches = Path(out), [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train_labels.append(batch[1].clone())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.val_batches.append([tensor.clone() for tensor in batch])

    def on_train_end(self, trainer, pl_module):
        state = {key: value.detach().clone() for key, value in pl_module.state_dict().items()}
        saved = {"state": state, "train_labels": self.train_labels, "val_batches": self.val_batches}
        torch.save(saved, self.out / f"rank{trainer.global_rank}.pt")


out = Path(sys.argv[1])
config = load_config(sys.argv[2], sys.argv[3:])
run.train(config, extra_callbacks=[SaveEachProcess(out)])
'''

CPU_ENV = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
TWO_PROCESSES = ["--train.accelerator", "cpu", "--train.devices", "2", "--train.strategy", "ddp"]
ONE_PROCESS = ["--train.accelerator", "cpu", "--train.devices", "1"]

# VQ-VAE with an EMA codebook: a deterministic encoder (no reparameterisation noise to tell the set-ups
# apart) whose codebook state needs the all-reduce. 4 steps, then one validation of 2 batches a process.
VQ_RUN = [
    "--model.hidden_dims", "[8, 16]", "--model.latent_dim", "4", "--model.num_embeddings", "16",
    "--model.num_residual_layers", "1", "--model.ema", "true", "--model.data_init", "false",
    "--data.image_size", "32", "--data.subset", "400", "--train.precision", "32-true",
    "--train.max_epochs", "1", "--train.limit_train_batches", "4", "--train.limit_val_batches", "2",
    "--logging.num_images", "16", "--logging.progress_bar", "none",
    "--train.ema_decay", "0.5",  # a moving average of the weights too (it does not change training)
]  # fmt: skip
PER_PROCESS_BATCH = 8
VQ_CONFIG = "configs/vq_vae.yaml"

# Two processes of batch B against one of 2B: the same images at every step, the same initial
# weights, gradients averaged over the processes, codebook statistics summed. What still differs is
# BatchNorm, which normalises each process's B images by their own statistics (SyncBatchNorm needs a
# GPU), amplified by Adam in the biases that precede a BatchNorm (their true gradient is 0, so their
# steps follow float noise). Measured after 4 steps (parameters 3.8 % of their norm from the start):
#                                  ||dW|| / ||W||   max |d codebook|   max |d N_k|
#   two processes                      0.83 %           0.015              0.12
#   two, codebook not all-reduced      0.94 %           0.059             14.0
#   one process of batch B             1.40 %           0.067             14.0
WEIGHT_TOLERANCE = 0.011  # ||W_ddp - W_single|| / ||W_single||, over the parameters
CODEBOOK_TOLERANCE = 0.03  # max |codebook_ddp - codebook_single| (entries up to 0.28)
CLUSTER_SIZE_TOLERANCE = 1.0  # max |N_k ddp - N_k single| (N_k up to 30)
VAL_TOLERANCE = 1e-5  # relative: the logged val/loss against the mean over all validation images


def run_script(
    folder: Path, config: str, *overrides: str, timeout: float = 600, text: str = RUN_SCRIPT
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder.parent / "ddp_run.py"
    script.write_text(text)
    command = [sys.executable, str(script), str(folder), config, *overrides]
    command += ["--logging.save_dir", str(folder / "runs")]
    env = {**CPU_ENV, "VAEZOO_CACHE": os.environ["VAEZOO_CACHE"]}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]


def saved(folder: Path, rank: int) -> dict:
    return torch.load(folder / f"rank{rank}.pt", weights_only=True)


def rows(labels: torch.Tensor) -> set[tuple[float, ...]]:
    """A batch's label rows (dSprites' factor values name each image)."""
    return {tuple(row.tolist()) for row in labels}


@pytest.fixture(scope="module")
def vq_runs(tmp_path_factory) -> dict[str, Path]:
    """A two-process VQ-VAE run of batch 8 and a one-process run of batch 16, from one config."""
    root = tmp_path_factory.mktemp("vq")
    folders = {"ddp": root / "ddp", "single": root / "single"}
    per_process, global_batch = str(PER_PROCESS_BATCH), str(2 * PER_PROCESS_BATCH)
    run_script(folders["ddp"], VQ_CONFIG, *VQ_RUN, "--train.batch_size", per_process, *TWO_PROCESSES)
    run_script(folders["single"], VQ_CONFIG, *VQ_RUN, "--train.batch_size", global_batch, *ONE_PROCESS)
    return folders


def trained_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's parameters and codebook state: all but BatchNorm's running statistics."""
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in state.items() if k.startswith("model.") and not k.endswith(skip)}


@pytest.mark.slow
def test_two_processes_see_disjoint_shards_that_make_the_one_process_batch(vq_runs):
    ranks = [saved(vq_runs["ddp"], rank) for rank in (0, 1)]
    single = saved(vq_runs["single"], 0)
    assert len(single["train_labels"]) == len(ranks[0]["train_labels"]) == 4
    for step, expected in enumerate(single["train_labels"]):
        shards = [rows(rank["train_labels"][step]) for rank in ranks]
        assert [len(shard) for shard in shards] == [PER_PROCESS_BATCH] * 2
        assert not shards[0] & shards[1]  # disjoint
        assert shards[0] | shards[1] == rows(expected)  # together the one process's batch of 16


@pytest.mark.slow
def test_two_processes_train_one_model_close_to_the_one_process_model(vq_runs):
    ranks = [trained_state(saved(vq_runs["ddp"], rank)["state"]) for rank in (0, 1)]
    single = trained_state(saved(vq_runs["single"], 0)["state"])
    for name in single:  # averaged gradients, all-reduced codebook statistics: bit for bit one model
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    quantizer = "model.quantizer."
    params = [name for name in single if not name.startswith(quantizer)]
    gap = sum((ranks[0][k] - single[k]).pow(2).sum() for k in params).sqrt()
    norm = sum(single[k].pow(2).sum() for k in params).sqrt()
    assert gap / norm < WEIGHT_TOLERANCE
    for name, tolerance in (("codebook", CODEBOOK_TOLERANCE), ("ema_cluster_size", CLUSTER_SIZE_TOLERANCE)):
        difference = (ranks[0][quantizer + name] - single[quantizer + name]).abs().max()
        assert difference < tolerance, name


@pytest.mark.slow
def test_the_moving_average_of_the_weights_is_one_average_across_processes(vq_runs):
    """train.ema_decay under DDP: every process averages the same (synchronised) weights."""
    ranks = [saved(vq_runs["ddp"], rank)["state"] for rank in (0, 1)]
    single = saved(vq_runs["single"], 0)["state"]
    averaged = [key for key in ranks[0] if key.startswith("ema.module.")]
    assert averaged and int(ranks[0]["ema.n_averaged"]) == int(single["ema.n_averaged"]) == 4
    for key in averaged:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    params = [k for k in averaged if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    params = [k for k in params if ".quantizer." not in k]
    gap = sum((ranks[0][k] - single[k]).pow(2).sum() for k in params).sqrt()
    norm = sum(single[k].pow(2).sum() for k in params).sqrt()
    assert gap / norm < WEIGHT_TOLERANCE  # the one-process average, as the weights are
    moved = [
        k for k in params if not torch.equal(ranks[0][k], ranks[0][k.replace("ema.module.", "model.", 1)])
    ]
    assert moved  # an average, not a copy of the last weights


@pytest.mark.slow
def test_logged_validation_loss_is_the_mean_over_the_whole_validation_set(vq_runs):
    ranks = [saved(vq_runs["ddp"], rank) for rank in (0, 1)]
    single = saved(vq_runs["single"], 0)
    shards = [set().union(*(rows(labels) for _, labels in rank["val_batches"])) for rank in ranks]
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set().union(*(rows(labels) for _, labels in single["val_batches"]))
    run_dir = next((vq_runs["ddp"] / "runs").glob("*/version_*"))
    logged = json.loads((run_dir / "summary.json").read_text())["val_metrics"]["val/loss"]
    model, _ = model_from_checkpoint(run_dir)
    shard_sums, shard_sizes = [], []
    for rank in ranks:  # each process's own final state (BatchNorm's running statistics may differ)
        # validation runs the moving average of the weights (VQ_RUN's train.ema_decay)
        prefix = "ema.module."
        state = {k.removeprefix(prefix): v for k, v in rank["state"].items() if k.startswith(prefix)}
        model.load_state_dict(state)
        with torch.no_grad():  # a batch's loss is its images' mean: weigh it by their number
            sums = [
                model.loss_function(*model(x, labels=y), M_N=1.0)["loss"] * len(x)
                for x, y in rank["val_batches"]
            ]
        shard_sums.append(float(sum(sums)))
        shard_sizes.append(sum(len(x) for x, _ in rank["val_batches"]))
    whole_set = sum(shard_sums) / sum(shard_sizes)  # the mean over every validation image
    assert logged == pytest.approx(whole_set, rel=VAL_TOLERANCE)
    rank_zero_alone = shard_sums[0] / shard_sizes[0]  # what an unsynchronised log would show
    assert abs(rank_zero_alone - logged) > 10 * VAL_TOLERANCE * logged


FACTOR_RUN = [*TINY_RUN, "--model.discriminator_units", "64"]


@pytest.mark.slow
def test_factorvae_discriminator_steps_in_lockstep_across_processes(tmp_path):
    folder = tmp_path / "factor"
    run_script(folder, "configs/factorvae.yaml", *FACTOR_RUN, *TWO_PROCESSES)
    ranks = [saved(folder, rank) for rank in (0, 1)]
    assert not rows(ranks[0]["train_labels"][0]) & rows(ranks[1]["train_labels"][0])  # different data
    states = [trained_state(rank["state"]) for rank in ranks]
    discriminator = [name for name in states[0] if name.startswith("model.discriminator.")]
    assert discriminator
    for name in states[0]:  # the discriminator's gradients were averaged too: one model on both
        assert torch.equal(states[0][name], states[1][name]), name
    run_dir = next((folder / "runs").glob("*/version_*"))
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 12  # 6 batches, each a VAE step and a discriminator step


def child_processes(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if parent == pid:
            children.append(int(stat.parent.name))
    return children


@pytest.mark.slow
def test_a_killed_process_ends_the_run_naming_it_and_the_run_resumes(tmp_path):
    folder = tmp_path / "killed"
    folder.mkdir()
    script = tmp_path / "ddp_run.py"
    script.write_text(RUN_SCRIPT)
    long_run = [*TINY_RUN, *TWO_PROCESSES, "--logging.save_dir", str(folder / "runs")]
    long_run[long_run.index("--train.max_epochs") + 1] = "40"
    env = {**CPU_ENV, "VAEZOO_CACHE": os.environ["VAEZOO_CACHE"]}
    command = [sys.executable, str(script), str(folder), "configs/vae.yaml", *long_run]
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        launcher = subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout, stderr=stderr)
        try:
            deadline = time.monotonic() + 300
            while not list((folder / "runs").glob("*/version_*/checkpoints/last.ckpt")):
                assert launcher.poll() is None and time.monotonic() < deadline, "the run ended too early"
                time.sleep(0.2)
            (rank_one,) = child_processes(launcher.pid)  # Lightning started rank 1; this is rank 0
            os.kill(rank_one, signal.SIGKILL)
            returncode = launcher.wait(timeout=120)  # not a hang: the gloo collective fails at once
        finally:
            if launcher.poll() is None:
                launcher.kill()
    errors = (tmp_path / "stderr").read_text()
    assert returncode != 0
    assert f"training process rank 1 (pid {rank_one}) was killed by SIGKILL" in errors, errors[-3000:]

    run_dir = next((folder / "runs").glob("*/version_*"))
    before = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    epochs = before["epoch"] + 3  # two more epochs than the checkpoint had finished
    resume = [
        sys.executable,
        "-m",
        "vaezoo.cli",
        "train",
        "--resume",
        str(run_dir),
        "--train.max_epochs",
        str(epochs),
    ]
    result = subprocess.run(resume, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    after = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert after["global_step"] == 3 * epochs > before["global_step"]  # 3 steps an epoch, both processes


# RUN_SCRIPT with the images of rank 1's second batch replaced by NaN (a corrupt batch on one process)
NAN_ON_RANK_ONE = RUN_SCRIPT.replace(
    "run.train(config, extra_callbacks=[SaveEachProcess(out)])",
    """
class NanOnRankOne(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == 1 and batch_idx == 1:
            batch[0].fill_(float("nan"))


run.train(config, extra_callbacks=[SaveEachProcess(out), NanOnRankOne()])
""",
)


@pytest.mark.slow
def test_a_nan_on_one_process_skips_the_step_on_all(tmp_path):
    # Skipping alone, rank 1 would leave rank 0 waiting in the gradient all-reduce (a hang)
    overrides = [*VQ_RUN, "--train.batch_size", str(PER_PROCESS_BATCH), *TWO_PROCESSES]
    run_script(
        tmp_path / "nan",
        VQ_CONFIG,
        *overrides,
        "--train.nonfinite",
        "skip",
        timeout=300,
        text=NAN_ON_RANK_ONE,
    )
    states = [trained_state(saved(tmp_path / "nan", rank)["state"]) for rank in (0, 1)]
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])  # still in lockstep
    assert all(bool(torch.isfinite(value).all()) for value in states[0].values())


@pytest.mark.slow
def test_sigterm_to_a_two_process_run_stops_both_at_one_step_with_a_checkpoint(tmp_path):
    # Lightning forwards the launcher's SIGTERM to rank 1; the stop flag is reduced across ranks, so
    # both save and stop after the same step (a rank stopping alone would hang the other)
    long_run = [*TINY_RUN, *TWO_PROCESSES, "--logging.save_dir", str(tmp_path / "runs")]
    long_run[long_run.index("--train.max_epochs") + 1] = "40"
    env = {**CPU_ENV, "VAEZOO_CACHE": os.environ["VAEZOO_CACHE"]}
    command = [sys.executable, "-m", "vaezoo.cli", "train", "-c", "configs/vae.yaml", *long_run]
    launcher = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "runs").glob("*/version_*/checkpoints/last.ckpt")):
            assert launcher.poll() is None and time.monotonic() < deadline, "the run ended too early"
            time.sleep(0.2)
        launcher.send_signal(signal.SIGTERM)
        _, errors = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 128 + signal.SIGTERM, errors[-3000:]
    run_dir = next((tmp_path / "runs").glob("*/version_*"))
    assert "stopped by SIGTERM after " in errors and f"vaezoo train --resume {run_dir}" in errors
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert 0 < saved["global_step"] < 3 * 40
