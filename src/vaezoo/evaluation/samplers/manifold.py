"""The manifold sampler: Hamiltonian Monte Carlo on the Riemannian uniform measure of a learned
latent metric (Chadebec & Allassonniere 2022, "A Geometric Perspective on Variational
Autoencoders", Sec. 3.2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from torch import Tensor

from vaezoo.evaluation.samplers.base import ModelSampler, SamplerNotApplicableError, register_sampler
from vaezoo.nn.hamiltonian import KernelMetric, leapfrog

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

STARTS = ("centroids", "prior")


class MetricModel(Protocol):
    """What a model that declares ``latent_metric`` provides."""

    def metric(self) -> KernelMetric: ...

    def metric_centroids(self) -> tuple[Tensor, Tensor]: ...


@register_sampler
class ManifoldSampler(ModelSampler):
    """Draws z from the density proportional to sqrt(det G^{-1}(z)) of a model that declares
    ``latent_metric`` (the RHVAE): ``model.metric()`` is its trained metric, a
    :class:`~vaezoo.nn.hamiltonian.KernelMetric` (G^{-1}(z), log det G(z) and its gradient in
    closed form), and ``model.metric_centroids()`` the training codes it is built on. G^{-1} is
    what the 2022 paper calls the metric G, so this is its "Riemannian uniform" measure, high near the training codes (where G^{-1} is
    large) and flat, lambda^{D/2}, far from them; pythae's RHVAESampler draws the same density.

    Each chain starts at a random stored centroid (``start="centroids"``; prior draws if the
    model has none yet) or at a prior draw (``start="prior"``), then makes ``mcmc_steps`` HMC
    moves: a fresh momentum rho ~ N(0, I), ``n_lf`` leapfrog steps of size ``eps_lf`` on
    U(z) = -log sqrt(det G^{-1}(z)) = log det G(z) / 2 (its gradient in closed form: the
    kinetic energy's at rho = 0; no decoder is involved), and a
    Metropolis accept with probability min(1, exp(H_0 - H)), H = U + |rho|^2 / 2 (a non-finite
    proposal is rejected). Chains run ``batch_size`` at a time. Nothing to fit.
    """

    name = "manifold"
    summary = "HMC on the learned latent metric's uniform measure (models with latent_metric: RHVAE)"

    def __init__(
        self,
        model: BaseVAE,
        mcmc_steps: int = 100,
        n_lf: int = 15,
        eps_lf: float = 0.03,
        start: str = "centroids",
        batch_size: int = 256,
    ) -> None:
        super().__init__(model)
        if mcmc_steps < 0 or n_lf < 1 or eps_lf <= 0 or batch_size < 1 or start not in STARTS:
            raise ValueError(
                f"need mcmc_steps >= 0, n_lf >= 1, eps_lf > 0, batch_size >= 1 and start in {STARTS}; got "
                f"{mcmc_steps}, {n_lf}, {eps_lf}, {batch_size}, {start!r}"
            )
        self.mcmc_steps, self.n_lf, self.eps_lf = mcmc_steps, n_lf, eps_lf
        self.start, self.batch_size = start, batch_size
        self.metric_model = cast(MetricModel, model)  # check() saw that it declares latent_metric

    @classmethod
    def check(cls, model: BaseVAE) -> None:
        if not getattr(model, "latent_metric", False):
            raise SamplerNotApplicableError(
                f"the manifold sampler needs a learned latent metric, which {type(model).__name__} does not "
                "declare (latent_metric); models that have one: RHVAE"
            )

    def config(self) -> dict[str, Any]:
        return {
            "mcmc_steps": self.mcmc_steps,
            "n_lf": self.n_lf,
            "eps_lf": self.eps_lf,
            "start": self.start,
            "batch_size": self.batch_size,
        }

    def log_density(self, z: Tensor) -> Tensor:
        """log sqrt(det G^{-1}(z)), (B,): the target's log density up to a constant."""
        return -0.5 * self.metric_model.metric().log_det(z)

    def starts(self, num_samples: int, device: torch.device) -> Tensor:
        """The chains' first states, (n, D): random stored centroids, or prior draws."""
        centroids = self.metric_model.metric_centroids()[0] if self.start == "centroids" else None
        if centroids is None or centroids.shape[0] == 0:
            return self.model.sample_prior(num_samples, device)
        picks = torch.randint(centroids.shape[0], (num_samples,), device=centroids.device)
        return centroids[picks].to(device)

    def draw(self, num_samples: int, device: torch.device) -> Tensor:
        chunks = [self.chains(self.starts(n, device)) for n in self.chunk_sizes(num_samples)]
        return torch.cat(chunks)

    def chunk_sizes(self, num_samples: int) -> list[int]:
        full, rest = divmod(num_samples, self.batch_size)
        return [self.batch_size] * full + ([rest] if rest else [])

    def chains(self, z: Tensor) -> Tensor:
        """``mcmc_steps`` HMC moves of the chains at z (n, D); their last states."""
        metric = self.metric_model.metric()
        potential = lambda q: 0.5 * metric.log_det(q)  # noqa: E731  U = -log sqrt(det G^{-1})
        zero = torch.zeros_like(z)
        grad_u = lambda q: metric.kinetic_grad(q, zero)  # noqa: E731  dK/dz at rho = 0 is dU/dz
        with torch.no_grad():
            energy = potential(z)  # (n,)
            for _ in range(self.mcmc_steps):
                rho = torch.randn_like(z)
                proposal, momentum, grad = z, rho, None
                for _ in range(self.n_lf):
                    proposal, momentum, grad = leapfrog(proposal, momentum, grad_u, self.eps_lf, grad)
                finite = torch.isfinite(proposal).all(-1) & torch.isfinite(momentum).all(-1)  # (n,)
                proposal = torch.where(finite.unsqueeze(-1), proposal, z)  # rejected below
                momentum = torch.where(finite.unsqueeze(-1), momentum, rho)
                new_energy = potential(proposal)
                log_accept = energy - new_energy + 0.5 * ((rho**2).sum(-1) - (momentum**2).sum(-1))
                accept = finite & (torch.rand_like(log_accept).log() < log_accept)
                z = torch.where(accept.unsqueeze(-1), proposal, z)
                energy = torch.where(accept, new_energy, energy)
        return z
