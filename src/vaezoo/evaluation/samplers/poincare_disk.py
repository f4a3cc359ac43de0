"""The Poincaré-disk sampler: a hyperbolic model's own prior on the Poincaré ball (pythae's
PoincareDiskSampler), for models that declare ``latent_geometry = "poincare_ball"``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vaezoo.evaluation.samplers.base import ModelSampler, SamplerNotApplicableError, register_sampler

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE


@register_sampler
class PoincareDiskSampler(ModelSampler):
    """Draws of the model's prior on the Poincaré ball (``model.sample_prior``: PoincareVAE's wrapped
    normal at the origin), every one strictly inside the ball; nothing to fit. Applies only to a
    model whose latents live on the ball, as its ``latent_geometry`` declares."""

    name = "poincare_disk"
    summary = "the prior on the Poincare ball (models with latent_geometry poincare_ball)"

    @classmethod
    def check(cls, model: BaseVAE) -> None:
        geometry = getattr(model, "latent_geometry", "euclidean")
        if geometry != "poincare_ball":
            raise SamplerNotApplicableError(
                f"the 'poincare_disk' sampler needs a model whose latents live on the Poincare ball "
                f"(latent_geometry 'poincare_ball', e.g. PoincareVAE); {type(model).__name__}'s are "
                f"'{geometry}': use 'prior', 'gmm' or 'two_stage' instead"
            )

    def draw(self, num_samples: int, device: torch.device) -> Tensor:
        return self.model.sample_prior(num_samples, device)
