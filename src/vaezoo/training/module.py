"""VAEModule: one LightningModule that trains every registered model through its ``loss_function``."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from vaezoo import __version__
from vaezoo.config import TrainConfig


class VAEModule(L.LightningModule):
    """Wraps a plain model; the model knows nothing of Lightning.

    ``train.kl_weight`` is passed as ``M_N`` in training *and* validation, so both curves are on one
    scale (PyTorch-VAE validated with 1.0). Every key of the loss dict is logged as
    ``train/<key>`` and ``val/<key>``; ``val/loss`` picks the best checkpoint.
    """

    def __init__(self, model: nn.Module, train: TrainConfig, run_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.train_config = train
        self.memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.run_config = run_config or {}

    def forward(self, x: Tensor, **kwargs: Any) -> Any:
        return self.model(x, **kwargs)

    def _step(self, batch: tuple[Tensor, Tensor], batch_idx: int, stage: str) -> Tensor:
        images, labels = batch
        images = images.contiguous(memory_format=self.memory_format)
        output = self.model(images, labels=labels)
        losses = self.model.loss_function(
            *output,
            M_N=self.train_config.kl_weight,
            batch_idx=batch_idx,
            global_step=self.global_step,
            labels=labels,
        )
        on_step = stage == "train"
        for key, value in losses.items():
            self.log(
                f"{stage}/{key}",
                value.detach(),
                prog_bar=key == "loss",
                on_step=on_step,
                on_epoch=True,
                batch_size=images.shape[0],
                sync_dist=not on_step,  # epoch means of validation are averaged over processes
            )
        return losses["loss"]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, batch_idx, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, batch_idx, "test")

    def configure_optimizers(self) -> Any:
        cfg = self.train_config
        optimizer_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
        optimizer = optimizer_cls(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.scheduler == "none":
            return optimizer
        if cfg.scheduler == "exponential":
            scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.scheduler_gamma)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        # cosine: over the whole run, stepped per optimisation step
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain data only, so `torch.load(weights_only=True)` can read it back without running code.
        checkpoint["vaezoo"] = {
            "version": __version__,
            "config": self.run_config,
            "model_name": type(self.model).__name__,
            "model_config": dict(getattr(self.model, "config", {})),
        }
