"""The model's prior as a sampler (the default of ``vaezoo sample`` and ``vaezoo evaluate``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vaezoo.evaluation.samplers.base import ModelSampler, SamplerNotApplicableError, register_sampler

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE


@register_sampler
class NormalSampler(ModelSampler):
    """The model's prior, ``model.sample_prior`` (N(0, I) for most models): nothing to fit."""

    name = "prior"
    summary = "the model's prior"

    @classmethod
    def check(cls, model: BaseVAE) -> None:
        if not getattr(model, "samples_from_prior", True):
            raise SamplerNotApplicableError(
                f"{type(model).__name__} has no prior to sample from; fit a sampler on its codes "
                "instead, e.g. 'gmm' or 'two_stage'"
            )

    def draw(self, num_samples: int, device: torch.device) -> Tensor:
        return self.model.sample_prior(num_samples, device)
