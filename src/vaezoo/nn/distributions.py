"""Distributions as small objects, so priors and posteriors share one interface.

A model's ``encode(x)`` returns its posterior q(z|x) as one of these: ``rsample(global_step)`` draws
a reparameterised z, ``mode()`` is the deterministic code, ``fields()`` names the parameters the
model's forward output carries (``mu`` and ``log_var`` for a Gaussian). For PyTorch-VAE's callers a
posterior also unpacks like the list its ``encode`` returned: ``mu, log_var = model.encode(x)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import overload

import torch
from torch import Tensor


class Posterior(Sequence[Tensor]):
    """The interface of q(z|x); subclasses fill in ``rsample``, ``mode`` and ``as_list``. A
    sequence of its parameters, as PyTorch-VAE's ``encode`` returned them."""

    def rsample(self, global_step: int | None = None) -> Tensor:
        """A reparameterised draw; ``global_step`` is for samplers that anneal (a relaxed
        categorical's temperature) and is ignored by the others."""
        raise NotImplementedError

    def mode(self) -> Tensor:
        raise NotImplementedError

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over the latent's last dimension, (B,)."""
        raise NotImplementedError(f"{type(self).__name__} defines no log_prob")

    def kl(self, other: Posterior) -> Tensor:
        """KL(self || other) in closed form against a distribution of the same family, (B,)."""
        raise NotImplementedError(f"{type(self).__name__} defines no closed-form KL")

    def as_list(self) -> list[Tensor]:
        """The parameters in the order of PyTorch-VAE's ``encode`` list, e.g. ``[mu, log_var]``."""
        raise NotImplementedError

    def fields(self) -> dict[str, Tensor]:
        """The parameters by the names a model's forward output gives them."""
        return {}

    def map(self, fn: Callable[[Tensor], Tensor]) -> Posterior:
        """The same distribution with ``fn`` applied to each parameter (e.g. a cast to fp32)."""
        raise NotImplementedError(f"{type(self).__name__} defines no map")

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.as_list())

    @overload
    def __getitem__(self, index: int) -> Tensor: ...

    @overload
    def __getitem__(self, index: slice) -> list[Tensor]: ...

    def __getitem__(self, index: int | slice) -> Tensor | list[Tensor]:
        return self.as_list()[index]

    def __len__(self) -> int:
        return len(self.as_list())


class DiagonalGaussian(Posterior):
    """N(mu, diag(exp(log_var))) over the last dimension; every reduction sums over it -> (B,)."""

    def __init__(self, mu: Tensor, log_var: Tensor) -> None:
        self.mu = mu
        self.log_var = log_var

    def as_list(self) -> list[Tensor]:
        return [self.mu, self.log_var]

    def fields(self) -> dict[str, Tensor]:
        return {"mu": self.mu, "log_var": self.log_var}

    def map(self, fn: Callable[[Tensor], Tensor]) -> DiagonalGaussian:
        return DiagonalGaussian(fn(self.mu), fn(self.log_var))

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.log_var)

    def rsample(self, global_step: int | None = None) -> Tensor:
        """A reparameterised sample mu + sigma * eps, differentiable in mu and log_var."""
        return self.mu + self.std * torch.randn_like(self.mu)

    def mode(self) -> Tensor:
        return self.mu

    def log_prob(self, z: Tensor) -> Tensor:
        squared = (z - self.mu) ** 2 * torch.exp(-self.log_var)
        return -0.5 * (squared + self.log_var + math.log(2 * math.pi)).sum(-1)

    def kl(self, other: Posterior) -> Tensor:
        """KL(self || other) between diagonal Gaussians in closed form, summed over the last dim."""
        if not isinstance(other, DiagonalGaussian):
            raise TypeError(f"a Gaussian's closed-form KL needs a Gaussian, not {type(other).__name__}")
        var_ratio = torch.exp(self.log_var - other.log_var)
        mean_term = (self.mu - other.mu) ** 2 * torch.exp(-other.log_var)
        return 0.5 * (var_ratio + mean_term - 1.0 - self.log_var + other.log_var).sum(-1)

    def kl_standard_normal(self) -> Tensor:
        """KL(q || N(0, I)) in closed form: 0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2) >= 0."""
        return 0.5 * (self.mu**2 + self.log_var.exp() - 1.0 - self.log_var).sum(-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)


class PointMass(Posterior):
    """A deterministic code z = f(x) (WAE, SWAE, VQ-VAE's map): every draw is the code itself; no density."""

    def __init__(self, code: Tensor) -> None:
        self.code = code

    def rsample(self, global_step: int | None = None) -> Tensor:
        return self.code

    def mode(self) -> Tensor:
        return self.code

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError("a deterministic code (point mass) has no density: no log q(z|x)")

    def kl(self, other: Posterior) -> Tensor:
        raise NotImplementedError("a deterministic code (point mass) has no KL to a continuous prior")

    def as_list(self) -> list[Tensor]:
        return [self.code]
