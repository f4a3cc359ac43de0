"""VAEModule: one LightningModule that trains every registered model through its ``loss_function``."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from vaezoo import __version__
from vaezoo.config import TrainConfig
from vaezoo.losses.schedules import kl_schedule
from vaezoo.nn.distributions import Posterior
from vaezoo.training.performance import fused_optimizer_supported, memory_format

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

LOW_PRECISION = (torch.bfloat16, torch.float16)


class TrainingFailed(ArithmeticError):
    """Training cannot go on; the message says why and what to change, and the run's last
    checkpoint (written before) is its last good state."""


class NonFiniteLoss(TrainingFailed):
    """Training met a NaN or Inf loss or gradient under ``train.nonfinite: stop``; the message names
    the step and the terms."""


class UpdatesAllSkipped(TrainingFailed):
    """The last ``STALLED_AFTER_SKIPS`` updates were all left out (``train.skip_grad_norm`` or
    ``train.nonfinite: skip``): the run no longer trains, so it stops instead of running on."""


STALLED_AFTER_SKIPS = 100  # consecutive skipped updates that end a run: VDVAE skips a few in a row


def to_float32(output: Any) -> Any:
    """A forward output (NamedTuple, tuple, list, distribution or tensor) with its bf16 / fp16
    tensors cast to fp32; every other value passes through unchanged (no copy)."""
    if isinstance(output, Tensor):
        return output.float() if output.dtype in LOW_PRECISION else output
    if isinstance(output, tuple):
        items = [to_float32(item) for item in output]
        return type(output)(*items) if hasattr(output, "_fields") else type(output)(items)  # NamedTuple
    if isinstance(output, list):
        return [to_float32(item) for item in output]
    if isinstance(output, Posterior):  # a distribution in the output (e.g. LVAE's rungs)
        return output.map(to_float32)
    return output


class VAEModule(L.LightningModule):
    """Wraps a plain model; the model knows nothing of Lightning.

    ``train.kl_weight`` is passed as ``M_N`` in training *and* validation, so both curves are on one
    scale (PyTorch-VAE validated with 1.0). Every key of the loss dict is logged as
    ``train/<key>`` and ``val/<key>``; ``val/loss`` picks the best checkpoint.

    Models see ``global_step`` = the number of training batches so far (kept in this module's
    state, so it survives ``--resume``; Lightning's own ``global_step`` counts every optimizer's
    steps). Schedules (capacity, temperature) are functions of it. The count is a Python int
    mirrored into a buffer, so no step waits on the device to read it.

    A model whose ``auxiliary_parameters()`` is not empty (FactorVAE's discriminator) is trained
    by manual optimisation: the main optimizer on ``loss_function``, then a second one on
    ``auxiliary_loss``.

    Under mixed precision the forward pass runs in bf16/fp16, but its floating-point outputs are
    cast to fp32 before ``loss_function``: likelihood sums, KL terms, log-sum-exps, MMD and
    total-correlation estimates are computed in fp32, and SSIM, covariances, projections and
    codebook distances are pinned to fp32 by :func:`vaezoo.nn.precision.full_precision` (networks
    the loss runs, such as DFC-VAE's VGG or FactorVAE's discriminator, still run in low precision).
    ``train.compile`` runs the forward pass through ``torch.compile``; a model that fails to
    compile falls back to eager with a warning.
    """

    model: BaseVAE
    train_batches: Tensor  # long scalar buffer: training batches so far (see ``batches_seen``)

    def __init__(
        self,
        model: BaseVAE,
        train: TrainConfig,
        run_config: dict[str, Any] | None = None,
        pairs: bool = False,
    ) -> None:
        """``pairs``: the batches hold pairs (data.pairs_k), rows i and B+i; the model gets ``pairs=True``."""
        super().__init__()
        self.pairs = pairs
        self.model = model
        self.train_config = train
        self.run_config = run_config or {}
        self.memory_format = memory_format(train.channels_last, model)
        self.model.to(memory_format=self.memory_format)  # type: ignore[call-overload]  # torch's stubs omit it
        self.auxiliary_parameters = list(model.auxiliary_parameters())
        self.automatic_optimization = not self.auxiliary_parameters
        # The weights' exponential moving average (train.ema_decay), buffers (BatchNorm's) included;
        # a copy outside the optimizer that DDP leaves alone (no gradients)
        self.ema: AveragedModel | None = None
        if train.ema_decay is not None:
            self.ema = AveragedModel(
                model, multi_avg_fn=get_ema_multi_avg_fn(train.ema_decay), use_buffers=True
            )
            self.ema.requires_grad_(False)
        self.register_buffer("train_batches", torch.zeros((), dtype=torch.long))
        self.batches_seen = 0  # the host's copy of train_batches, read every step without a sync
        self.validated_at: int | None = None  # batches_seen at the last validation pass
        self.resumed = False  # loaded from a checkpoint, until the first batch after it
        # updates left out: non-finite (train.nonfinite: skip) or above train.skip_grad_norm
        self.skipped_updates = 0
        self.skips_in_a_row = 0  # since the last update that was kept
        self.dropping_update = False  # the current step's loss was not finite: drop its gradients
        self.buffers_before: list[Tensor] = []  # train.nonfinite: skip -- the buffers before this step
        self.compiled: Any = None  # the compiled forward (train.compile), set on first use
        self.compile_seconds: float | None = None  # how long the first compiled step took

    def forward(self, x: Tensor, **kwargs: Any) -> Any:
        return self.model(x, **kwargs)

    # -- steps -------------------------------------------------------------------------------------
    @property
    def inference_model(self) -> BaseVAE:
        """The weights to validate, draw grids from and load for inference: their moving average
        under ``train.ema_decay``, else the trained weights themselves."""
        return cast("BaseVAE", self.ema.module) if self.ema is not None else self.model

    def _losses(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, model: BaseVAE | None = None
    ) -> tuple[Any, dict[str, Tensor], dict]:
        images, labels = batch
        if images.dim() == 4:  # NHWC is a layout of image batches; vectors (B, D) stay as they are
            images = images.contiguous(memory_format=self.memory_format)
        context = {"labels": labels, "global_step": self.batches_seen, "batch_idx": batch_idx}
        if self.pairs:
            context["pairs"] = True
        if model is None or model is self.model:
            output = to_float32(self._forward(images, context))
        else:
            output = to_float32(model(images, **context))
        losses = (model or self.model).loss_function(*output, M_N=self.kl_weight(), **context)
        return output, losses, context

    def kl_weight(self) -> float:
        """``train.kl_weight`` times ``train.kl_schedule``'s factor at the batches trained so far
        (validation uses the current training value)."""
        cfg = self.train_config
        return cfg.kl_weight * kl_schedule(
            cfg.kl_schedule, self.batches_seen, cfg.kl_schedule_steps, cfg.kl_cycle_ramp
        )

    def _forward(self, images: Tensor, context: dict[str, Any]) -> Any:
        if not self.train_config.compile or self.compiled is False:
            return self.model(images, **context)
        if self.compiled is None:
            return self._compile_and_run(images, context)
        return self.compiled(images, **context)

    def _compile_and_run(self, images: Tensor, context: dict[str, Any]) -> Any:
        """Compile the forward pass on its first call; on failure warn once and stay eager."""
        start = time.perf_counter()
        try:
            compiled = torch.compile(self.model.forward)
            output = compiled(images, **context)
        except Exception as err:  # noqa: BLE001 - any compiler failure means: train eagerly
            warnings.warn(
                f"train.compile: {type(self.model).__name__} did not compile ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); training without torch.compile",
                stacklevel=2,
            )
            self.compiled = False
            return self.model(images, **context)
        self.compiled = compiled
        self.compile_seconds = time.perf_counter() - start
        rank_zero_info(f"train.compile: first forward pass compiled in {self.compile_seconds:.1f} s")
        return output

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
        if (
            self.train_config.nonfinite == "skip"
        ):  # the forward pass updates buffers (BatchNorm, EMA codebooks)
            self.buffers_before = [b.detach().clone() for b in self.model.buffers() if b.is_floating_point()]
        kl_weight = self.kl_weight()  # the weight this batch's loss uses
        output, losses, context = self._losses(batch, batch_idx)
        self.batches_seen += 1
        self.train_batches += 1
        if self._finite(losses, "loss"):  # else (train.nonfinite: skip) its update is dropped
            self._log(losses, "train", batch[0].shape[0])
        if self.train_config.kl_schedule != "constant":
            self.log("train/kl_weight", kl_weight, on_step=True, on_epoch=False)
        if self.automatic_optimization:
            return losses["loss"]
        optimizers = self.optimizers()
        assert isinstance(optimizers, list)  # manual optimisation: configure_optimizers returned two
        main, auxiliary = optimizers
        self._manual_update(main, losses["loss"])
        aux_losses = self.model.auxiliary_loss(output, **context)
        if self._finite(aux_losses, "auxiliary loss"):
            self._log(aux_losses, "train", batch[0].shape[0], prefix="aux_")
        self._manual_update(auxiliary, aux_losses["loss"])
        self._step_schedulers("step")
        return None

    @contextlib.contextmanager
    def _warmed_up_lr(self, optimizer: Any, batch: int) -> Iterator[None]:
        """Scale ``optimizer``'s learning rates for the step of training batch ``batch`` (1, 2, ...)
        by ``train.lr_warmup_steps``' factor min(1, batch / steps), put back afterwards, so the
        scheduler's own (chained) rates never see it; a function of the batch count, so a resumed
        run warms up exactly as before."""
        steps = self.train_config.lr_warmup_steps
        factor = min(1.0, batch / steps) if steps > 0 else 1.0
        if factor >= 1.0:
            yield
            return
        groups = optimizer.param_groups
        rates = [group["lr"] for group in groups]
        for group, rate in zip(groups, rates):
            group["lr"] = rate * factor
        try:
            yield
        finally:
            for group, rate in zip(groups, rates):
                group["lr"] = rate

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:  # automatic optimisation's step
        # the closure runs training_step, which counts the batch: it is batch batches_seen + 1
        with self._warmed_up_lr(optimizer, self.batches_seen + 1):
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    def _manual_update(self, optimizer: Any, loss: Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        if not self._gradients_usable(optimizer):
            return
        if self.train_config.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.train_config.gradient_clip_val)
        with self._warmed_up_lr(optimizer, self.batches_seen):  # training_step has counted the batch
            optimizer.step()

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # automatic optimisation: after backward, before clipping; no gradients means no update
        self._gradients_usable(optimizer)

    # -- non-finite values (train.nonfinite, train.skip_grad_norm) -----------------------------------
    def _finite(self, losses: dict[str, Tensor], what: str) -> bool:
        """Whether ``losses['loss']`` is finite (one read from the device). If not, stop naming the
        terms (``nonfinite: stop``), or count a skip and mark the update to be dropped (``skip``).

        A skipped update still runs its backward pass, and its gradients are dropped before the
        optimizer step: under DDP a process that left its backward out would keep the others
        waiting in the gradient all-reduce (the non-finite gradients it sends make every process
        drop the same step)."""
        if bool(torch.isfinite(losses["loss"].detach()).all()):
            return True
        bad = {
            key: float(value.detach().float().mean())
            for key, value in losses.items()
            if not bool(torch.isfinite(value).all())
        }
        terms = ", ".join(f"{key} = {value}" for key, value in bad.items())
        self._skip_or_stop(f"the {what} went non-finite ({terms})")
        self.dropping_update = True
        return False

    def _gradients_usable(self, optimizer: Any) -> bool:
        """Check the gradients of ``optimizer``'s parameters before its step: a non-finite norm, or
        one above ``train.skip_grad_norm``, drops them (the step then changes nothing) and counts a skip."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.dropping_update:  # its loss was not finite, and the skip is counted
            self.dropping_update = False
            self._drop_update(optimizer)
            return False
        if not grads:
            return True
        norm = float(torch.nn.utils.get_total_norm(grads))
        limit = self.train_config.skip_grad_norm
        if math.isfinite(norm) and (limit is None or norm <= limit):
            self.skips_in_a_row = 0
            return True
        if not math.isfinite(norm) and getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return True  # fp16's gradient scaler skips overflowing steps itself, and lowers its scale
        if not math.isfinite(norm):
            self._skip_or_stop(f"the gradient went non-finite (norm = {norm}) although the loss was finite")
        else:  # above the limit: always skipped, as VDVAE does
            self._count_skip(f"gradient norm {norm:.4g} > train.skip_grad_norm = {limit:g}")
        self._drop_update(optimizer)
        return False

    def _drop_update(self, optimizer: Any) -> None:
        """Leave this step's update out: no gradients (the step changes no parameter), and the
        buffers its forward pass changed as they were before it (BatchNorm statistics and EMA
        codebooks would otherwise keep the NaN of a bad batch)."""
        optimizer.zero_grad(set_to_none=True)
        if self.buffers_before:
            floating = [b for b in self.model.buffers() if b.is_floating_point()]
            with torch.no_grad():
                for buffer, before in zip(floating, self.buffers_before, strict=True):
                    buffer.copy_(before)

    def _skip_or_stop(self, what: str) -> None:
        if self.train_config.nonfinite == "skip":
            self._count_skip(f"{what} (train.nonfinite: skip)")
            return
        raise NonFiniteLoss(
            f"training batch {self.batches_seen} (epoch {self.current_epoch}): {what}. The run stops here "
            "(train.nonfinite: stop); its last checkpoint holds the state before. Lower train.lr, set "
            "train.gradient_clip_val, or set train.nonfinite: skip to leave such updates out."
        )

    def _count_skip(self, why: str) -> None:
        self.skipped_updates += 1
        self.skips_in_a_row += 1
        self.log("train/skipped_updates", float(self.skipped_updates), on_step=True, on_epoch=False)
        if self.skips_in_a_row >= STALLED_AFTER_SKIPS:
            raise UpdatesAllSkipped(
                f"training batch {self.batches_seen} (epoch {self.current_epoch}): the last "
                f"{self.skips_in_a_row} updates were all skipped, the last for {why}; the model no "
                "longer trains, so the run stops here. Lower train.lr, raise train.skip_grad_norm, or "
                "choose a likelihood that suits the data (e.g. bernoulli for binary images)."
            )

    def on_train_epoch_end(self) -> None:
        self.log("train/skipped_updates", float(self.skipped_updates), on_step=False, on_epoch=True)
        # unreadable image files left out under data.bad_files: skip (each process counts its own)
        skipped_files = getattr(getattr(self.trainer, "datamodule", None), "skipped_files", None)
        if skipped_files is not None:
            self.log(
                "data/skipped_files", float(skipped_files), on_epoch=True, reduce_fx="max", sync_dist=True
            )
        if not self.automatic_optimization:
            self._step_schedulers("epoch")

    def _step_schedulers(self, interval: str) -> None:
        if self.train_config.scheduler == "none" or self._scheduler_interval() != interval:
            return
        schedulers = self.lr_schedulers()
        assert schedulers is not None  # scheduler != "none": configure_optimizers returned schedulers
        every = schedulers if isinstance(schedulers, list) else [schedulers]
        # ExponentialLR or CosineAnnealingLR (_make_scheduler), never ReduceLROnPlateau (its step takes a metric)
        for scheduler in cast(list[LRScheduler], every):
            scheduler.step()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        model = self.inference_model
        output, losses, context = self._losses(batch, batch_idx, model)
        self._log(losses, "val", batch[0].shape[0])
        if not self.automatic_optimization:
            self._log(model.auxiliary_loss(output, **context), "val", batch[0].shape[0], prefix="aux_")
        return losses["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:  # after the optimizer steps of this batch
            self.ema.update_parameters(self.model)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validated_at = self.batches_seen

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        _, losses, _ = self._losses(batch, batch_idx, self.inference_model)
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
        optimizers = [optimizer_cls(main_params, **self._optimizer_options(main_params))]
        if self.auxiliary_parameters:
            options = self._optimizer_options(self.auxiliary_parameters, self.model.auxiliary_lr)
            options.update(self.model.auxiliary_optimizer_kwargs())
            optimizers.append(optimizer_cls(self.auxiliary_parameters, **options))
        if cfg.scheduler == "none":
            return optimizers
        schedulers = [
            {"scheduler": self._make_scheduler(opt), "interval": self._scheduler_interval()}
            for opt in optimizers
        ]
        return optimizers, schedulers

    def _optimizer_options(self, params: list[nn.Parameter], lr: float | None = None) -> dict[str, Any]:
        """lr and weight decay; the fused (single-kernel) Adam/AdamW where the parameters allow it.

        Not fused when gradients are clipped under mixed precision: a fused step unscales the
        gradients itself, so Lightning's mixed-precision plugin refuses to clip them before it."""
        cfg = self.train_config
        options: dict[str, Any] = {"lr": lr or cfg.lr, "weight_decay": cfg.weight_decay}
        precision = str(self._trainer.precision) if self._trainer is not None else ""
        clipped_in_mixed_precision = bool(cfg.gradient_clip_val) and "mixed" in precision
        if fused_optimizer_supported(params) and not clipped_in_mixed_precision:
            options["fused"] = True
        return options

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.resumed:
            # The logging step Lightning restores from a checkpoint written at a validation end is
            # one batch behind (its restart logic counts that batch as not stepped yet), so a resumed
            # run's first values landed on the interrupted run's last step: count the batches trained.
            self.trainer.fit_loop.epoch_loop._batches_that_stepped = self.batches_seen
            self.resumed = False

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.batches_seen = int(checkpoint["state_dict"].get("train_batches", 0))
        self.skipped_updates = int(checkpoint.get("vaezoo", {}).get("skipped_updates", 0))
        self.resumed = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain data only, so `torch.load(weights_only=True)` can read it back without running code.
        checkpoint["vaezoo"] = {
            "version": __version__,
            "config": self.run_config,
            "model_name": type(self.model).__name__,
            "model_config": dict(getattr(self.model, "config", {})),
            "skipped_updates": self.skipped_updates,
        }
