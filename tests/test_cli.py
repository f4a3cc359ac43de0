"""The `vaezoo` command end to end: train writes every artefact, resume continues, bad input is named."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_RUN
from PIL import Image

from vaezoo.cli import main

# A small, fast run (helpers.TINY_RUN), logging every step.
FAST = [*TINY_RUN, "--logging.log_every_n_steps", "1"]


def train(tmp_path: Path, *extra: str) -> int:
    return main(
        ["train", "-c", "configs/vae.yaml", *FAST, "--logging.save_dir", str(tmp_path / "runs"), *extra]
    )


def only_run_dir(tmp_path: Path) -> Path:
    runs = sorted((tmp_path / "runs").glob("*/version_*"))
    assert len(runs) == 1, runs
    return runs[0]


def checkpoint_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.slow
def test_train_writes_every_artefact_and_resume_continues(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert train(tmp_path) == 0
    run = only_run_dir(tmp_path)
    assert run.parent.name == "VanillaVAE"
    names = {p.name for p in run.rglob("*") if p.is_file()}
    assert {"config.yaml", "summary.json", "last.ckpt"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert any(n.startswith("best-epoch") for n in names)
    for kind in ("reconstructions", "samples"):
        for epoch in (0, 1):
            png = run / "images" / f"{kind}_epoch{epoch:03d}.png"
            assert png.is_file(), png
            assert np.asarray(Image.open(png)).std() > 0  # not a blank picture
    # The resolved config records what the data decided.
    saved = (run / "config.yaml").read_text()
    assert "in_channels: 1" in saved and "image_size: 32" in saved
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 6 and summary["val_recon_mse_per_pixel"] > 0
    # TensorBoard got the losses and the images.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    assert {"train/loss_step", "val/loss", "val/KLD", "val/Reconstruction_Loss"} <= set(
        events.Tags()["scalars"]
    )
    assert {"reconstructions", "samples"} <= set(events.Tags()["images"])
    assert checkpoint_step(run / "checkpoints" / "last.ckpt") == 6

    # Resume: the global step goes on from 6, in the same folder.
    assert main(["train", "--resume", str(run), "--train.max_epochs", "3"]) == 0
    assert only_run_dir(tmp_path) == run
    assert checkpoint_step(run / "checkpoints" / "last.ckpt") == 9
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(resumed["state_dict"]["train_batches"]) == 9  # the step the models see survives resume too
    assert (run / "images" / "samples_epoch002.png").is_file()

    # sample / reconstruct / list from the trained checkpoint.
    out = tmp_path / "samples.png"
    assert main(["sample", str(run / "checkpoints" / "last.ckpt"), "-n", "12", "-o", str(out)]) == 0
    assert Image.open(out).size == (4 * 34 + 2, 3 * 34 + 2)  # 4 per row of 32 px + 2 px padding
    recon = tmp_path / "recon.png"
    assert main(["reconstruct", str(run), "-n", "8", "-o", str(recon)]) == 0
    assert Image.open(recon).size == (2 * 34 + 2, 8 * 34 + 2)  # 8 images, 2 a row: 4 input + 4 recon rows
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((np.random.rand(40, 40, 3) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    assert main(["reconstruct", str(run), "--data", str(folder), "-o", str(recon), "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["list"]) == 0
    assert "VanillaVAE" in capsys.readouterr().out


def test_print_config_applies_overrides(capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert main(["train", "-c", "configs/vae.yaml", "--model.latent_dim", "32", "--print-config"]) == 0
    assert "latent_dim: 32" in capsys.readouterr().out


def corrupt_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"definitely not a png")
    return folder


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_path", "does not exist"),
        ("empty_folder", "no image files found"),
        ("corrupt_image", "broken.png"),
        ("yaml_error", "line 2"),
        ("unknown_model", "Did you mean 'VanillaVAE'"),
        ("bad_image_size", "multiple of 2^3 = 8"),
        ("channel_mismatch", "model.in_channels = 3 but the data"),
    ],
)
def test_bad_input_is_named_and_leaves_no_run_folder(tmp_path, monkeypatch, capsys, case, expected):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model:\n  name: VAE: x\n")
    args = {
        "missing_path": ["--data.name", "image_folder", "--data.path", str(tmp_path / "nowhere")],
        "empty_folder": ["--data.name", "image_folder", "--data.path", str(empty)],
        "corrupt_image": ["--data.name", "image_folder", "--data.path", str(corrupt_folder(tmp_path))],
        "yaml_error": ["-c", str(bad_yaml)],
        "unknown_model": ["--model.name", "VanilaVAE"],
        "bad_image_size": ["--data.image_size", "36"],
        "channel_mismatch": ["--model.in_channels", "3"],
    }[case]
    assert train(tmp_path, *args) == 2
    message = capsys.readouterr().err
    assert expected in message, message
    assert not (tmp_path / "runs").exists()


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "runs" / "VanillaVAE" / "version_0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model: {name: VanillaVAE}\n")
    assert main(["train", "--resume", str(run)]) == 2
    assert "last.ckpt does not exist" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err


@pytest.mark.slow
def test_same_seed_same_weights_and_csv_logger(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    short = ["--train.max_epochs", "1"]
    assert train(tmp_path, *short) == 0
    assert train(tmp_path, *short, "--logging.logger", "csv") == 0
    first, second = (tmp_path / "runs" / "VanillaVAE" / f"version_{i}" for i in (0, 1))
    weights = [
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for run in (first, second)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    metrics = (second / "metrics.csv").read_text().splitlines()
    assert "val/loss" in metrics[0] and len(metrics) > 1
    assert (second / "images" / "samples_epoch000.png").is_file()
    different = train(tmp_path, *short, "--train.seed", "7")
    assert different == 0
    third = torch.load(
        tmp_path / "runs" / "VanillaVAE" / "version_2" / "checkpoints" / "last.ckpt", weights_only=True
    )["state_dict"]
    assert not torch.equal(third["model.head.fc_mu.weight"], weights[0]["model.head.fc_mu.weight"])


@pytest.mark.slow
def test_sample_conditions_conditional_models_and_explains_models_without_prior(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    small = [*FAST, "--train.max_epochs", "1", "--logging.save_dir", str(tmp_path / "runs")]
    assert main(["train", "-c", "configs/cvae.yaml", *small]) == 0
    assert main(["train", "-c", "configs/vq_vae.yaml", *small, "--model.hidden_dims", "[16, 32]"]) == 0
    cvae = next((tmp_path / "runs").glob("ConditionalVAE/version_0"))
    out = tmp_path / "cvae.png"
    assert main(["sample", str(cvae), "-n", "4", "-o", str(out)]) == 0
    assert Image.open(out).size == (2 * 34 + 2, 2 * 34 + 2)
    capsys.readouterr()
    vq = next((tmp_path / "runs").glob("VQVAE/version_0"))
    assert main(["sample", str(vq), "-n", "4", "-o", str(tmp_path / "vq.png")]) == 2
    assert "cannot sample from VQVAE: VQVAE has no prior over its codes" in capsys.readouterr().err
    assert not (tmp_path / "vq.png").exists()


@pytest.mark.slow
def test_max_steps_inside_an_epoch_still_validates_the_final_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert train(tmp_path, "--train.max_steps", "2", "--train.limit_train_batches", "5") == 0
    run = only_run_dir(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2
    assert summary["val_metrics"]["val/loss"] > 0  # validated although the epoch never finished
    assert list((run / "images").glob("reconstructions_epoch*.png"))


def test_a_config_with_resume_is_refused_before_anything_is_touched(tmp_path, capsys):
    run = tmp_path / "runs" / "VanillaVAE" / "version_0"
    run.mkdir(parents=True)
    assert main(["train", "-c", "configs/vae.yaml", "--resume", str(run)]) == 2
    assert "exclude each other: a resumed run keeps the config saved in" in capsys.readouterr().err
    assert list(run.iterdir()) == []  # nothing written into the run folder


@pytest.mark.slow
def test_a_run_stopped_inside_an_epoch_resumes_in_that_epoch(tmp_path):
    # 3 training batches per epoch (limit_train_batches); max_steps 2 stops inside epoch 0.
    assert train(tmp_path, "--train.max_steps", "2", "--train.max_epochs", "3") == 0
    run = only_run_dir(tmp_path)
    # the stop is validated in the epoch it happened in, and leaves its best checkpoint
    assert sorted(p.name for p in (run / "images").glob("reconstructions_*")) == [
        "reconstructions_epoch000.png"
    ]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_checkpoint"].endswith("best-epoch000-step2.ckpt")
    # resumed with no step limit, it finishes epoch 0 and trains epochs 1 and 2: 9 batches in all
    assert main(["train", "--resume", str(run), "--train.max_steps", "-1"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 9
    names = sorted(p.name for p in (run / "images").glob("reconstructions_*"))
    assert names == [f"reconstructions_epoch00{e}.png" for e in range(3)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "no_validation_each_epoch",
    [["--train.limit_val_batches", "0"], ["--train.check_val_every_n_epoch", "2"]],
    ids=["without-validation", "validating-every-second-epoch"],
)
def test_a_run_saved_at_epoch_ends_also_resumes_inside_a_cut_epoch(tmp_path, no_validation_each_epoch):
    # last.ckpt is written at epoch ends here; the epoch max_steps cuts short is saved at its last batch
    assert (
        train(tmp_path, *no_validation_each_epoch, "--train.max_steps", "2", "--train.max_epochs", "3") == 0
    )
    run = only_run_dir(tmp_path)
    assert checkpoint_step(run / "checkpoints" / "last.ckpt") == 2
    assert main(["train", "--resume", str(run), "--train.max_steps", "-1"]) == 0
    assert checkpoint_step(run / "checkpoints" / "last.ckpt") == 9  # 3 whole epochs of 3 batches


@pytest.mark.slow
def test_a_max_time_stop_inside_an_epoch_resumes_in_that_epoch(tmp_path, monkeypatch, capsys):
    from lightning.pytorch.callbacks import Timer

    def out_of_time_after_two_steps(self: Timer, trainer) -> None:  # the Timer, on a fake clock
        trainer.should_stop = trainer.should_stop or trainer.global_step >= 2

    with monkeypatch.context() as patch:
        patch.setattr(Timer, "_check_time_remaining", out_of_time_after_two_steps)
        no_validation = ["--train.limit_val_batches", "0", "--train.max_epochs", "3"]
        assert train(tmp_path, *no_validation, "--train.max_time", "3600") == 0
    run = only_run_dir(tmp_path)
    assert checkpoint_step(run / "checkpoints" / "last.ckpt") == 2  # saved where the timer stopped it
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0  # the same limits: finished, nothing trained
    assert "has already finished" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--train.max_time", "7200"]) == 0  # the real clock
    assert checkpoint_step(run / "checkpoints" / "last.ckpt") == 9  # the rest of epoch 0, then 1 and 2


@pytest.mark.parametrize("command", ["sample", "reconstruct"])
def test_an_existing_output_is_kept_unless_overwrite(tmp_path, capsys, command):
    existing = tmp_path / "grid.png"
    existing.write_bytes(b"an earlier grid")
    assert main([command, str(tmp_path / "run"), "-o", str(existing)]) == 2  # refused before any work
    assert f"{existing} exists: choose another -o, or pass --overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == b"an earlier grid"
    assert main([command, str(tmp_path / "run"), "-o", str(existing), "--overwrite"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err  # past the check, to the missing run


def help_of(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_every_subcommand_option_shows_its_default(capsys):
    assert "how many samples to draw (default: 64)" in help_of("sample", capsys)
    assert "the PNG file to write (default: reconstructions.png)" in help_of("reconstruct", capsys)
    assert "seed of every random draw (default: 0)" in help_of("evaluate", capsys)
    assert "(default: False)" not in help_of("sample", capsys)  # a flag's default says nothing


@pytest.mark.slow
def test_lightning_tips_and_dependency_deprecations_are_quiet_unless_verbose(tmp_path, isolated_cache):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "vaezoo.cli", "train", "-c", "vae", *TINY_RUN, "--train.max_steps", "2"]
    env = {**os.environ, "VAEZOO_CACHE": isolated_cache, "PYTHONPATH": str(repo / "src")}
    said = {}
    for mode in ("quiet", "verbose"):
        extra = ["--logging.save_dir", str(tmp_path / mode), *(["--verbose"] if mode == "verbose" else [])]
        result = subprocess.run([*command, *extra], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        said[mode] = result.stdout + result.stderr
    for chatter in ("Tip:", "GPU available:", "is deprecated"):
        assert chatter not in said["quiet"] and chatter in said["verbose"], chatter
    assert "run folder:" in said["quiet"]  # vaezoo's own lines stay


@pytest.mark.slow
def test_a_run_with_a_weights_average_checkpoints_it_loads_it_for_inference_and_resumes(tmp_path):
    from vaezoo.io import load_run

    assert train(tmp_path, "--train.ema_decay", "0.9") == 0
    run = only_run_dir(tmp_path)
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    averaged = {k.removeprefix("ema.module."): v for k, v in saved.items() if k.startswith("ema.module.")}
    trained = {k.removeprefix("model."): v for k, v in saved.items() if k.startswith("model.")}
    assert averaged.keys() == trained.keys() and saved["ema.n_averaged"] == 6
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged)
    loaded = load_run(run).model.state_dict()  # inference gets the average
    assert all(torch.equal(loaded[k], averaged[k]) for k in loaded)
    assert main(["train", "--resume", str(run), "--train.max_epochs", "3"]) == 0
    resumed = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
        "state_dict"
    ]
    assert resumed["ema.n_averaged"] == 9  # the average went on from where it was
