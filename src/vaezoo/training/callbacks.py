"""Callbacks: reconstruction and sample grids at the end of every validation epoch."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch

from vaezoo.images import interleave_rows, make_grid, save_image

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE
    from vaezoo.training.module import VAEModule


class ImageGrids(L.Callback):
    """Save a reconstruction grid and a sample grid as PNG and to TensorBoard, on rank zero only.

    The same validation images and the same prior draws (a fixed seed, outside the training RNG)
    are used every epoch, so the grids show progress rather than noise. Reconstruction grids
    alternate a row of inputs with the row of their reconstructions.
    """

    def __init__(self, out_dir: str | Path, num_images: int = 64, value_range: tuple[float, float] = (0, 1)):
        self.out_dir = Path(out_dir)
        self.nrow = max(1, int(num_images**0.5))
        self.num_images = max(self.nrow, num_images - num_images % self.nrow)
        self.value_range = value_range
        self._sample_warned = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        model = cast("VAEModule", pl_module).model  # the callback of VAEModule's runs
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                self._write(trainer, model, pl_module.device)
        finally:
            model.train(was_training)

    def _write(self, trainer: L.Trainer, model: BaseVAE, device: torch.device) -> None:
        epoch, step = trainer.current_epoch, trainer.global_step
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
                warnings.warn(f"no sample grid: {err}", stacklevel=1)
                self._sample_warned = True
        for name, batch in grids.items():
            grid = make_grid(batch, nrow=self.nrow, value_range=self.value_range)  # (C, H', W') in [0, 1]
            save_image(grid, self.out_dir / f"{name}_epoch{epoch:03d}.png", padding=0)
            for logger in trainer.loggers:
                experiment: Any = getattr(logger, "experiment", None)
                if hasattr(experiment, "add_image"):
                    experiment.add_image(name, grid, global_step=step)


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
