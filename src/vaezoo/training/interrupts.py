"""Preemption and Ctrl-C: finish the step, write last.ckpt, exit non-zero saying how to resume.

SIGTERM (a scheduler's preemption, ``kill``), SIGINT (Ctrl-C) and, when Lightning's SLURM
environment is detected, SLURM's warning signal SIGUSR1 only raise a flag. The run stops after the
training step in progress, at the same step in every process (the flag is reduced across ranks),
writes its last checkpoint there and ends with :class:`RunInterrupted`, which the CLI prints with
exit status 128 + the signal's number. A second Ctrl-C stops at once, without a checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException


class RunInterrupted(Exception):
    """A run stopped by a signal after writing its checkpoint; ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def stop_signals() -> list[signal.Signals]:
    """The signals that stop a run cleanly here: SIGINT, SIGTERM, and SIGUSR1 under SLURM."""
    signals = [signal.SIGINT, signal.SIGTERM]
    if SLURMEnvironment.detect():
        signals.append(signal.SIGUSR1)
    return signals


class StopOnSignal(L.Callback):
    """Turn a stop signal into a checkpoint at the next step's end and a :class:`RunInterrupted`.

    Use :meth:`handling_signals` around ``trainer.fit``; Lightning keeps handlers installed before
    it and calls them from its own SIGTERM handler.
    """

    def __init__(self, run_dir: Path) -> None:
        self.checkpoint = run_dir / "checkpoints" / "last.ckpt"
        self.run_dir = run_dir
        self.received: signal.Signals | None = None
        self.batches = 0  # training batches done (Lightning's global_step counts optimizer steps)
        self.saved_at: int | None = None

    @contextmanager
    def handling_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # handlers need the main thread
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in stop_signals()}
        for signum in previous:
            signal.signal(signum, self._on_signal)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.received = signal.Signals(signum)
        if signum == signal.SIGINT:
            print(
                "\nCtrl-C: stopping after this step and writing a checkpoint (Ctrl-C again to stop at once)",
                file=sys.stderr,
            )

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over_sigterm(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over_sigterm(trainer)

    def _take_over_sigterm(self, trainer: L.Trainer) -> None:
        """Replace the SIGTERM handler Lightning installed at the start of fit with this one.

        Lightning's broadcasts a tensor from inside the handler; under DDP that collective meets
        the others' at no fixed point and can hang the run. Here the flag alone is set (and the
        signal passed on to the processes this one launched), and the ranks agree on it at a
        step's end."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            first = self.received is None
            self._on_signal(signum, frame)
            launcher = trainer.strategy.launcher
            if first and launcher is not None:
                launcher.kill(signum)  # the ranks this process started (none on the others)

        signal.signal(signal.SIGTERM, on_sigterm)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.batches = int(getattr(pl_module, "batches_seen", trainer.global_step))
        if self.saved_at is None and trainer.strategy.reduce_boolean_decision(
            self.received is not None, all=False
        ):
            self._save(trainer)  # here, where Lightning's own step-end checkpoints are written

    def stop_if_saved(self, trainer: L.Trainer) -> None:
        """At the next hook after the save (the step's values have reached the loggers by then)."""
        if self.saved_at is not None:
            raise self.interrupted(trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.stop_if_saved(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop_if_saved(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop_if_saved(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop_if_saved(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Lightning's own SIGTERM stop, e.g. during validation, before a step end saw the flag
        if isinstance(exception, SIGTERMException) and self.saved_at is None:
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.checkpoint)
        self.saved_at = trainer.global_step

    def interrupted(self, trainer: L.Trainer) -> RunInterrupted:
        received = self.received or signal.SIGTERM
        return RunInterrupted(
            f"stopped by {received.name} after {self.batches} training batches (epoch {trainer.current_epoch}); "
            f"the run is saved in {self.checkpoint}: continue it with `vaezoo train --resume {self.run_dir}`",
            128 + int(received),
        )
