"""The uniform distribution on the unit sphere, for hyperspherical latents (SVAE)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vaezoo.evaluation.samplers.base import ModelSampler, SamplerNotApplicableError, register_sampler

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE


@register_sampler
class HypersphereUniformSampler(ModelSampler):
    """z ~ U(S^{D-1}): standard normals divided by their norm, uniform on the sphere by the
    rotation invariance of N(0, I) (Muller 1959); each coordinate has mean 0 and variance 1/D.

    For models that declare ``latent_geometry == "hypersphere"`` (SVAE, Davidson et al. 2018),
    whose latents are unit vectors in R^D, D = ``latent_dim``.
    """

    name = "hypersphere"
    summary = "uniform on the unit sphere (hyperspherical latents, SVAE)"

    @classmethod
    def check(cls, model: BaseVAE) -> None:
        geometry = getattr(model, "latent_geometry", "euclidean")
        if geometry != "hypersphere":
            raise SamplerNotApplicableError(
                f"{type(model).__name__}'s latents live in {geometry} space, not on a hypersphere; "
                "the 'hypersphere' sampler is for hyperspherical latents, e.g. SVAE"
            )

    def draw(self, num_samples: int, device: torch.device) -> Tensor:
        z = torch.randn(num_samples, self.model.latent_dim, device=device)  # (N, D)
        return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
