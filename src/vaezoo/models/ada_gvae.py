"""Ada-GVAE, the weakly-supervised VAE of Locatello et al. (2020) with group-VAE averaging."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.weak import AVERAGING, adaptive_shared_mask, aggregate_pair, pair_kl
from vaezoo.registry import register_model


def split_pairs(x: Tensor) -> tuple[Tensor, Tensor]:
    """A (2B, ...) batch -> its first and second images, rows i and B+i forming pair i."""
    if x.shape[0] % 2:
        raise ValueError(f"a batch of pairs needs an even number of rows (2B), got {x.shape[0]}")
    half = x.shape[0] // 2
    return x[:half], x[half:]


@register_model
class AdaGVAE(VanillaVAE):
    """Ada-GVAE: Locatello, Poole, Raetsch, Schoelkopf, Bachem & Tschannen (2020), "Weakly-Supervised
    Disentanglement Without Compromises" (ICML), Sec. 4.

    Trained on pairs (x1, x2) that share all but some factors. Both images are encoded; on the
    dimensions with ``delta_j = KL(q(z_j|x1) || q(z_j|x2)) < tau = (max delta + min delta) / 2``
    (Eq. 7) both posteriors are replaced by their average (here the group-VAE mean of means and
    variances); the loss is the beta-weighted ELBO of both images under these posteriors (Eq. 8)::

        loss = mean_pairs[ (recon(x1) + recon(x2)) / 2 ] + beta * M_N * mean[ KL(q~(z|x) || p(z)) ]

    ``forward(x, pairs=True)`` reads rows i and B+i of a (2B, C, H, W) batch as a pair; without
    ``pairs`` it is the plain VAE (evaluation, sampling, export). ``beta`` defaults to 1, the
    weak models' ELBO; the subclasses change one of ``averaging`` (how) or ``shared_dimensions`` (which).
    """

    trains_on_pairs: ClassVar[bool] = True
    averaging: ClassVar[str] = "gvae"

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        beta: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        if beta < 0:
            raise ValueError(f"beta={beta} must be non-negative")
        self.beta = beta

    def shared_dimensions(self, q1: DiagonalGaussian, q2: DiagonalGaussian, labels: Tensor | None) -> Tensor:
        """(B, D) True where the pair's posteriors are aggregated: the adaptive threshold of Eq. 7."""
        return adaptive_shared_mask(pair_kl(q1, q2))

    def forward(
        self, input: Tensor, pairs: bool = False, labels: Tensor | None = None, **kwargs: Any
    ) -> NamedTuple:
        if not pairs:
            return super().forward(input, **kwargs)
        posterior = self.encode(input)  # (2B, D): both images through one encoder pass
        q1, q2 = (
            DiagonalGaussian(mu, log_var) for mu, log_var in zip(*map(split_pairs, posterior.as_list()))
        )
        shared = self.shared_dimensions(q1, q2, labels)  # (B, D)
        a1, a2 = aggregate_pair(q1, q2, shared, AVERAGING[self.averaging])
        mu, log_var = torch.cat([a1.mu, a2.mu]), torch.cat([a1.log_var, a2.log_var])  # (2B, D)
        z = DiagonalGaussian(mu, log_var).rsample()
        recons, params = self.decode_with_params(z)
        return self.pack(recons=recons, recon_params=params, input=input, z=z, mu=mu, log_var=log_var)

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        return super().regularizer(output, self.beta * kl_weight)
