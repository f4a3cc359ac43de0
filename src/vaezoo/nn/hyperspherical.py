"""Distributions on the unit hypersphere S^{m-1} = {z in R^m : |z| = 1}: the von Mises-Fisher
vMF(mu, kappa) and the uniform distribution, for the hyperspherical VAE (Davidson et al. 2018).

vMF(z; mu, kappa) = C_m(kappa) exp(kappa mu^T z) with C_m(kappa) = kappa^{m/2-1} / ((2 pi)^{m/2}
I_{m/2-1}(kappa)), I_v the modified Bessel function of the first kind. Its normaliser and the
mean resultant length A_m(kappa) = E[mu^T z] = I_{m/2}(kappa) / I_{m/2-1}(kappa) are computed from
the exponentially scaled I_v(k) e^{-k} (``scipy.special.ive``, float64), whose logarithm is finite
for kappa in the thousands where I_v itself overflows float32 (it does past kappa ~ 90). scipy
runs on the CPU: a GPU batch's kappas (B numbers) are copied there and back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import special
from torch import Tensor

from vaezoo.nn.distributions import Posterior

MAX_REJECTION_ROUNDS = 100  # Wood's sampler accepts most proposals: a few rounds suffice


# -- the Bessel functions, stably ---------------------------------------------------------------
def _log_ive(order: float, kappa: np.ndarray) -> np.ndarray:
    """log(I_v(k) e^{-k}) in float64; where ive underflows (high order, small k) the leading term
    of the series, log((k/2)^v / Gamma(v + 1)) - k, which is exact there to many digits."""
    value = special.ive(order, kappa)
    with np.errstate(divide="ignore"):
        direct = np.log(value)
    series = order * np.log(kappa / 2.0) - special.gammaln(order + 1.0) - kappa
    return np.where(value > 0, direct, series)


class LogBesselIve(torch.autograd.Function):
    """log(I_v(kappa) e^{-kappa}) with its derivative in kappa (the order v is a constant):
    d/dk log I_v(k) = I_{v+1}(k) / I_v(k) + v / k, so d/dk log ive = that - 1."""

    @staticmethod
    def forward(ctx: Any, order: float, kappa: Tensor) -> Tensor:
        k = kappa.detach().cpu().double().numpy()
        log_v, log_next = _log_ive(order, k), _log_ive(order + 1.0, k)
        ctx.save_for_backward(kappa)
        ctx.order = order
        ctx.ratio = torch.from_numpy(np.exp(log_next - log_v)).to(kappa)  # I_{v+1} / I_v
        return torch.from_numpy(log_v).to(kappa)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        (kappa,) = ctx.saved_tensors
        return None, grad * (ctx.ratio + ctx.order / kappa - 1.0)


def log_bessel_ive(order: float, kappa: Tensor) -> Tensor:
    """log(I_order(kappa) e^{-kappa}) elementwise, differentiable in kappa > 0."""
    return LogBesselIve.apply(order, kappa)


def mean_resultant_length(kappa: Tensor, dim: int) -> Tensor:
    """A_m(kappa) = I_{m/2}(kappa) / I_{m/2-1}(kappa) = E[mu^T z] under vMF(mu, kappa) on S^{m-1}."""
    order = dim / 2.0 - 1.0
    return torch.exp(log_bessel_ive(order + 1.0, kappa) - log_bessel_ive(order, kappa))


def log_sphere_area(dim: int) -> float:
    """log |S^{m-1}| = log(2 pi^{m/2} / Gamma(m/2)), the surface area of the unit sphere in R^m."""
    return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


def log_vmf_normalizer(kappa: Tensor, dim: int) -> Tensor:
    """log C_m(kappa) + kappa: the log normaliser with the kappa of I_v's growth taken out, so that
    log vMF(z) = this + kappa (mu^T z - 1) stays finite for large kappa."""
    order = dim / 2.0 - 1.0
    return order * torch.log(kappa) - 0.5 * dim * math.log(2 * math.pi) - log_bessel_ive(order, kappa)


# -- Wood's (1994) rejection sampler -------------------------------------------------------------
def wood_envelope(kappa: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Wood's b, x0 and c for vMF on S^{m-1}: b = (m-1) / (2 kappa + sqrt(4 kappa^2 + (m-1)^2))
    (the form without cancellation at large kappa), x0 = (1 - b) / (1 + b), c = kappa x0 +
    (m - 1) log(1 - x0^2)."""
    m1 = dim - 1.0
    b = m1 / (2.0 * kappa + torch.sqrt(4.0 * kappa**2 + m1**2))
    x0 = (1.0 - b) / (1.0 + b)
    return b, x0, kappa * x0 + m1 * torch.log1p(-(x0**2))


