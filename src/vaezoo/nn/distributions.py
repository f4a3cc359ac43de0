"""Distributions as small objects, so priors and posteriors share one interface."""

from __future__ import annotations

import math

import torch
from torch import Tensor


class DiagonalGaussian:
    """N(mu, diag(exp(log_var))) over the last dimension; every reduction sums over it -> (B,)."""

    def __init__(self, mu: Tensor, log_var: Tensor) -> None:
        self.mu = mu
        self.log_var = log_var

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.log_var)

    def rsample(self) -> Tensor:
        """A reparameterised sample mu + sigma * eps, differentiable in mu and log_var."""
        return self.mu + self.std * torch.randn_like(self.mu)

    def mode(self) -> Tensor:
        return self.mu

    def log_prob(self, z: Tensor) -> Tensor:
        squared = (z - self.mu) ** 2 * torch.exp(-self.log_var)
        return -0.5 * (squared + self.log_var + math.log(2 * math.pi)).sum(-1)

    def kl(self, other: DiagonalGaussian) -> Tensor:
        """KL(self || other) between diagonal Gaussians in closed form, summed over the last dim."""
        var_ratio = torch.exp(self.log_var - other.log_var)
        mean_term = (self.mu - other.mu) ** 2 * torch.exp(-other.log_var)
        return 0.5 * (var_ratio + mean_term - 1.0 - self.log_var + other.log_var).sum(-1)

    def kl_standard_normal(self) -> Tensor:
        """KL(q || N(0, I)) in closed form: 0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2) >= 0."""
        return 0.5 * (self.mu**2 + self.log_var.exp() - 1.0 - self.log_var).sum(-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)
