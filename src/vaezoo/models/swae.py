"""The Sliced-Wasserstein Auto-Encoder of Kolouri et al., ICLR 2019."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from vaezoo.losses.sliced_wasserstein import ProjectionDistribution, sliced_wasserstein
from vaezoo.models.wae_mmd import LatentMatchingAutoencoder
from vaezoo.registry import register_model


@register_model
class SWAE(LatentMatchingAutoencoder):
    """Sliced-Wasserstein Auto-Encoder, Kolouri, Pope, Martin & Rohde 2019, "Sliced-Wasserstein
    Auto-Encoders" (ICLR), Algorithm 1:

        loss = mean_batch[ c(x, psi(phi(x))) ] + lambda * SW_p^p(q(z), p(z))
        SW_p^p ~ 1/(L M) sum_l sum_m | sort(theta_l . z)[m] - sort(theta_l . z~)[m] |^p

    with a deterministic encoder phi, M = batch size prior draws z~ ~ p(z) = N(0, latent_var * I)
    and L directions theta_l on the unit sphere (normalised normal or Cauchy draws), fresh at every
    step. ``wasserstein_deg`` is p, ``num_projections`` is L, ``reg_weight`` is lambda.

    Fixed against PyTorch-VAE: |.| before the power p (odd p gave signed costs); no stray
    1/(B(B-1)) factor copied from the MMD code; the reconstruction term is the model's
    ``recon_reduction`` squared error, as in every other model (PyTorch-VAE added an L1 term).
    Loss keys: ``loss``, ``Reconstruction_Loss``, ``SWD``.

    Signature: PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, reg_weight,
    wasserstein_deg, num_projections, projection_dist)``; ``latent_var`` (the prior's variance,
    1 as in PyTorch-VAE's N(0, I)) and ConvAutoencoder's arguments are keyword-only. As there, ``M_N``
    plays no part in the loss.
    """

    divergence_key = "SWD"
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "SWD")

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        reg_weight: float = 100.0,
        wasserstein_deg: float = 2.0,
        num_projections: int = 50,
        projection_dist: ProjectionDistribution = "normal",
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, reg_weight=reg_weight, **kwargs)
        if projection_dist not in ("normal", "cauchy"):
            raise ValueError(f"projection_dist '{projection_dist}' is not one of ('normal', 'cauchy')")
        if wasserstein_deg <= 0 or num_projections < 1:
            raise ValueError("wasserstein_deg must be positive and num_projections at least 1")
        self.wasserstein_deg = wasserstein_deg
        self.num_projections = num_projections
        self.projection_dist = projection_dist

    def divergence(self, z: Tensor, prior_z: Tensor) -> Tensor:
        return sliced_wasserstein(
            z, prior_z, self.num_projections, self.wasserstein_deg, self.projection_dist
        )