def wood_w(eps: Tensor, b: Tensor) -> Tensor:
    """The proposal w = (1 - (1 + b) eps) / (1 - (1 - b) eps), written as 1 - 2 b eps / (1 - (1 - b) eps)."""
    return 1.0 - 2.0 * b * eps / (1.0 - (1.0 - b) * eps)


def wood_noise(kappa: Tensor, dim: int, max_rounds: int = MAX_REJECTION_ROUNDS) -> Tensor:
    """The accepted proposal noise eps ~ Beta((m-1)/2, (m-1)/2) of Wood's sampler of w = mu^T z
    (Davidson et al. 2018, Algorithm 1), one per entry of ``kappa`` (not differentiated; float64).

    Accept when kappa w + (m - 1) log(1 - x0 w) - c >= log u, u ~ U(0, 1); every pending entry
    draws anew each round, for at most ``max_rounds`` rounds. A non-finite kappa is not sampled
    (its z comes out NaN, so the loss is NaN and the trainer's ``nonfinite`` policy handles it).
    """
    k = kappa.detach().double()
    b, x0, c = wood_envelope(k, dim)
    half = torch.full_like(k, (dim - 1) / 2.0)
    proposal = torch.distributions.Beta(half, half)
    noise = torch.zeros_like(k)
    pending = torch.isfinite(k)
    for _ in range(max_rounds):
        eps = proposal.sample()
        w = wood_w(eps, b)
        log_u = torch.log(torch.rand_like(k))
        accept = k * w + (dim - 1) * torch.log1p(-x0 * w) - c >= log_u
        noise = torch.where(pending & accept, eps, noise)
        pending = pending & ~accept
        if not pending.any():
            return noise.to(kappa.dtype)
    raise RuntimeError(
        f"Wood's vMF sampler left {int(pending.sum())} of {pending.numel()} draws unaccepted after "
        f"{max_rounds} rounds (kappa in [{k.min().item():.3g}, {k.max().item():.3g}], dim {dim}): "
        "an extreme kappa?"
    )


def wood_log_noise_density(eps: Tensor, kappa: Tensor, dim: int) -> Tensor:
    """log pi(eps; kappa) + const, (..., 1): the density of the *accepted* noise, differentiable in
    kappa with eps fixed, whose gradient is the score in the correction term g_cor (Naesseth et
    al. 2017, Eq. 6; Davidson et al. 2018, Sec. 3). pi(eps) = q(w(eps, kappa)) |dw / deps|, where
    q(w) = C_m(kappa) |S^{m-2}| e^{kappa w} (1 - w^2)^{(m-3)/2} is the law of w = mu^T z and
    |dw / deps| = 2 b / (1 - (1 - b) eps)^2 (the constant |S^{m-2}| left out)."""
    b = wood_envelope(kappa, dim)[0]
    denominator = 1.0 - (1.0 - b) * eps
    one_minus_w = 2.0 * b * eps / denominator
    log_q = log_vmf_normalizer(kappa, dim) - kappa * one_minus_w  # log C_m + kappa w
    sine_squared = (one_minus_w * (2.0 - one_minus_w)).clamp_min(torch.finfo(eps.dtype).tiny)
    return (
        log_q + 0.5 * (dim - 3) * torch.log(sine_squared) + torch.log(2.0 * b) - 2.0 * torch.log(denominator)
    )


def householder_to(mu: Tensor, x: Tensor) -> Tensor:
    """The reflection H = I - 2 u u^T / |u|^2 with u = e1 - mu (which maps e1 to mu) applied to x
    (..., m); the identity where mu = e1."""
    u = -mu.clone()
    u[..., 0] += 1.0
    squared = (u * u).sum(-1, keepdim=True)
    return x - 2.0 * u * (u * x).sum(-1, keepdim=True) / squared.clamp_min(1e-12)


def uniform_sphere(shape: tuple[int, ...], dim: int, **like: Any) -> Tensor:
    """Uniform draws on S^{dim-1}: standard normal vectors (*shape, dim) divided by their norms."""
    return torch.nn.functional.normalize(torch.randn(*shape, dim, **like), dim=-1)


