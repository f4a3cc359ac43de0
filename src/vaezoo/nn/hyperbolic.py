"""The Poincaré ball B_c^D = {z in R^D : c |z|^2 < 1} of curvature -c (c > 0), for the Poincaré VAE
(Mathieu et al. 2019): Möbius addition, exp / log maps, the distance, parallel transport from the
origin, the wrapped normal distribution, and the gyroplane layer of Ganea et al. 2018.

The ball's metric is conformal to the Euclidean one, g_z = lambda_z^2 I with the conformal factor
lambda_z = 2 / (1 - c |z|^2); so lambda_0 = 2 and, as c -> 0, the ball becomes R^D with the metric
4 I: x ⊕ y -> x + y, exp_x(u) -> x + u, log_x(y) -> y - x and d(x, y) -> 2 |x - y|. Formulas from
Ganea, Bécigneul & Hofmann 2018 ("Hyperbolic Neural Networks", Sec. 2) and Mathieu et al. 2019
(Sec. 2 and 3).

Numerical margins: points are kept strictly inside the ball by :func:`project`, which pulls any z
with sqrt(c) |z| > 1 - margin back to that radius, margin ``BALL_MARGIN[dtype]`` (1e-5 in float64,
4e-3 in lower precisions, where 1 - c |z|^2 would otherwise round to 0 and lambda_z to infinity).
The wrapped normal and the gyroplane layer therefore compute in float64 whatever their inputs'
dtype (a few numbers per example) and return the inputs' precision (at least float32): in float32
the margin caps distances from the origin at 2 artanh(1 - 4e-3) / sqrt(c) = 6.2 / sqrt(c), inside
the prior's bulk at D = 10, and a Monte Carlo KL of draws pulled in from beyond the cap is biased
low (a model learns to exploit it: a negative KL); in float64 the cap is 12.2 / sqrt(c).
artanh is evaluated on arguments clamped to |x| <= 1 - 1e-7 (float64) or 1 - 1e-5 (lower), and
norms are clamped from below by ``MIN_NORM`` before they divide, so that the maps at 0 stay finite
(with their correct limit there).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.nn.distributions import Posterior

MIN_NORM = 1e-15  # the smallest norm that divides: u / |u| at u = 0 is 0, not NaN
BALL_MARGIN = {torch.float64: 1e-5}  # 1 - sqrt(c) |z| >= margin; 4e-3 for every other dtype
ARTANH_MARGIN = {torch.float64: 1e-7}  # |artanh's argument| <= 1 - margin; 1e-5 otherwise


def _margin(table: dict[torch.dtype, float], dtype: torch.dtype, default: float) -> float:
    return table.get(dtype, default)


def norm(x: Tensor) -> Tensor:
    """|x| over the last dimension, (..., 1), at least ``MIN_NORM``."""
    return x.norm(dim=-1, keepdim=True).clamp_min(MIN_NORM)


def artanh(x: Tensor) -> Tensor:
    """artanh(x) with x clamped into (-1, 1) by ``ARTANH_MARGIN``, so it stays finite at the boundary."""
    bound = 1.0 - _margin(ARTANH_MARGIN, x.dtype, 1e-5)
    return torch.atanh(x.clamp(-bound, bound))


def project(x: Tensor, c: float) -> Tensor:
    """x pulled radially inside the ball: sqrt(c) |x| <= 1 - ``BALL_MARGIN``; points inside unchanged."""
    max_norm = (1.0 - _margin(BALL_MARGIN, x.dtype, 4e-3)) / math.sqrt(c)
    length = norm(x)
    return torch.where(length > max_norm, x / length * max_norm, x)


def result_dtype(x: Tensor) -> torch.dtype:
    """The dtype a float64 computation on ``x`` is returned in: x's own, at least float32."""
    return torch.promote_types(x.dtype, torch.float32)


def conformal_factor(x: Tensor, c: float) -> Tensor:
    """lambda_x = 2 / (1 - c |x|^2), (..., 1): the metric at x is lambda_x^2 times the Euclidean one."""
    return 2.0 / (1.0 - c * x.pow(2).sum(-1, keepdim=True)).clamp_min(MIN_NORM)


def mobius_add(x: Tensor, y: Tensor, c: float) -> Tensor:
    """x ⊕_c y = ((1 + 2c <x,y> + c|y|^2) x + (1 - c|x|^2) y) / (1 + 2c <x,y> + c^2 |x|^2 |y|^2)
    (Ganea et al. 2018, Sec. 2); broadcasts over the leading dimensions."""
    xy = (x * y).sum(-1, keepdim=True)
    x2, y2 = x.pow(2).sum(-1, keepdim=True), y.pow(2).sum(-1, keepdim=True)
    numerator = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return numerator / (1 + 2 * c * xy + c**2 * x2 * y2).clamp_min(MIN_NORM)


