"""The run's loggers, made safe to resume: what an interrupted run logged is kept (flushed with
every checkpoint), and what it logged after its last checkpoint, which the resumed run trains
again, is dropped where the backend allows it.

``logging.logger`` names one logger or a list of them:

- ``tensorboard``: event files in the run folder; a resume hides the events from the checkpoint's
  step on (SummaryWriter's ``purge_step``).
- ``csv``: ``metrics.csv``; a resume drops its rows from that step on.
- ``mlflow`` (``pip install vaezoo[mlflow]``): a local file store ``RUN/mlruns`` unless
  ``logging.mlflow_tracking_uri`` names another; the run id is kept in ``RUN/mlflow_run_id`` and a
  resume continues that MLflow run. MLflow's metric history is append-only: the steps the resumed
  run trains again get a second value, the later by timestamp (the tag
  ``vaezoo.resumed_at_steps`` lists where that happens).
- ``wandb`` (``pip install vaezoo[wandb]``): offline by default, its files in ``RUN/wandb``; the
  run id is kept in ``RUN/wandb_run_id`` and a resume continues that run id (``resume="allow"``;
  offline, each session is its own ``offline-run-*`` folder, and ``wandb sync --id ID`` of them
  uploads them into the one run in order). W&B's history is append-only too: steps trained again
  appear twice on the ``trainer/global_step`` axis.

Pictures go to each logger in its own way (:func:`log_picture`, :func:`log_animation`).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import secrets
import typing
from argparse import Namespace
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from vaezoo.config import ConfigError, LoggerName
from vaezoo.fileio import atomic_path, atomic_write_text
from vaezoo.images import add_gif

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from vaezoo.config import LoggingConfig

LOGGERS: tuple[str, ...] = typing.get_args(LoggerName)  # tensorboard, csv, mlflow, wandb
MLFLOW_RUN_FILE = "mlflow_run_id"
WANDB_RUN_FILE = "wandb_run_id"
RESUMED_TAG = "vaezoo.resumed_at_steps"


class ResumedExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, which deletes an existing ``metrics.csv``, made to keep its rows
    before ``purge_step`` and append after them."""

    def __init__(self, log_dir: str, purge_step: int | None = None) -> None:
        self.purge_step = purge_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes the previous metrics here
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            keys = list(reader.fieldnames or [])
            rows = [row for row in reader if self._keeps(row)]
        self.metrics_keys = sorted(keys)
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)

    def _keeps(self, row: dict[str, str]) -> bool:
        """A row from before ``purge_step``; one whose step is unreadable (a torn last line) is dropped."""
        try:
            step = int(row.get("step") or "")
        except ValueError:
            return False
        return self.purge_step is None or step < self.purge_step


