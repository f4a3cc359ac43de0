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

    Models see ``global_step`` = the number of training batches so far (kept in this module's
    state, so it survives ``--resume``; Lightning's own ``global_step`` counts every optimizer's
    steps). Schedules (capacity, temperature) are functions of it. A model whose
    ``auxiliary_parameters()`` is not empty (FactorVAE's discriminator) is trained by manual
    optimisation: the main optimizer on ``loss_function``, then a second one on ``auxiliary_loss``.
    """

    def __init__(
        self, model: nn.Module, train: TrainConfig, run_config: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.train_config = train
        self.run_config = run_config or {}
        self.memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.auxiliary_parameters = list(model.auxiliary_parameters())
        self.automatic_optimization = not self.auxiliary_parameters
        self.register_buffer("train_batches", torch.zeros((), dtype=torch.long))
        self.validated_at: int | None = None  # train_batches at the last validation pass

    def forward(self, x: Tensor, **kwargs: Any) -> Any:
        return self.model(x, **kwargs)

    # -- steps -------------------------------------------------------------------------------------
    def _losses(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> tuple[Any, dict[str, Tensor], dict]:
        images, labels = batch
        images = images.contiguous(memory_format=self.memory_format)
        context = {"labels": labels, "global_step": int(self.train_batches), "batch_idx": batch_idx}
        output = self.model(images, **context)
        losses = self.model.loss_function(*output, M_N=self.train_config.kl_weight, **context)
        return output, losses, context

    def _log(self, losses: dict[str, Tensor], stage: str, batch_size: int, prefix: str = "") -> None:
        on_step = stage == "train"
        for key, value in losses.items():
            self.log(
                f"{stage}/{prefix}{key}",
                value.detach(),
                prog_bar=key == "loss" and not prefix,
                on_step=on_step,
                on_epoch=True,
                batch_size=batch_size,
                sync_dist=not on_step,  # epoch means of validation are averaged over processes
            )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        output, losses, context = self._losses(batch, batch_idx)
        self.train_batches += 1
        self._log(losses, "train", batch[0].shape[0])
        if self.automatic_optimization:
            return losses["loss"]
        main, auxiliary = self.optimizers()
        self._manual_update(main, losses["loss"])
        aux_losses = self.model.auxiliary_loss(output, **context)
        self._manual_update(auxiliary, aux_losses["loss"])
        self._log(aux_losses, "train", batch[0].shape[0], prefix="aux_")
        self._step_schedulers("step")
        return None

    def _manual_update(self, optimizer: Any, loss: Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.train_config.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.train_config.gradient_clip_val)
        optimizer.step()

    def on_train_epoch_end(self) -> None:
        if not self.automatic_optimization:
            self._step_schedulers("epoch")

    def _step_schedulers(self, interval: str) -> None:
        if self.train_config.scheduler == "none" or self._scheduler_interval() != interval:
            return
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        output, losses, context = self._losses(batch, batch_idx)
        self._log(losses, "val", batch[0].shape[0])
        if not self.automatic_optimization:
            self._log(self.model.auxiliary_loss(output, **context), "val", batch[0].shape[0], prefix="aux_")
        return losses["loss"]

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validated_at = int(self.train_batches)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        _, losses, _ = self._losses(batch, batch_idx)
        self._log(losses, "test", batch[0].shape[0])
        return losses["loss"]

    # -- optimisers --------------------------------------------------------------------------------
    def _scheduler_interval(self) -> str:
        return "epoch" if self.train_config.scheduler == "exponential" else "step"

    def _make_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        cfg = self.train_config
        if cfg.scheduler == "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.scheduler_gamma)
        total = int(self.trainer.estimated_stepping_batches)  # cosine: over the whole run
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))

    def configure_optimizers(self) -> Any:
        cfg = self.train_config
        optimizer_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
        auxiliary = {id(p) for p in self.auxiliary_parameters}
        main_params = [p for p in self.model.parameters() if id(p) not in auxiliary]
        optimizers = [optimizer_cls(main_params, lr=cfg.lr, weight_decay=cfg.weight_decay)]
        if self.auxiliary_parameters:
            options = {"lr": self.model.auxiliary_lr or cfg.lr, "weight_decay": cfg.weight_decay}
            options.update(self.model.auxiliary_optimizer_kwargs())
            optimizers.append(optimizer_cls(self.auxiliary_parameters, **options))
        if cfg.scheduler == "none":
            return optimizers
        schedulers = [
            {"scheduler": self._make_scheduler(opt), "interval": self._scheduler_interval()}
            for opt in optimizers
        ]
        return optimizers, schedulers

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain data only, so `torch.load(weights_only=True)` can read it back without running code.
        checkpoint["vaezoo"] = {
            "version": __version__,
            "config": self.run_config,
            "model_name": type(self.model).__name__,
            "model_config": dict(getattr(self.model, "config", {})),
        }