def expmap0(u: Tensor, c: float) -> Tensor:
    """exp_0(u) = tanh(sqrt(c) |u|) u / (sqrt(c) |u|): a tangent vector at the origin onto the ball."""
    sqrt_c, length = math.sqrt(c), norm(u)
    return project(torch.tanh(sqrt_c * length) * u / (sqrt_c * length), c)


def logmap0(y: Tensor, c: float) -> Tensor:
    """log_0(y) = artanh(sqrt(c) |y|) y / (sqrt(c) |y|), the inverse of :func:`expmap0`."""
    sqrt_c, length = math.sqrt(c), norm(y)
    return artanh(sqrt_c * length) * y / (sqrt_c * length)


def expmap(x: Tensor, u: Tensor, c: float) -> Tensor:
    """exp_x(u) = x ⊕ tanh(sqrt(c) lambda_x |u| / 2) u / (sqrt(c) |u|) (Ganea et al. 2018, Sec. 2):
    the point the geodesic from x with initial velocity u reaches at time 1."""
    sqrt_c, length = math.sqrt(c), norm(u)
    step = torch.tanh(sqrt_c * conformal_factor(x, c) * length / 2) * u / (sqrt_c * length)
    return project(mobius_add(x, step, c), c)


def logmap(x: Tensor, y: Tensor, c: float) -> Tensor:
    """log_x(y) = 2 / (sqrt(c) lambda_x) artanh(sqrt(c) |-x ⊕ y|) (-x ⊕ y) / |-x ⊕ y|, the inverse of
    :func:`expmap`: the tangent vector at x that points to y."""
    sqrt_c, difference = math.sqrt(c), mobius_add(-x, y, c)
    length = norm(difference)
    scale = 2 / (sqrt_c * conformal_factor(x, c)) * artanh(sqrt_c * length) / length
    return scale * difference


def distance(x: Tensor, y: Tensor, c: float) -> Tensor:
    """d_c(x, y) = (2 / sqrt(c)) artanh(sqrt(c) |-x ⊕ y|), (...,)."""
    sqrt_c = math.sqrt(c)
    return 2 / sqrt_c * artanh(sqrt_c * norm(mobius_add(-x, y, c))).squeeze(-1)


def transport0(x: Tensor, u: Tensor, c: float) -> Tensor:
    """Parallel transport of u from the tangent space at 0 to the one at x: u lambda_0 / lambda_x =
    u (1 - c |x|^2) (the gyration gyr[x, 0] is the identity)."""
    return u * 2.0 / conformal_factor(x, c)


def transport_to0(x: Tensor, u: Tensor, c: float) -> Tensor:
    """Parallel transport of u from the tangent space at x back to the one at 0: u lambda_x / lambda_0."""
    return u * conformal_factor(x, c) / 2.0


def log_sinhc(x: Tensor) -> Tensor:
    """log(sinh(x) / x) for x >= 0, (...): x^2 / 6 below 1e-3 (its series), else x + log1p(-e^{-2x})
    - log(2x), which overflows nowhere."""
    small = x < 1e-3
    safe = torch.where(small, torch.ones_like(x), x)
    large = safe + torch.log1p(-torch.exp(-2 * safe)) - torch.log(2 * safe)
    return torch.where(small, x.pow(2) / 6, large)


# -- the wrapped normal ------------------------------------------------------------------------------
class WrappedNormal(Posterior):
    """The wrapped (Riemannian-exponential-pushed) normal N^W(mu, diag sigma^2) on B_c^D (Mathieu et
    al. 2019, Sec. 3.1 and their appendix; Nagano et al. 2019): v ~ N(0, diag sigma^2) in the tangent
    space at the origin (in coordinates where the metric there is the Euclidean one), moved to mu by
    parallel transport and mapped onto the ball, z = exp_mu(transport0(mu, v / lambda_0)).

    Its density with respect to the ball's Riemannian volume is, with d = d_c(mu, z),

        log N^W(z) = log N(lambda_mu log_mu(z); 0, diag sigma^2) + (D - 1) log(sqrt(c) d / sinh(sqrt(c) d))

    (against the Lebesgue measure on R^D, add D log lambda_z: :func:`conformal_factor`). ``mu``
    (..., D) inside the ball, ``scale`` (..., D) > 0; unpacks as ``[mu, scale]``; reductions are over
    the last dimension -> (...,).
    """

    def __init__(self, mu: Tensor, scale: Tensor, c: float = 1.0) -> None:
        self.mu, self.scale, self.c = mu, scale, c

    @property
    def dim(self) -> int:
        return self.mu.shape[-1]

    def as_list(self) -> list[Tensor]:
        return [self.mu, self.scale]

    def fields(self) -> dict[str, Tensor]:
        return {"mu": self.mu, "scale": self.scale}

    def map(self, fn: Callable[[Tensor], Tensor]) -> WrappedNormal:
        return WrappedNormal(fn(self.mu), fn(self.scale), self.c)

    def push(self, v: Tensor) -> Tensor:
        """The point of the ball for tangent noise v (..., D) at the origin: exp_mu(transport0(v / 2))."""
        mu = self.mu.expand_as(v)
        return expmap(mu, transport0(mu, v / 2.0, self.c), self.c)

    def rsample(self, global_step: int | None = None) -> Tensor:
        mu, scale = self.mu.double(), self.scale.double()  # the ball's arithmetic in float64
        v = scale * torch.randn(
            torch.broadcast_shapes(mu.shape, scale.shape), dtype=mu.dtype, device=mu.device
        )
        return WrappedNormal(mu, scale, self.c).push(v).to(result_dtype(self.mu))  # (..., D)

    def sample(self, num_samples: int) -> Tensor:
        """``num_samples`` draws of every distribution in the batch, (N, ..., D), not differentiated."""
        shape = (num_samples, *torch.broadcast_shapes(self.mu.shape, self.scale.shape))
        with torch.no_grad():
            return WrappedNormal(self.mu.expand(shape), self.scale.expand(shape), self.c).rsample()

    def mode(self) -> Tensor:
        return self.mu

    def log_prob(self, z: Tensor) -> Tensor:
        c, dtype = self.c, result_dtype(z)
        z, scale = z.double(), self.scale.double()  # in float64, as rsample
        mu = self.mu.double().expand_as(z)
        v = transport_to0(mu, logmap(mu, z, c), c) * 2.0  # lambda_mu log_mu(z), (..., D)
        gaussian = torch.distributions.Normal(torch.zeros_like(scale), scale).log_prob(v).sum(-1)
        d = distance(mu, z, c)
        return (gaussian - (self.dim - 1) * log_sinhc(math.sqrt(c) * d)).to(dtype)


