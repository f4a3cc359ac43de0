"""Kullback-Leibler divergences."""

from __future__ import annotations

from torch import Tensor

from vaezoo.nn.distributions import DiagonalGaussian


def gaussian_kl(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, exp(log_var)) || N(0, I)) per example, summed over latent dimensions: (B, D) -> (B,).

    Kingma & Welling (2014), Appendix B: -0.5 * sum(1 + log sigma^2 - mu^2 - sigma^2). Never negative.
    """
    return DiagonalGaussian(mu, log_var).kl_standard_normal()
