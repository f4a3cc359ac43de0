"""The loggers of ``logging.logger``: a list of tensorboard | csv | mlflow | wandb, each getting the
metrics, the config and the pictures, and a resume continuing the same MLflow / W&B run.

MLflow (the ``mlflow`` extra) and W&B (the ``wandb`` extra) run for real, offline; without them
these tests skip saying how to install them, and on CI (``CI=true``) fail instead.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from helpers import TINY_RUN, require_package

from vaezoo.cli import main
from vaezoo.config import ConfigError, LoggingConfig, load_config
from vaezoo.training import loggers
from vaezoo.training.run import build_trainer, train
from vaezoo.training.runlock import RUN_DIR_ENV
from vaezoo.training.traversals import TraversalAnimation

REPO = Path(__file__).resolve().parents[1]
ONE_EPOCH = [
    *TINY_RUN,
    "--train.max_epochs",
    "1",
    "--logging.log_every_n_steps",
    "1",
]  # 3 batches: steps 0-2; a resume to 2 epochs: 3-5


def train_and_resume(run: Path, logger: str) -> None:
    """One epoch of the tiny run in ``run`` with ``logging.logger`` = ``logger``, then a resume to two."""
    assert (
        main(
            ["train", "-c", "configs/vae.yaml", *ONE_EPOCH, "--logging.logger", logger, "--run-dir", str(run)]
        )
        == 0
    )
    assert main(["train", "--resume", str(run), "--train.max_epochs", "2"]) == 0


# --------------------------------------------------------------------------- the config key


@pytest.mark.parametrize("value", ["csv", ["tensorboard", "mlflow"], ["wandb"]])
def test_logger_takes_a_name_or_a_list(value):
    config = load_config(REPO / "configs/vae.yaml", ["--logging.logger", str(value).replace("'", "")])
    assert config.logging.logger == value
    assert loggers.logger_names(config.logging.logger) == ([value] if isinstance(value, str) else value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[csv, neptune]", "--logging.logger = ['csv', 'neptune'] has the wrong type: expected one of 'tensorboard', 'csv', 'mlflow', 'wandb' or a list of"),
        ("comet", "--logging.logger = 'comet' has the wrong type: expected one of 'tensorboard', 'csv', 'mlflow', 'wandb'"),
        ("[]", "--logging.logger = [] must be a logger name or a list of distinct ones, at least one"),
        ("[csv, csv]", "--logging.logger = ['csv', 'csv'] must be a logger name or a list of distinct ones"),
    ],
)  # fmt: skip
def test_bad_logger_names_the_key_and_the_valid_values(value, message):
    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "configs/vae.yaml", ["--logging.logger", value])
    assert message in str(caught.value)


def test_a_missing_extra_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    loggers.check_logger_packages(LoggingConfig(logger=["csv", "wandb"] if real("wandb") else ["csv"]))
    with pytest.raises(
        ConfigError, match=r"logging.logger 'mlflow' needs the mlflow package.*pip install 'vaezoo\[mlflow\]'"
    ):
        loggers.check_logger_packages(LoggingConfig(logger=["csv", "mlflow"]))


def test_a_missing_extra_stops_the_run_before_its_folder_is_made(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    config = load_config(REPO / "configs/vae.yaml", [*ONE_EPOCH, "--logging.logger", "wandb"])
    with pytest.raises(ConfigError, match=r"pip install 'vaezoo\[wandb\]'"):
        train(config, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("on", [True, False])
def test_the_traversal_gif_is_a_logging_switch(on, tmp_path):
    config = load_config(
        REPO / "configs/vae.yaml", ["--logging.logger", "csv", "--logging.traversal_gif", str(on).lower()]
    )
    trainer = build_trainer(config, tmp_path / "run", (0.0, 1.0))
    assert any(isinstance(c, TraversalAnimation) for c in trainer.callbacks) is on


# --------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_csv_and_mlflow_get_metrics_config_pictures_and_resume_continues_the_mlflow_run(
    tmp_path, monkeypatch, isolated_cache
):
    require_package("mlflow", "mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(REPO)
    run = tmp_path / "run"
    train_and_resume(run, "[csv, mlflow]")

    run_id = (run / "mlflow_run_id").read_text().strip()
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    [experiment] = [e for e in client.search_experiments() if e.name == "VanillaVAE"]
    [only] = client.search_runs([experiment.experiment_id])
    assert only.info.run_id == run_id  # the resume logged into the same MLflow run
    assert only.info.status == "FINISHED" and only.info.run_name == "run"
    # metrics of both sessions: steps 0-2, then the resumed 3-5
    steps = sorted({m.step for m in client.get_metric_history(run_id, "train/loss_step")})
    assert steps == [0, 1, 2, 3, 4, 5]
    assert [m.step for m in client.get_metric_history(run_id, "val/loss")] == [2, 5]
    assert only.data.tags[loggers.RESUMED_TAG] == "3"
    # the resolved config: what the data decided, and the override of the resume as a tag
    params = only.data.params
    assert params["model/latent_dim"] == "4" and params["model/in_channels"] == "1"
    assert params["logging/logger"] == "['csv', 'mlflow']"
    assert params["train/max_epochs"] == "1" and only.data.tags["resumed/train/max_epochs"] == "2"
    # the pictures of both epochs, as artifacts
    artifacts = Path(client.download_artifacts(run_id, "images", str(tmp_path / "artifacts")))
    for epoch in (0, 1):
        assert (artifacts / f"reconstructions_epoch{epoch:03d}.png").read_bytes()[:4] == b"\x89PNG"
        assert (artifacts / f"samples_epoch{epoch:03d}.png").is_file()
        assert (artifacts / f"traversals_epoch{epoch:03d}.gif").read_bytes()[:4] == b"GIF8"
    # and the CSV logger beside it
    assert "train/loss_step" in (run / "metrics.csv").read_text().splitlines()[0]

    # a resume whose MLflow run is gone says so, before it rewrites config.yaml
    (run / "mlruns").rename(tmp_path / "elsewhere")
    saved = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError) as caught:
        train(load_config(run / "config.yaml", ["--train.max_epochs", "3"]), resume=run)
    assert f"{run / 'mlflow_run_id'} names MLflow run {run_id}, which the tracking store" in str(caught.value)
    assert f"delete {run / 'mlflow_run_id'} to log the resumed run to a new MLflow run" in str(caught.value)
    assert (run / "config.yaml").read_text() == saved
    assert RUN_DIR_ENV not in os.environ  # the failed start leaves no run folder behind for the next


@pytest.mark.slow
def test_tensorboard_shows_the_traversal_gif_and_wandb_writes_offline_files(
    tmp_path, monkeypatch, isolated_cache
):
    require_package("wandb", "wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train_and_resume(run, "[tensorboard, wandb]")

    events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    gifs = events.Images("traversals")
    # one per validation, at its losses' step: epoch 0's (kept by the resume) and the resumed epoch 1's
    assert [g.step for g in gifs] == [2, 5]
    assert [s.step for s in events.Scalars("val/loss")] == [2, 5]
    assert all(g.encoded_image_string[:4] == b"GIF8" for g in gifs)
    assert (gifs[0].width, gifs[0].height) == __import__("PIL.Image").Image.open(
        run / "images" / "traversals_epoch000.gif"
    ).size
    assert events.Images("reconstructions")[0].encoded_image_string[:4] == b"\x89PNG"

    # W&B: one offline folder per session, both of the one run id the run folder keeps
    run_id = (run / "wandb_run_id").read_text().strip()
    sessions = sorted((run / "wandb").glob("offline-run-*"))
    assert [s.name.rsplit("-", 1)[1] for s in sessions] == [run_id, run_id]
    records = [(s / f"run-{run_id}.wandb").read_bytes() for s in sessions]
    assert all(b"train/loss_step" in r and b"val/loss" in r for r in records)
    assert b"latent_dim" in records[0]  # the config
    assert all(b"reconstructions" in r and b"traversals" in r for r in records)  # the pictures, the GIF