def wrapped_normal_prior(
    dim: int, sigma: float, c: float, device: torch.device | None = None
) -> WrappedNormal:
    """N^W(0, sigma^2 I) on B_c^``dim``: the Poincaré VAE's prior."""
    return WrappedNormal(torch.zeros(dim, device=device), torch.full((dim,), float(sigma), device=device), c)


# -- the gyroplane layer --------------------------------------------------------------------------
class GyroplaneLayer(nn.Module):
    """Points z of B_c^D (..., D) -> (..., K): the signed, scaled distances of z to K gyroplanes
    H_k = {z : <-p_k ⊕ z, a_k> = 0} (the hyperbolic multinomial logistic regression of Ganea et al.
    2018, Sec. 3.1; the Poincaré VAE's first decoder layer, Mathieu et al. 2019, Sec. 3.3):

        f_k(z) = ||a_k||_{p_k} d_c(z, H_k) sign(<-p_k ⊕ z, a_k>)
               = (lambda_{p_k} |a_k| / sqrt(c)) arsinh(2 sqrt(c) <-p_k ⊕ z, a_k> / ((1 - c |-p_k ⊕ z|^2) |a_k|))

    The offsets p_k = exp_0(b_k) and the normals a_k = transport0(p_k, w_k) are parameterised by
    Euclidean b_k, w_k in the tangent space at 0, so lambda_{p_k} |a_k| = 2 |w_k|. As c -> 0,
    f_k(z) -> 4 <w_k, z - b_k>, an affine layer. Computed in float64 (outside autocast) and
    returned in z's dtype, at least float32;
    inputs outside the ball (a traversal's far end) are first pulled inside by :func:`project`.
    """

    def __init__(self, in_features: int, out_features: int, c: float = 1.0) -> None:
        super().__init__()
        self.c = c
        self.weight = nn.Parameter(torch.empty(out_features, in_features))  # w_k, (K, D)
        self.bias = nn.Parameter(torch.zeros(out_features, in_features))  # b_k, (K, D)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, z: Tensor) -> Tensor:
        c, sqrt_c = self.c, math.sqrt(self.c)
        dtype, result = torch.float64, result_dtype(z)
        with torch.autocast(z.device.type, enabled=False):
            z = project(z.to(dtype), c).unsqueeze(-2)  # (..., 1, D)
            weight, bias = self.weight.to(dtype), self.bias.to(dtype)
            offset = expmap0(bias, c)  # p_k, (K, D)
            normal = transport0(offset, weight, c)  # a_k, (K, D)
            difference = mobius_add(-offset, z, c)  # -p_k ⊕ z, (..., K, D)
            a_norm = norm(normal).squeeze(-1)  # (K,)
            inner = (difference * normal).sum(-1)  # (..., K)
            shrink = (1 - c * difference.pow(2).sum(-1)).clamp_min(MIN_NORM)
            length = 2.0 * norm(weight).squeeze(-1)  # lambda_p |a| = 2 |w|, (K,)
            return (length / sqrt_c * torch.asinh(2 * sqrt_c * inner / (shrink * a_norm))).to(result)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, c={self.c}"


def softplus_scale(x: Tensor, floor: float = 1e-5) -> Tensor:
    """sigma = softplus(x) + floor: a positive scale that never reaches 0."""
    return F.softplus(x) + floor
