"""The run's loggers, made safe to resume: what an interrupted run logged is kept (flushed with
every checkpoint), and what it logged after its last checkpoint, which the resumed run trains
again, is dropped."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from vaezoo.fileio import atomic_path


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


def make_logger(kind: str, run_dir: Path, resumed_step: int | None = None) -> Logger:
    """The TensorBoard or CSV logger of ``run_dir``; ``resumed_step`` (the batches a resumed run's
    checkpoint had trained) hides what the interrupted run logged from that step on."""
    save_dir, version = str(run_dir.parent), run_dir.name
    if kind == "tensorboard":
        # SummaryWriter's purge_step: events at or after it from earlier sessions are hidden
        return TensorBoardLogger(save_dir, name="", version=version, purge_step=resumed_step)
    return ResumedCSVLogger(save_dir, name="", version=version, purge_step=resumed_step)


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