# -- the distributions ---------------------------------------------------------------------------
class HypersphericalUniform:
    """U(S^{m-1}): the uniform distribution on the unit sphere in R^``dim``, density 1 / |S^{m-1}|."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def sample(self, num_samples: int, device: torch.device | None = None) -> Tensor:
        return uniform_sphere((num_samples,), self.dim, device=device)  # (N, m)

    def log_prob(self, z: Tensor) -> Tensor:
        return torch.full(z.shape[:-1], -log_sphere_area(self.dim), dtype=z.dtype, device=z.device)

    def entropy(self) -> float:
        return log_sphere_area(self.dim)


class VonMisesFisher(Posterior):
    """vMF(mu, kappa) on S^{m-1}: mean direction ``mu`` (..., m) of unit norm, concentration
    ``kappa`` (..., 1) > 0. Unpacks as ``[mu, kappa]``; every reduction is over the sphere -> (...,).

    ``rsample`` is Davidson et al.'s reparameterised draw: w = mu^T z from Wood's rejection sampler,
    differentiable in kappa through w(eps, b(kappa)) with the accepted eps held fixed, a uniform
    direction v on S^{m-2} orthogonal to e1, z' = (w, sqrt(1 - w^2) v), and z = H(mu) z'.
    """

    def __init__(self, mu: Tensor, kappa: Tensor, max_rounds: int = MAX_REJECTION_ROUNDS) -> None:
        self.mu, self.kappa, self.max_rounds = mu, kappa, max_rounds

    @property
    def dim(self) -> int:
        return self.mu.shape[-1]

    def as_list(self) -> list[Tensor]:
        return [self.mu, self.kappa]

    def fields(self) -> dict[str, Tensor]:
        """mu and kappa, and after ``rsample`` the accepted noise eps of each draw as ``noise``."""
        noise = getattr(self, "noise", None)
        return {"mu": self.mu, "kappa": self.kappa, **({"noise": noise} if noise is not None else {})}

    def map(self, fn: Callable[[Tensor], Tensor]) -> VonMisesFisher:
        return VonMisesFisher(fn(self.mu), fn(self.kappa), self.max_rounds)

    def rsample(self, global_step: int | None = None) -> Tensor:
        mu, kappa = self.mu, self.kappa
        if mu.dtype in (torch.bfloat16, torch.float16):  # the sampler's arithmetic needs fp32 at least
            mu, kappa = mu.float(), kappa.float()
        kappa = kappa.expand(*mu.shape[:-1], 1)
        eps = wood_noise(kappa, self.dim, self.max_rounds)  # (..., 1)
        self.noise = eps  # the accepted noise, for the correction term (wood_log_noise_density)
        b = wood_envelope(kappa, self.dim)[0]
        w = wood_w(eps, b)  # (..., 1), differentiable in kappa
        one_minus_w = 2.0 * b * eps / (1.0 - (1.0 - b) * eps)  # 1 - w without cancellation
        sine_squared = (one_minus_w * (2.0 - one_minus_w)).clamp_min(torch.finfo(w.dtype).tiny)
        radius = torch.sqrt(sine_squared)  # sqrt(1 - w^2), with a finite gradient
        v = uniform_sphere(tuple(mu.shape[:-1]), self.dim - 1, device=mu.device, dtype=mu.dtype)
        return householder_to(mu, torch.cat([w, radius * v], dim=-1))  # (..., m)

    def mode(self) -> Tensor:
        return self.mu

    def mean_resultant_length(self) -> Tensor:
        """E[mu^T z] = A_m(kappa), (...,)."""
        return mean_resultant_length(self.kappa, self.dim).squeeze(-1)

    def log_prob(self, z: Tensor) -> Tensor:
        """log C_m(kappa) + kappa mu^T z, (...,)."""
        cosine = (self.mu * z).sum(-1, keepdim=True)
        return (log_vmf_normalizer(self.kappa, self.dim) + self.kappa * (cosine - 1.0)).squeeze(-1)

    def entropy(self) -> Tensor:
        """H = -kappa A_m(kappa) - log C_m(kappa), (...,), computed in float64."""
        kappa = self.kappa.double()
        a = mean_resultant_length(kappa, self.dim)
        entropy = kappa * (1.0 - a) - log_vmf_normalizer(kappa, self.dim)  # the kappa's cancel
        return entropy.squeeze(-1).to(self.kappa.dtype)

    def kl_uniform(self) -> Tensor:
        """KL(vMF(mu, kappa) || U(S^{m-1})) = log |S^{m-1}| - H, (...,), >= 0: the closed form of
        Davidson et al. 2018 (Sec. 3), independent of mu."""
        return (log_sphere_area(self.dim) - self.entropy()).clamp_min(0.0)

    def kl(self, other: Posterior | HypersphericalUniform) -> Tensor:
        if not isinstance(other, HypersphericalUniform) or other.dim != self.dim:
            raise TypeError(f"a vMF's closed-form KL here is against U(S^{self.dim - 1}), not {other!r}")
        return self.kl_uniform()
