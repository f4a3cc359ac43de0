"""Posterior aggregation for pairs of observations that share some factors of variation.

Locatello, Poole, Raetsch, Schoelkopf, Bachem & Tschannen (2020), "Weakly-Supervised
Disentanglement Without Compromises" (ICML), Sec. 4: the two images of a pair are encoded
separately; on the latent dimensions judged *shared*, both posteriors are replaced by one
aggregate of the two, and each image is reconstructed from its own, partly aggregated posterior.

- Which dimensions are shared: adaptively, ``delta_j < tau`` with
  ``delta_j = KL(q(z_j|x1) || q(z_j|x2))`` and ``tau = (max_j delta_j + min_j delta_j) / 2`` (Eq. 7),
  or from a known factor index (dimension f stands for factor f, as in disentanglement_lib's
  ``aggregate_labels``; the changed factors keep their own posteriors).
- How they are aggregated: GVAE's arithmetic mean of means and of variances (Hosoya 2019), or
  ML-VAE's precision-weighted mean (Bouchacourt et al. 2018; variance the harmonic mean of the two,
  as disentanglement_lib's ``MLVae`` does).

Every function is pure, on (B, D) tensors of the first and second image of each pair.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vaezoo.nn.distributions import DiagonalGaussian

Averaging = Callable[[DiagonalGaussian, DiagonalGaussian], DiagonalGaussian]


def pair_kl(q1: DiagonalGaussian, q2: DiagonalGaussian) -> Tensor:
    """delta_j = KL(N(mu1_j, var1_j) || N(mu2_j, var2_j)) per dimension, (B, D); closed form."""
    ratio = torch.exp(q1.log_var - q2.log_var)  # var1 / var2
    return 0.5 * (ratio + (q1.mu - q2.mu) ** 2 * torch.exp(-q2.log_var) - 1.0 - (q1.log_var - q2.log_var))


def adaptive_shared_mask(delta: Tensor) -> Tensor:
    """True where dimension j counts as shared: delta_j < tau = (max delta + min delta) / 2, per row."""
    tau = 0.5 * (delta.amax(dim=-1, keepdim=True) + delta.amin(dim=-1, keepdim=True))  # (B, 1)
    return delta < tau


def known_shared_mask(changed_factors: Tensor, latent_dim: int) -> Tensor:
    """(B, F) booleans "factor f differs within the pair" -> (B, D) shared dimensions.

    Dimension f is tied to factor f; a changed factor's dimension keeps its own posterior, every
    other dimension (also those beyond the F factors) is shared.
    """
    if changed_factors.dim() != 2:
        raise ValueError(f"changed_factors must be (B, F) booleans, got shape {tuple(changed_factors.shape)}")
    num_factors = changed_factors.shape[1]
    if num_factors > latent_dim:
        raise ValueError(
            f"latent_dim={latent_dim} is smaller than the {num_factors} factors; the known-factor "
            "models tie latent dimension f to factor f, so latent_dim must be at least the factor count"
        )
    shared = torch.ones(changed_factors.shape[0], latent_dim, dtype=torch.bool, device=changed_factors.device)
    shared[:, :num_factors] = ~changed_factors.bool()
    return shared


def gvae_average(q1: DiagonalGaussian, q2: DiagonalGaussian) -> DiagonalGaussian:
    """Group-VAE averaging (Hosoya 2019): mean of the means, mean of the variances."""
    var = 0.5 * (torch.exp(q1.log_var) + torch.exp(q2.log_var))
    return DiagonalGaussian(0.5 * (q1.mu + q2.mu), torch.log(var))


def mlvae_average(q1: DiagonalGaussian, q2: DiagonalGaussian) -> DiagonalGaussian:
    """ML-VAE averaging (Bouchacourt et al. 2018): the precision-weighted mean of the two means,
    with variance 2 / (1/var1 + 1/var2) (disentanglement_lib's ``MLVae``)."""
    precision1, precision2 = torch.exp(-q1.log_var), torch.exp(-q2.log_var)
    var = 2.0 / (precision1 + precision2)
    mu = 0.5 * var * (q1.mu * precision1 + q2.mu * precision2)
    return DiagonalGaussian(mu, torch.log(var))


def aggregate_pair(
    q1: DiagonalGaussian, q2: DiagonalGaussian, shared: Tensor, average: Averaging
) -> tuple[DiagonalGaussian, DiagonalGaussian]:
    """Both posteriors with their ``shared`` (B, D) dimensions replaced by ``average(q1, q2)``."""
    joint = average(q1, q2)

    def replace(q: DiagonalGaussian) -> DiagonalGaussian:
        return DiagonalGaussian(
            torch.where(shared, joint.mu, q.mu), torch.where(shared, joint.log_var, q.log_var)
        )

    return replace(q1), replace(q2)


AVERAGING: dict[str, Averaging] = {"gvae": gvae_average, "mlvae": mlvae_average}
