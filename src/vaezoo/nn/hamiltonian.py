"""Hamiltonian dynamics in the latent space: the pieces the Hamiltonian VAEs and the manifold
sampler share.

- :func:`gradient`: dU/dz of a per-example potential by autograd (kept in the graph when training);
- :func:`leapfrog`: one Stormer-Verlet step for H(z, rho) = U(z) + |rho|^2 / 2;
- :func:`tempering_schedule` and :func:`tempered_flow`: K steps, the momentum cooled after each one
  (Caterini et al. 2018, Sec. 3.2);
- :class:`KernelMetric` and :func:`generalized_leapfrog`: the RHVAE's learned metric and the
  implicit integrator of a position-dependent kinetic energy
  (Girolami & Calderhead 2011, Eqs. 16-18; Chadebec et al. 2020, Sec. 3).

Shapes: latents and momenta (B, D), metrics (B, D, D), per-example values (B,).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Potential = Callable[[Tensor], Tensor]  # z (B, D) -> U(z) (B,)
Gradient = Callable[[Tensor], Tensor]  # z (B, D) -> dU/dz (B, D)
Step = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (z, rho) -> (z', rho')

MAX_EXPONENT = 60.0  # |z - c|^2 / T^2 beyond this weighs exp(-60) ~ 1e-26: nothing, and no underflow


def gradient(fn: Potential, z: Tensor, create_graph: bool) -> Tensor:
    """d(sum_b fn(z)_b)/dz, (B, D): each example's gradient, as the examples are independent.

    ``create_graph``: keep the gradient in the autograd graph (training: the loss is
    differentiated through the leapfrog steps). Works under ``torch.no_grad`` too (evaluation)."""
    with torch.enable_grad():
        if not (create_graph and z.requires_grad):
            z = z.detach().requires_grad_(True)
        value = fn(z)
        (grad,) = torch.autograd.grad(value.sum(), z, create_graph=create_graph, allow_unused=True)
    return torch.zeros_like(z) if grad is None else grad  # None: fn does not depend on z


def leapfrog(
    z: Tensor, rho: Tensor, grad_u: Gradient, eps: Tensor | float, grad: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """One leapfrog step of H = U(z) + |rho|^2 / 2: half a momentum step, a full position step,
    half a momentum step. ``grad``: dU/dz at ``z`` if already known (the last step's). Returns
    (z', rho', dU/dz at z'). Volume preserving and time reversible (Neal 2011, Sec. 2.3)."""
    grad = grad_u(z) if grad is None else grad
    rho = rho - 0.5 * eps * grad
    z = z + eps * rho
    grad = grad_u(z)
    return z, rho - 0.5 * eps * grad, grad


def tempering_schedule(beta_zero: Tensor, n_steps: int) -> list[Tensor]:
    """sqrt(beta_k) for k = 0..K, the quadratic schedule of Caterini et al. (2018, Sec. 3.2):
    1/sqrt(beta_k) = (1 - 1/sqrt(beta_0)) (k/K)^2 + 1/sqrt(beta_0), from beta_0 up to beta_K = 1."""
    inverse_root = 1.0 / beta_zero.sqrt()
    if n_steps == 0:
        return [1.0 / inverse_root]
    return [1.0 / ((1.0 - inverse_root) * (k / n_steps) ** 2 + inverse_root) for k in range(n_steps + 1)]


def tempered_flow(
    z: Tensor, rho: Tensor, step: Step, beta_zero: Tensor, n_steps: int
) -> tuple[Tensor, Tensor]:
    """K = ``n_steps`` integrator steps from (z_0, rho_0), each followed by the tempering
    rho <- sqrt(beta_{k-1} / beta_k) rho. The flow's Jacobian is beta_0^{D/2} (the leapfrog steps
    preserve volume). With K = 0 the momentum is cooled to beta = 1 at once: rho_K = sqrt(beta_0) rho_0."""
    roots = tempering_schedule(beta_zero, n_steps)
    if n_steps == 0:
        return z, rho * roots[0]
    for k in range(1, n_steps + 1):
        z, rho = step(z, rho)
        rho = rho * (roots[k - 1] / roots[k])
    return z, rho


# -- the Riemannian case (RHVAE) ------------------------------------------------------------------
def cholesky(matrix: Tensor, what: str) -> Tensor:
    """The lower Cholesky factor of symmetric positive definite matrices (B, D, D); a clear error
    naming ``what`` if one is not (a NaN, or a metric that lost its regularisation)."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if bool((info != 0).any()):
        bad = (info != 0).nonzero().flatten()[:5].tolist()
        raise FloatingPointError(f"{what}: the metric is not positive definite (or not finite) at rows {bad}")
    return factor


def log_det_from_cholesky(factor: Tensor) -> Tensor:
    """log det(C C^T) = 2 sum log diag C, (B,)."""
    return 2.0 * torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(-1)


class KernelMetric:
    """The RHVAE's metric (Chadebec et al. 2020, Eq. 9), from centroids c_i (N, D) and positive
    semi-definite matrices M_i = L_i L_i^T (N, D, D)::

        G^{-1}(z) = sum_i M_i w_i(z) + lambda I,    w_i(z) = exp(-|z - c_i|^2 / T^2)

    Positive definite everywhere for lambda > 0; lambda I far from the centroids, and with none
    (N = 0). The kinetic energy K(z, rho) = rho^T G^{-1}(z) rho / 2 + log det G(z) / 2
    (-log N(rho; 0, G) up to (D/2) log 2 pi) and its z-gradient at fixed rho are in closed form,
    from G^{-1}'s Cholesky factor: no inverse of G^{-1} is formed but the factor's own."""

    def __init__(
        self, centroids: Tensor, matrices: Tensor, temperature: float, regularization: float
    ) -> None:
        self.centroids, self.matrices = centroids, matrices
        self.temperature, self.regularization = temperature, regularization

    def weights(self, z: Tensor) -> Tensor:
        """w_i(z), (B, N), in (0, 1]; the exponent is clamped (no underflow to exact zeros)."""
        distance = ((z.unsqueeze(1) - self.centroids.unsqueeze(0)) ** 2).sum(-1) / self.temperature**2
        return torch.exp(-distance.clamp(max=MAX_EXPONENT))

    def inverse(self, z: Tensor) -> Tensor:
        """G^{-1}(z), (B, D, D)."""
        eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
        return (
            torch.einsum("bn,nij->bij", self.weights(z), self.matrices.to(z.dtype))
            + self.regularization * eye
        )

    def velocity(self, z: Tensor, rho: Tensor) -> Tensor:
        """dK/drho = G^{-1}(z) rho, (B, D)."""
        return torch.einsum("bij,bj->bi", self.inverse(z), rho)

    def log_det(self, z: Tensor) -> Tensor:
        """log det G(z) = -log det G^{-1}(z), (B,)."""
        return -log_det_from_cholesky(cholesky(self.inverse(z), "log det G"))

    def kinetic(self, z: Tensor, rho: Tensor) -> Tensor:
        """K(z, rho) = rho^T G^{-1}(z) rho / 2 + log det G(z) / 2, (B,)."""
        return 0.5 * (torch.einsum("bi,bi->b", rho, self.velocity(z, rho)) + self.log_det(z))

    def log_normal(self, z: Tensor, rho: Tensor) -> Tensor:
        """log N(rho; 0, G(z)), (B,), with its normaliser."""
        return -self.kinetic(z, rho) - 0.5 * rho.shape[-1] * math.log(2 * math.pi)

    def kinetic_grad(self, z: Tensor, rho: Tensor) -> Tensor:
        """dK/dz at fixed rho, (B, D): sum_i dw_i/dz (rho^T M_i rho - tr(G M_i)) / 2, with
        dw_i/dz = -2 (z - c_i) w_i / T^2 and G = G^{-1}'s inverse from its Cholesky factor."""
        weights = self.weights(z)  # (B, N)
        dweights = -2.0 / self.temperature**2 * (z.unsqueeze(1) - self.centroids) * weights.unsqueeze(-1)
        g = torch.cholesky_inverse(cholesky(self.inverse(z), "dK/dz"))  # (B, D, D), G(z)
        matrices = self.matrices.to(z.dtype)
        quadratic = torch.einsum("bi,nij,bj->bn", rho, matrices, rho)  # (B, N)
        trace = torch.einsum("bij,nij->bn", g, matrices)  # tr(G M_i), both symmetric
        return torch.einsum("bnd,bn->bd", dweights, 0.5 * (quadratic - trace))


def generalized_leapfrog(
    z: Tensor,
    rho: Tensor,
    grad_u: Gradient,
    metric: KernelMetric,
    eps: Tensor | float,
    n_fixed_point: int,
    grad: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One generalized leapfrog step of H(z, rho) = U(z) + K(z, rho) under ``metric``
    (Girolami & Calderhead 2011, Eqs. 16-18): the two implicit half steps are solved by
    ``n_fixed_point`` fixed-point iterations. Returns (z', rho', dU/dz at z'), as :func:`leapfrog`,
    which it is when G is the identity (then every iteration gives the explicit update)."""
    grad = grad_u(z) if grad is None else grad  # dU/dz, the decoder's: once per position
    rho_half = rho
    for _ in range(n_fixed_point):  # Eq. 16: rho' = rho - eps/2 dH/dz(z, rho')
        rho_half = rho - 0.5 * eps * (grad + metric.kinetic_grad(z, rho_half))
    velocity = metric.velocity(z, rho_half)
    z_new = z
    for _ in range(n_fixed_point):  # Eq. 17: z' = z + eps/2 (G^{-1}(z) + G^{-1}(z')) rho'
        z_new = z + 0.5 * eps * (velocity + metric.velocity(z_new, rho_half))
    grad = grad_u(z_new)
    return z_new, rho_half - 0.5 * eps * (grad + metric.kinetic_grad(z_new, rho_half)), grad  # Eq. 18
