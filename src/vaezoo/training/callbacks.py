"""Callbacks: image grids at validation ends, validation at a max_steps stop, random state for resume."""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from vaezoo.images import interleave_rows, make_grid, save_image
from vaezoo.training.loggers import log_picture, logging_step

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE
    from vaezoo.training.module import VAEModule


class ImageGrids(L.Callback):
    """Save a reconstruction grid and a sample grid as PNG and to each logger, on rank zero only.

    The same validation images and the same prior draws (a fixed seed, outside the training RNG)
    are used every epoch, so the grids show progress rather than noise. Reconstruction grids
    alternate a row of inputs with the row of their reconstructions. Vector data (``data.name:
    vectors``) has no pictures: nothing is drawn (said once, at the first validation end).
    """

    def __init__(self, out_dir: str | Path, num_images: int = 64, value_range: tuple[float, float] = (0, 1)):
        self.out_dir = Path(out_dir)
        self.nrow = max(1, int(num_images**0.5))
        self.num_images = max(self.nrow, num_images - num_images % self.nrow)
        self.value_range = value_range
        self._sample_warned = False
        self._vectors_noted = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if getattr(trainer.datamodule, "kind", "images") == "vectors":  # type: ignore[attr-defined]
            if not self._vectors_noted:
                rank_zero_info("image grids and traversal GIFs: none for vector data (data.name: vectors)")
                self._vectors_noted = True
            return
        model = cast("VAEModule", pl_module).inference_model  # the callback of VAEModule's runs
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                self._write(trainer, model, pl_module.device)
        finally:
            model.train(was_training)

    def _write(self, trainer: L.Trainer, model: BaseVAE, device: torch.device) -> None:
        epoch, step = trainer.current_epoch, logging_step(trainer)
        # Trainer sets ``datamodule`` in fit/validate; its class does not declare the attribute.
        datamodule: Any = trainer.datamodule  # type: ignore[attr-defined]
        images, labels = datamodule.fixed_batch(self.num_images, split="val")
        images, labels = images.to(device), labels.to(device)
        recons = model.generate(images, labels=labels)
        grids = {"reconstructions": interleave_rows(images, recons, self.nrow)}
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(0)
                grids["samples"] = model.sample(images.shape[0], device, labels=labels)
        except NotImplementedError as err:
            if not self._sample_warned:
                # a model that declares it has no prior (AE, RAE, VQ-VAE) is told, not warned about
                note = warnings.warn if model.samples_from_prior else rank_zero_info
                note(f"no sample grid: {err}")
                self._sample_warned = True
        for name, batch in grids.items():
            grid = make_grid(batch, nrow=self.nrow, value_range=self.value_range)  # (C, H', W') in [0, 1]
            path = save_image(grid, self.out_dir / f"{name}_epoch{epoch:03d}.png", padding=0)
            log_picture(trainer.loggers, name, grid, path, step)


class ValidateAtMaxSteps(L.Callback):
    """Validate the last batch of a run that ``max_steps`` ends inside an epoch, within ``fit``.

    Lightning stops at ``max_steps`` without a validation pass, so such a run had no final losses,
    grids or best checkpoint. Asking it to stop once the last step is done makes its epoch loop
    validate that batch as it does for an early stop: in the epoch the batch belongs to, with the
    checkpoint callbacks watching.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class RandomState(L.Callback):
    """Keep the random number generators in the checkpoint, so a resumed run draws what the
    uninterrupted run would have drawn (reparameterisation noise, random flips).

    The states are saved with every checkpoint (as tensors and plain data) and put back when
    training starts again, after Lightning's sanity validation and before the first batch is
    loaded. Validation draws from the generators too (the model's noise, the grids), so each
    validation pass gets them back as they were: training draws the same numbers however often
    it is validated, and a checkpoint written at a validation end holds the training stream.
    Data loader worker processes keep their own generators: with ``data.num_workers > 0`` the
    augmentation of a resumed run is random but not the uninterrupted run's.
    """

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None  # loaded from a checkpoint, to set at train start
        self.before_validation: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        if self.before_validation is not None:  # a checkpoint written during validation
            return self.before_validation
        return self.current()

    @staticmethod
    def current() -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pending is not None:
            self.restore(self.pending)
            self.pending = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.before_validation = self.current()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # before the checkpoint callbacks' on_validation_end (Lightning runs those last)
        if self.before_validation is not None:
            self.restore(self.before_validation)
            self.before_validation = None

    @staticmethod
    def restore(state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        numpy_state = state["numpy"]
        keys = numpy_state["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, *numpy_state["rest"]))
        random.setstate(_as_tuples(state["python"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> dict[str, Any]:
    """numpy's global generator state as a tensor and plain numbers (``weights_only`` reads them)."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "rest": [int(position), int(has_gauss), float(cached_gaussian)],
    }


def _as_tuples(value: Any) -> Any:
    """Python's random state with the tuples a checkpoint's round trip may have made lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``, for ``--resume``. Where it is written at epoch ends (runs that do not validate
    every epoch), an epoch that ``max_steps`` or a stop request (``train.max_time``'s timer, which
    Lightning runs before the checkpoint callbacks) cuts short is saved at its last batch instead:
    saved at the epoch's end it would be recorded as a whole epoch, and a resume would skip the rest
    of it."""

    def __init__(
        self, dirpath: Path, save_on_train_epoch_end: bool, every_n_train_steps: int | None = None
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            save_top_k=1,
            enable_version_counter=False,
            save_on_train_epoch_end=save_on_train_epoch_end,
            every_n_train_steps=every_n_train_steps,
        )
        self.cut_short = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        batch_idx = args[-1]
        stops_here = trainer.should_stop or (
            trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        )
        if self._save_on_train_epoch_end and stops_here and batch_idx + 1 < trainer.num_training_batches:
            self.cut_short = True
            trainer.save_checkpoint(Path(self.dirpath or ".") / "last.ckpt")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.cut_short:
            super().on_train_epoch_end(trainer, pl_module)


class TrainingClock(L.Callback):
    """The wall-clock seconds a run has spent training, over all its sessions: kept in every
    checkpoint, so a resumed run goes on counting, and written to summary.json and exported cards."""

    def __init__(self) -> None:
        self.seconds_before = 0.0  # of the sessions before this one, and of this one's finished fits
        self._started: float | None = None

    @property
    def seconds(self) -> float:
        running = time.monotonic() - self._started if self._started is not None else 0.0
        return self.seconds_before + running

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds_before, self._started = self.seconds, None

    def state_dict(self) -> dict[str, Any]:
        return {"train_seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seconds_before = float(state_dict.get("train_seconds", 0.0))
