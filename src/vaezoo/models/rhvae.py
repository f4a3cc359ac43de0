"""The Riemannian Hamiltonian VAE of Chadebec, Thibeau-Sutre, Burgos & Allassonniere,
"Geometry-Aware Hamiltonian Variational Auto-Encoder" (arXiv:2010.11518, 2020): the Hamiltonian
VAE's flow with a kinetic energy under a metric on the latent space that is learned with it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vaezoo.models.hamiltonian_vae import HamiltonianVAE
from vaezoo.nn.distributions import DiagonalGaussian, log_standard_normal
from vaezoo.nn.hamiltonian import (
    KernelMetric,
    cholesky,
    generalized_leapfrog,
    gradient,
    log_det_from_cholesky,
    tempered_flow,
)
from vaezoo.registry import register_model

MAX_LOG_DIAGONAL = 8.0  # the metric factors' log-diagonal is clamped to +-8 (entries in e^-8..e^8)


class MetricGaussian(DiagonalGaussian):
    """q(z|x) = N(mu, diag sigma^2) carrying the metric's matrices M(x) = L(x) L(x)^T, (B, D, D)."""

    def __init__(self, mu: Tensor, log_var: Tensor, metrics: Tensor) -> None:
        super().__init__(mu, log_var)
        self.metrics = metrics


def lower_triangular(raw: Tensor, dim: int) -> Tensor:
    """(B, D(D+1)/2) -> L (B, D, D): lower triangular with a positive (exp) diagonal."""
    diagonal, below = raw[:, :dim], raw[:, dim:]
    rows, cols = torch.tril_indices(dim, dim, offset=-1, device=raw.device)
    strictly_lower = raw.new_zeros(raw.shape[0], dim, dim)
    strictly_lower[:, rows, cols] = below
    return strictly_lower + torch.diag_embed(diagonal.clamp(-MAX_LOG_DIAGONAL, MAX_LOG_DIAGONAL).exp())