class ResumedCSVLogger(CSVLogger):
    """A CSV logger that continues the ``metrics.csv`` of a resumed run (see ResumedExperimentWriter)."""

    def __init__(self, *args: Any, purge_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.purge_step = purge_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if not isinstance(self._experiment, ResumedExperimentWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ResumedExperimentWriter(self.log_dir, self.purge_step)
        return self._experiment


class FlushLogsAtCheckpoints(L.Callback):
    """Write the loggers' buffered values to disk after every checkpoint, so a run killed at any
    moment has its logs up to its last checkpoint (the resumed run logs the rest).

    A checkpoint written at a step's end comes before Lightning hands that step's values to the
    loggers, so they are written at the next hook: the next step's start, a validation start,
    the end of an epoch or of training, or an exception.
    """

    def __init__(self) -> None:
        self.pending = False

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.pending = True

    def flush(self, trainer: L.Trainer) -> None:
        if self.pending:
            for logger in trainer.loggers:
                logger.save()
            self.pending = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.flush(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.flush(trainer)


# --------------------------------------------------------------------------- making the loggers


def logger_names(value: str | Sequence[str]) -> list[str]:
    """``logging.logger`` as a list of names (it may be one name)."""
    return [value] if isinstance(value, str) else list(value)


EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}  # logger -> the package its extra installs


def check_logger_packages(log: LoggingConfig) -> None:
    """Raise ConfigError naming the extra to install for a logger whose package is missing."""
    for kind in logger_names(log.logger):
        package = EXTRAS.get(kind)
        if package is not None and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"logging.logger {kind!r} needs the {package} package, which is not installed: "
                f"pip install 'vaezoo[{kind}]'"
            )


def make_loggers(
    log: LoggingConfig, run_dir: Path, experiment: str, resumed_step: int | None = None
) -> list[Logger]:
    """The loggers ``log.logger`` names, writing into ``run_dir``. ``experiment``: the MLflow
    experiment and default W&B project (the run's name); ``resumed_step`` (the batches a resumed
    run's checkpoint had trained) supersedes what the interrupted run logged from that step on."""
    return [make_logger(kind, log, run_dir, experiment, resumed_step) for kind in logger_names(log.logger)]


def make_logger(
    kind: str, log: LoggingConfig, run_dir: Path, experiment: str, resumed_step: int | None = None
) -> Logger:
    """One logger of :func:`make_loggers`."""
    save_dir, version = str(run_dir.parent), run_dir.name
    if kind == "tensorboard":
        # SummaryWriter's purge_step: events at or after it from earlier sessions are hidden
        return TensorBoardLogger(save_dir, name="", version=version, purge_step=resumed_step)
    if kind == "csv":
        return ResumedCSVLogger(save_dir, name="", version=version, purge_step=resumed_step)
    if kind == "mlflow":
        return ResumableMLFlowLogger(run_dir, experiment, log.mlflow_tracking_uri, resumed_step)
    if kind == "wandb":
        return ResumableWandbLogger(run_dir, log.wandb_project or experiment, log.wandb_mode, resumed_step)
    raise ConfigError(f"logging.logger: unknown logger {kind!r}; expected one of {', '.join(LOGGERS)}")


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as ``section/key`` (the flattening Lightning's loggers do)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flat_params(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def saved_run_id(path: Path, resumed: bool) -> str | None:
    """The run id a resumed run's earlier session kept in ``path`` (None: start a new run)."""
    if not resumed or not path.is_file():
        return None
    return path.read_text().strip() or None


class ResumableMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger on a local file store in the run folder (or ``tracking_uri``),
    its run id kept in ``RUN/mlflow_run_id`` so that a resumed run continues the same MLflow run."""

    PARAM_LENGTH = 250  # Lightning's MLFlowLogger cuts parameter values to this many characters

    def __init__(self, run_dir: Path, experiment: str, tracking_uri: str | None, resumed_step: int | None):
        self.id_file = run_dir / MLFLOW_RUN_FILE
        self.resumed_step = resumed_step
        uri = tracking_uri or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3 refuses its file store unless asked; a folder of files is the local store
            # that needs no database or server
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        run_id = saved_run_id(self.id_file, resumed_step is not None)
        super().__init__(
            experiment_name=experiment,
            run_name=run_dir.name,
            tracking_uri=uri,
            tags={"vaezoo.run_dir": str(run_dir.resolve())},
            run_id=run_id,
        )

    @property
    @rank_zero_experiment
    def experiment(self) -> MlflowClient:
        if self._initialized:
            return self._mlflow_client
        resuming = self._run_id is not None
        try:
            client = super().experiment
        except Exception as err:  # MlflowException, or a plain Exception of the file store's
            if not resuming:
                raise
            raise ConfigError(
                f"{self.id_file} names MLflow run {self._run_id}, which the tracking store "
                f"{self._tracking_uri} cannot give ({err}); delete {self.id_file} to log "
                "the resumed run to a new MLflow run"
            ) from None
        if resuming:  # record where the history has a second value per step from here on
            tags = client.get_run(self._run_id).data.tags
            steps = [s for s in tags.get(RESUMED_TAG, "").split(",") if s]
            client.set_tag(self._run_id, RESUMED_TAG, ",".join([*steps, str(self.resumed_step)]))
        else:
            atomic_write_text(self.id_file, f"{self.run_id}\n")
        return client

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        """The parameters, as Lightning logs them; a resumed run's are logged where new, and those
        that changed (an override on resume: MLflow's parameters cannot change) as tags
        ``resumed/<key>``."""
        flat = flat_params(vars(params) if isinstance(params, Namespace) else dict(params))
        if self.resumed_step is not None and self.run_id is not None:
            logged = self.experiment.get_run(self.run_id).data.params
            for key, value in flat.items():
                if key in logged and logged[key] != str(value)[: self.PARAM_LENGTH]:
                    self.experiment.set_tag(self.run_id, f"resumed/{key}", str(value))
            flat = {key: value for key, value in flat.items() if key not in logged}
        super().log_hyperparams(flat)


class ResumableWandbLogger(WandbLogger):
    """Lightning's W&B logger, offline by default with its files in ``RUN/wandb``, its run id kept
    in ``RUN/wandb_run_id`` so that a resumed run continues the same W&B run."""

    def __init__(self, run_dir: Path, project: str, mode: str, resumed_step: int | None) -> None:
        self.id_file = run_dir / WANDB_RUN_FILE
        self.status = "success"
        run_id = saved_run_id(self.id_file, resumed_step is not None)
        # Lightning passes resume="allow": the run of ``id`` is continued if it exists
        super().__init__(name=run_dir.name, save_dir=str(run_dir), id=run_id, project=project, mode=mode)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None and self._wandb_init.get("id") is None:
            run_id = secrets.token_hex(4)  # W&B run ids: letters and digits, unique in a project
            atomic_write_text(self.id_file, f"{run_id}\n")
            self._wandb_init["id"] = self._id = run_id
        return super().experiment

    def finalize(self, status: str) -> None:
        self.status = status
        super().finalize(status)

    def finish(self) -> None:
        """End the W&B run (Lightning leaves it open for the process's exit, where a second
        training in the same process would find it and log into it)."""
        if self._experiment is not None:
            self._experiment.finish(exit_code=0 if self.status == "success" else 1)
            self._experiment = None


def finish_loggers(loggers: Iterable[Logger]) -> None:
    """Close what a logger leaves open when training ends (the W&B run)."""
    for logger in loggers:
        if isinstance(logger, ResumableWandbLogger):
            logger.finish()


# --------------------------------------------------------------------------- pictures, per logger


def logging_step(trainer: L.Trainer) -> int:
    """The step Lightning logs metrics at now: its count of batches that stepped (in a validation
    at an epoch's end, one behind ``trainer.global_step``, which also counts an auxiliary
    optimizer's steps). Pictures at this step line up with the validation losses, and those of a
    validation before a checkpoint lie before the step a resume of it purges from."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def log_picture(loggers: Iterable[Logger], name: str, image: Tensor, path: Path, step: int) -> None:
    """``image`` (C, H, W) in [0, 1], already saved as the PNG ``path``, to each logger in its own
    way: TensorBoard an image summary, MLflow an artifact under ``images/``, W&B a ``wandb.Image``.
    (The CSV logger takes no pictures: they are the run's ``images/`` files.) Rank zero only."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(name, image, global_step=step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="images")
        elif isinstance(logger, WandbLogger):
            logger.log_image(name, [str(path)], step=step)


def log_animation(loggers: Iterable[Logger], name: str, frames: Tensor, path: Path, step: int) -> None:
    """Frames (T, C, H, W), already saved as the GIF ``path``, to each logger: TensorBoard an image
    summary holding the GIF, which it plays (:func:`vaezoo.images.add_gif`), MLflow an artifact
    under ``images/``, W&B a ``wandb.Video`` of the file."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            add_gif(logger.experiment, name, path, frames, step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="images")
        elif isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log({name: wandb.Video(str(path), format="gif"), "trainer/global_step": step})
