"""One trained model in the explorer: its sliders, and its encodes, decodes and samples on flattened
codes, batched, in eval mode, one forward pass at a time."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vaezoo.evaluation.evaluate import EvaluationContext, EvaluationSettings, NotApplicable
from vaezoo.explore.latents import Slider, build_sliders
from vaezoo.explore.requests import ModelCannot
from vaezoo.images import from_unit, to_unit
from vaezoo.io import LoadedRun

SLIDER_LIMIT = 4.0  # a slider moves its latent by at most this many of its spreads
MAX_SLIDERS = 64  # sliders per model (a VQ-VAE's map has thousands of latents: the most active ones)


class NotExplorable(ValueError):
    """A run whose latents the explorer cannot show; the message says why."""


def refusal(run: LoadedRun, data_kind: str) -> str | None:
    """Why the explorer cannot show ``run`` (None: it can): it draws images and moves latents."""
    model = run.model
    if data_kind != "images":
        return f"{type(model).__name__} was trained on vectors, and the explorer draws images"
    return None


@dataclass(frozen=True)
class ViewSettings:
    stats_examples: int = 1000  # validation images for the sliders' statistics
    fit_examples: int = 2000  # training images whose codes fit the GMM sampler
    seed: int = 0


class ModelView:
    """One trained model in the explorer: its sliders and its encode / decode / sample, batched."""

    def __init__(
        self, key: str, source: str, run: LoadedRun, datamodule: Any, settings: ViewSettings
    ) -> None:
        why = refusal(run, datamodule.kind)
        if why is not None:
            raise NotExplorable(f"{source}: {why}")
        self.key, self.source, self.run, self.model = key, source, run, run.model.eval()
        self.name = type(run.model).__name__
        self.datamodule = datamodule
        self.value_range = tuple(datamodule.value_range)
        self.context = EvaluationContext(
            self.model,
            datamodule,
            EvaluationSettings(
                metrics=(),
                num_examples=settings.stats_examples,
                sampler="gmm",
                sampler_fit_examples=settings.fit_examples,
                progress=False,
                seed=settings.seed,
            ),
        )
        self.lock = threading.Lock()  # one forward pass at a time through this model
        # encodes and decodes through a copy with batch norms folded: 2.6 -> 1.8 ms per decode of the
        # default dSprites model here, the same images up to float rounding
        self.fast = self.context.inference_model
        with torch.no_grad():
            codes = self.context.codes  # (N, *code_shape)
        self.code_shape = tuple(codes.shape[1:])
        self.width = math.prod(self.code_shape)  # the flattened code's length
        self.sliders = self._sliders()

    def _sliders(self) -> list[Slider]:
        latents = self.context.latent_codes  # (N, D): a conditional model's code without its label columns
        try:
            kl: Tensor | None = self.context.kl_per_dim.double().mean(dim=0)
        except NotApplicable:
            kl = None
        if kl is not None and kl.numel() != latents.shape[1]:
            kl = None  # a KL per dimension of another latent than the one decoded (order by activity)
        truth = self.datamodule.ground_truth
        factors = self.context.examples[1].numpy() if truth is not None else None
        names = list(truth.factor_names) if truth is not None else None
        return build_sliders(latents, kl, factors, names, MAX_SLIDERS)

    @property
    def sampler_notes(self) -> dict[str, str | None]:
        """Sampler -> why it does not apply (None: it does)."""
        prior = None if self.model.samples_from_prior else f"{self.name} has no prior to sample from"
        return {"prior": prior, "gmm": None}

    def describe(self) -> dict[str, Any]:
        collapsed = sum(slider.collapsed for slider in self.sliders)
        return {
            "key": self.key,
            "name": self.name,
            "source": self.source,
            "step": self.run.global_step,
            "data": self.datamodule.config.name,
            "code_shape": list(self.code_shape),
            "latents": self.width,
            "sliders": [slider.to_json() for slider in self.sliders],
            "sliders_note": (
                f"the {len(self.sliders)} most informative of {self.context.latent_codes.shape[1]} latents"
                if len(self.sliders) < self.context.latent_codes.shape[1]
                else None
            ),
            "collapsed": collapsed,
            "samplers": self.sampler_notes,
            "conditional": self.model.is_conditional,
        }

    # -- computations on flattened codes (B, M) ---------------------------------------------------
    def encode(self, images: Tensor, labels: Tensor | None) -> Tensor:
        """Codes (B, M) of images (B, C, H, W) in [0, 1]: the posterior means, ``model.embed``."""
        extra = {} if labels is None or not self.model.is_conditional else {"labels": labels}
        with self.lock, torch.no_grad():
            codes = self.fast.embed(from_unit(images, self.value_range), **extra)
        return codes.detach().float().cpu().reshape(len(images), -1)

    def decode(self, codes: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] of flattened codes (B, M), in one batch."""
        with self.lock, torch.no_grad():
            images = self.fast.decode(codes.reshape(len(codes), *self.code_shape))
        return to_unit(images, self.value_range)

    def moved(self, base: Tensor, sliders: Sequence[float]) -> Tensor:
        """``base`` (M,) with slider r's latent moved by ``sliders[r]`` of its spreads."""
        code = base.clone()
        for slider, value in zip(self.sliders, sliders, strict=False):
            code[slider.dim] += value * slider.unit
        return code

    def sample_codes(self, sampler: str, n: int, seed: int, condition: Tensor | None) -> Tensor:
        """``n`` codes (n, M) from the prior or a GMM fitted on training codes (fitted once, on first use).
        ``condition``: the label columns a conditional model's prior draws are decoded under."""
        from vaezoo.evaluation.samplers import fit_sampler

        why = self.sampler_notes.get(sampler)
        if why is not None:
            raise ModelCannot(f"{self.name}: {why}")
        with self.lock, torch.no_grad():
            if sampler == "gmm":
                drawn = self.context.sampler.sample(n, seed)
            else:
                drawn = fit_sampler("prior", self.model, None).sample(n, seed)
        drawn = drawn.detach().float().cpu().reshape(n, -1)
        if self.model.is_conditional and sampler == "prior" and condition is not None:
            drawn = torch.cat([drawn, condition.expand(n, -1)], dim=1)
        if drawn.shape[1] != self.width:
            raise ModelCannot(
                f"{self.name}: its {sampler} draws have {drawn.shape[1]} values, not {self.width}"
            )
        return drawn