@register_model
class RHVAE(HamiltonianVAE):
    """Riemannian Hamiltonian VAE (Chadebec, Thibeau-Sutre, Burgos & Allassonniere 2020,
    "Geometry-Aware Hamiltonian Variational Auto-Encoder", Eqs. 9-13).

    The metric: a head on the encoder's features gives L(x), lower triangular with a positive
    diagonal, and (Eq. 9)::

        G^{-1}(z) = sum_i L_i L_i^T exp(-|z - c_i|^2 / T^2) + lambda I

    over centroids c_i = mu(x_i) with their L_i = L(x_i), temperature T = ``temperature`` and
    lambda = ``regularization`` > 0 (positive definite everywhere; lambda I far from the
    centroids). While training, the centroids are the batch's own (the metric head learns through
    the loss); each training step also writes the batch's (mu, L L^T), detached, into fixed-size
    buffers of the ``num_centroids`` most recent training examples. Outside training the metric is
    that of the buffers, which save and load with the state dict; before any training step they
    are empty and the metric is lambda I.

    The flow: rho_0 = C^{-T} gamma / sqrt(beta_0) ~ N(0, G(z_0) / beta_0), C C^T = G^{-1}(z_0)
    (a Cholesky factor: no inverse), then ``n_lf`` generalized leapfrog steps (Eqs. 11-13; the two
    implicit half steps by ``n_fixed_point`` fixed-point iterations) on
    H(z, rho) = U(z) + log det G(z) / 2 + rho^T G^{-1}(z) rho / 2, each tempered as in
    :class:`HamiltonianVAE`. As there, the change of variables gives the ELBO, now with
    ``log_momentum`` = log N(rho_K; 0, G(z_K)) - log N(gamma; 0, I) + log det G(z_0) / 2; with
    ``n_lf = 0`` it is zero and the ELBO is the VAE's. The loss and its keys are the Hamiltonian
    VAE's. A non-finite latent or momentum stops the flow with an error naming the leapfrog step.

    Declares ``latent_metric``: ``metric()`` is the trained metric (a
    :class:`~vaezoo.nn.hamiltonian.KernelMetric` on the buffers; ``metric_inverse(z)`` its G^{-1}),
    and the ``manifold`` sampler draws from the density proportional to sqrt(det G^{-1}(z)).
    """

    latent_metric: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        *,
        temperature: float = 1.5,
        regularization: float = 0.01,
        n_fixed_point: int = 3,
        num_centroids: int = 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        if temperature <= 0 or regularization <= 0 or n_fixed_point < 1 or num_centroids < 1:
            raise ValueError(
                "need temperature > 0, regularization > 0, n_fixed_point >= 1 and num_centroids >= 1; got "
                f"{temperature}, {regularization}, {n_fixed_point}, {num_centroids}"
            )
        self.temperature, self.regularization, self.n_fixed_point = temperature, regularization, n_fixed_point
        self.metric_head = nn.Linear(self.encoder_features(), latent_dim * (latent_dim + 1) // 2)
        self.register_buffer("centroids", torch.zeros(num_centroids, latent_dim))  # (N, D)
        self.register_buffer("centroid_metrics", torch.zeros(num_centroids, latent_dim, latent_dim))
        self.register_buffer("centroids_seen", torch.zeros((), dtype=torch.long))  # training examples written

    centroids: Tensor
    centroid_metrics: Tensor
    centroids_seen: Tensor

    def encode(self, input: Tensor) -> MetricGaussian:
        """q(z|x) = N(mu(x), diag sigma^2(x)) with the metric's L(x) L(x)^T; unpacks as ``[mu, log_var]``."""
        features = self.encoder(input)
        mu, log_var = self.head(features)  # (B, D) each
        factor = lower_triangular(self.metric_head(features), self.latent_dim)  # (B, D, D)
        return MetricGaussian(mu, log_var, factor @ factor.mT)

    # -- the metric ---------------------------------------------------------------------------------
    def metric_centroids(self) -> tuple[Tensor, Tensor]:
        """The stored centroids (n, D) and their matrices L L^T (n, D, D), n <= ``num_centroids``."""
        filled = int(min(int(self.centroids_seen), self.centroids.shape[0]))
        return self.centroids[:filled], self.centroid_metrics[:filled]

    def metric(self) -> KernelMetric:
        """The trained metric, on the stored centroids (lambda I before any training step)."""
        return KernelMetric(*self.metric_centroids(), self.temperature, self.regularization)

    def metric_inverse(self, z: Tensor) -> Tensor:
        """G^{-1}(z) of the trained metric, (B, D, D)."""
        return self.metric().inverse(z)

    def remember(self, posterior: MetricGaussian) -> None:
        """Write the batch's (mu, L L^T), detached, over the oldest stored centroids."""
        size = self.centroids.shape[0]
        count = min(posterior.mu.shape[0], size)
        slots = (self.centroids_seen + torch.arange(count, device=self.centroids.device)) % size
        self.centroids[slots] = posterior.mu[-count:].detach().to(self.centroids.dtype)
        self.centroid_metrics[slots] = posterior.metrics[-count:].detach().to(self.centroid_metrics.dtype)
        self.centroids_seen += count

    # -- the flow -----------------------------------------------------------------------------------
    def flow(
        self, x: Tensor, z0: Tensor, gamma: Tensor, posterior: DiagonalGaussian
    ) -> tuple[Tensor, Tensor, Tensor]:
        if self.training and isinstance(posterior, MetricGaussian):
            # the batch's own centroids, so the metric head learns; then kept for after training
            metric = KernelMetric(posterior.mu, posterior.metrics, self.temperature, self.regularization)
            self.remember(posterior)
        else:
            metric = self.metric()
        potential = self.potential(x)
        create_graph = torch.is_grad_enabled()
        grad_u = lambda z: gradient(potential, z, create_graph)  # noqa: E731
        state: dict[str, Any] = {"k": 0}

        def step(z: Tensor, rho: Tensor) -> tuple[Tensor, Tensor]:
            state["k"] += 1
            try:
                z, rho, state["grad"] = generalized_leapfrog(
                    z, rho, grad_u, metric, self.eps_lf, self.n_fixed_point, state.get("grad")
                )
                if not bool(torch.isfinite(z).all() and torch.isfinite(rho).all()):
                    raise FloatingPointError("gave a non-finite latent or momentum")
            except FloatingPointError as err:
                raise FloatingPointError(
                    f"RHVAE: generalized leapfrog step {state['k']} of {self.n_lf}: {err} "
                    f"(eps_lf = {float(self.eps_lf):.3g}); lower eps_lf or the learning rate"
                ) from err
            return z, rho

        beta_zero = self.beta_zero
        chol0 = cholesky(metric.inverse(z0), "RHVAE: the metric at z_0")  # (B, D, D), C C^T = G^{-1}(z_0)
        rho0 = torch.linalg.solve_triangular(chol0.mT, gamma.unsqueeze(-1), upper=True).squeeze(-1)
        z, rho = tempered_flow(z0, rho0 / beta_zero.sqrt(), step, beta_zero, self.n_lf)
        log_det_g0 = -log_det_from_cholesky(chol0)
        log_momentum = metric.log_normal(z, rho) - log_standard_normal(gamma) + 0.5 * log_det_g0
        return z, rho, log_momentum
