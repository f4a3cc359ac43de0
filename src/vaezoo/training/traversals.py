"""An animated latent traversal at validation ends: a GIF beside the PNG grids, and to each logger."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from torch import Tensor

from vaezoo.images import save_gif
from vaezoo.training.loggers import log_animation, logging_step

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE
    from vaezoo.training.module import VAEModule


def dimension_order(model: BaseVAE, images: Tensor, codes: Tensor, labels: Tensor) -> list[int]:
    """Latent dimensions by decreasing mean KL over ``images``, or, where the model has no KL per
    dimension matching its flat codes (M,), by decreasing variance of the codes (the most active)."""
    from vaezoo.evaluation.pictures import order_by_kl

    try:
        kl = model.kl_per_dimension(images, labels=labels)  # (B, D)
        if kl.shape[-1] == codes.shape[1]:
            return order_by_kl(kl)
    except NotImplementedError:
        pass
    return torch.argsort(codes.var(dim=0), descending=True, stable=True).tolist()


class TraversalAnimation(L.Callback):
    """At each validation end (at most once an epoch, rank zero only), the traversal of the
    ``dims`` most active latents of ``seeds`` fixed validation images as a GIF: frame t shows each
    latent (a row) of each seed (a column) at the t-th of ``steps`` values between its 5 % and 95 %
    quantiles over the grid's images. Saved as ``images/traversals_epochNNN.gif`` and logged to each
    logger (:func:`vaezoo.training.loggers.log_animation`).

    Small on purpose: ``seeds * dims * steps`` decodes (3 * 4 * 9 = 108 images) and one encode of
    the ``num_images`` grid images. A model whose latents cannot be traversed is warned about once.
    """

    def __init__(
        self,
        out_dir: str | Path,
        num_images: int = 64,
        value_range: tuple[float, float] = (0, 1),
        seeds: int = 3,
        dims: int = 4,
        steps: int = 9,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.num_images = max(num_images, seeds, 2)
        self.value_range = value_range
        self.seeds, self.dims, self.steps = seeds, dims, steps
        self.written_epoch: int | None = None
        self.disabled = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if (
            trainer.sanity_checking
            or not trainer.is_global_zero
            or self.disabled
            or epoch == self.written_epoch
            or getattr(trainer.datamodule, "kind", "images") == "vectors"  # type: ignore[attr-defined]
        ):
            return  # (ImageGrids says once that vector data has no pictures)
        model = cast("VAEModule", pl_module).inference_model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                frames = self.frames(trainer, model, pl_module.device)
        except (NotImplementedError, ValueError) as err:
            warnings.warn(f"no traversal GIF for {type(model).__name__}: {err}", stacklevel=1)
            self.disabled = True
            return
        finally:
            model.train(was_training)
        path = save_gif(frames, self.out_dir / f"traversals_epoch{epoch:03d}.gif")
        log_animation(trainer.loggers, "traversals", frames, path, logging_step(trainer))
        self.written_epoch = epoch

    def frames(self, trainer: L.Trainer, model: BaseVAE, device: torch.device) -> Tensor:
        """The animation's frames (steps, C, H', W') in [0, 1]."""
        from vaezoo.evaluation import pictures  # matplotlib, imported only when a GIF is made

        datamodule: Any = trainer.datamodule  # type: ignore[attr-defined]
        images, labels = datamodule.fixed_batch(self.num_images, split="val")
        images, labels = images.to(device), labels.to(device)
        codes, _ = pictures.embed_flat(model, images, labels)  # (B, M)
        low, high = pictures.latent_ranges(codes)
        order = dimension_order(model, images, codes, labels)
        decoded = pictures.traversals(
            model,
            images[: self.seeds],
            order,
            steps=self.steps,
            max_dims=self.dims,
            low=low,
            high=high,
            labels=labels[: self.seeds],
        )  # (S, R, steps, C, H, W)
        return pictures.frames_of_traversals(decoded, self.value_range)
