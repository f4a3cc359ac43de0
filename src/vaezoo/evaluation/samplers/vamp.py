"""The VampPrior as a sampler: a pseudo-input, then its posterior (Tomczak & Welling 2018)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor

from vaezoo.evaluation.samplers.base import (
    ModelSampler,
    SamplerNotApplicableError,
    evaluating,
    register_sampler,
)
from vaezoo.nn.priors import VampPrior

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE


@register_sampler
class VampSampler(ModelSampler):
    """The VampPrior p(z) = (1/K) sum_k q(z | u_k) (Tomczak & Welling 2018, "VAE with a
    VampPrior", Eq. 9): pick a pseudo-input u_k uniformly, encode it, draw z ~ q(z | u_k).

    For a model whose ``prior`` is a :class:`~vaezoo.nn.priors.VampPrior` (VampVAE). The
    pseudo-inputs are encoded in eval mode (BatchNorm with its running statistics), as the
    model's prior is in training.
    """

    name = "vamp"
    summary = "the VampPrior: a pseudo-input's posterior (VampVAE)"

    @classmethod
    def check(cls, model: BaseVAE) -> None:
        if not isinstance(getattr(model, "prior", None), VampPrior):
            raise SamplerNotApplicableError(
                f"{type(model).__name__} has no VampPrior (pseudo-inputs) to sample from; "
                "the 'vamp' sampler is for models with one, e.g. VampVAE"
            )

    def draw(self, num_samples: int, device: torch.device) -> Tensor:
        prior = cast(VampPrior, self.model.prior)  # checked by ``check``
        with evaluating(self.model):
            return prior(self.model.encode).sample(num_samples).to(device)  # (N, D)
