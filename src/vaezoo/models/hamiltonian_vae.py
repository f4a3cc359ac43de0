"""The Hamiltonian VAE of Caterini, Doucet & Sejdinovic, "Hamiltonian Variational Auto-Encoder"
(NeurIPS 2018): the Gaussian posterior's sample moved by tempered Hamiltonian dynamics on the
model's own log p(x, z) before it is decoded."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.nn.distributions import DiagonalGaussian, log_standard_normal
from vaezoo.nn.hamiltonian import gradient, leapfrog, tempered_flow
from vaezoo.registry import register_model


class HamiltonianOutput(NamedTuple):
    """``forward``'s result: the VAE's ``(recons, input, mu, log_var)``, then the flow's ends."""

    recons: Tensor  # (B, C, H, W) the decoding of z_K
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D)
    log_var: Tensor  # (B, D)
    z0: Tensor  # (B, D) the posterior's draw
    z: Tensor  # (B, D) z_K, after the flow
    rho: Tensor  # (B, D) rho_K, the final momentum
    log_momentum: Tensor  # (B,) the momentum's terms of the ELBO (see HamiltonianVAE)


def unconstrained(module: nn.Module, name: str, raw: float, learn: bool) -> None:
    """Store ``raw`` (a log or a logit) as ``module.<name>``: a parameter if ``learn``, else a
    buffer that follows the module's device (left out of the state dict: the config holds it)."""
    if learn:
        module.register_parameter(name, nn.Parameter(torch.tensor(raw)))
    else:
        module.register_buffer(name, torch.tensor(raw), persistent=False)


@register_model(aliases=("HamVAE",))
class HamiltonianVAE(VanillaVAE):
    """Hamiltonian VAE (Caterini, Doucet & Sejdinovic 2018, "Hamiltonian Variational
    Auto-Encoder", Alg. 1 and 2; pythae calls it HVAE, a name that PyTorch-VAE's hierarchical
    HVAE holds here).

    z_0 ~ q(z|x) = N(mu(x), sigma^2(x)), gamma ~ N(0, I), rho_0 = gamma / sqrt(beta_0); then
    ``n_lf`` leapfrog steps of size ``eps_lf`` on H(z, rho) = U(z) + |rho|^2 / 2 with
    U(z) = -log p(x, z) = recon(x, dec(z)) + |z|^2 / 2 (dU/dz by autograd, kept in the graph while
    training), each followed by the tempering rho <- sqrt(beta_{k-1} / beta_k) rho on the quadratic
    schedule from ``beta_zero`` to beta_K = 1 (:mod:`vaezoo.nn.hamiltonian`). z_K is decoded.

    The ELBO (the flow's change of variables; leapfrog preserves volume, the tempering scales
    rho by sqrt(beta_0)^D in all)::

        ELBO = log p(x|z_K) + log N(z_K; 0, I) + log N(rho_K; 0, I)
               - log q(z_0|x) - log N(rho_0; 0, I / beta_0) + (D/2) log beta_0
        and  - log N(rho_0; 0, I/beta_0) + (D/2) log beta_0 = - log N(gamma; 0, I)

    so ``log_momentum`` = log N(rho_K; 0, I) - log N(gamma; 0, I), both normalised (pythae leaves
    out the gamma term, which has no gradient and mean D/2 (1 + log 2 pi): its loss is shifted). With
    ``n_lf = 0`` the flow is the identity on z and rho_K = gamma: the ELBO is the VAE's at z_0.
    Loss: ``Reconstruction_Loss`` (-log p(x|z_K) at ``recon_reduction``'s scale, as the VAE's) +
    M_N * ``KLD``, the one-sample estimate log q(z_0|x) - log N(z_K) - ``log_momentum``; with
    ``recon_reduction="sum"`` and M_N = 1 the loss is -ELBO (mse: up to a constant).

    ``eps_lf`` and ``beta_zero`` (in (0, 1]) are learned with ``learn_eps_lf`` /
    ``learn_beta_zero``, through their log and logit so they stay positive. Each training step
    differentiates through n_lf + 1 decoder gradients: several times a VAE step.
    Sampling, embedding, ``kl_per_dimension`` and the likelihood bound are the VAE's (the prior;
    the posterior mean; q(z_0|x)'s closed-form KL, the encoder's, not the flow's; q(z_0|x) as the
    importance proposal). Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD``.
    """

    output_cls: type[NamedTuple] = HamiltonianOutput
    kl_terms = ()  # its KLD is a Monte Carlo estimate through the flow

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        *,
        n_lf: int = 3,
        eps_lf: float = 0.001,
        beta_zero: float = 0.3,
        learn_eps_lf: bool = False,
        learn_beta_zero: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        if n_lf < 0 or eps_lf <= 0 or not 0 < beta_zero <= 1:
            raise ValueError(
                f"need n_lf >= 0, eps_lf > 0, 0 < beta_zero <= 1; got {n_lf}, {eps_lf}, {beta_zero}"
            )
        self.n_lf = n_lf
        beta_zero = min(beta_zero, 1.0 - 1e-6)  # its logit is finite
        unconstrained(self, "log_eps_lf", math.log(eps_lf), learn_eps_lf)  # eps = exp(.) > 0
        unconstrained(self, "logit_beta_zero", math.log(beta_zero / (1 - beta_zero)), learn_beta_zero)

    log_eps_lf: Tensor
    logit_beta_zero: Tensor

    @property
    def eps_lf(self) -> Tensor:
        """The leapfrog step size, exp(log_eps_lf) > 0."""
        return self.log_eps_lf.exp()

    @property
    def beta_zero(self) -> Tensor:
        """The initial inverse temperature, sigmoid(logit_beta_zero) in (0, 1)."""
        return torch.sigmoid(self.logit_beta_zero)

    def potential(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """U(z) = -log p(x, z) up to a constant, (B,): the reconstruction term plus |z|^2 / 2."""
        return lambda z: self.reconstruction_loss(self.decode_params(z), x) + 0.5 * (z**2).sum(-1)

    def forward(self, input: Tensor, **kwargs: Any) -> NamedTuple:  # HamiltonianOutput (+ recon_params)
        posterior = self.encode(input)
        z0 = posterior.rsample()  # (B, D)
        gamma = torch.randn_like(z0)
        z, rho, log_momentum = self.flow(input, z0, gamma, posterior)
        recons, params = self.decode_with_params(z)
        return self.pack(
            recons=recons, input=input, z0=z0, z=z, rho=rho, log_momentum=log_momentum,
            recon_params=params, **posterior.fields(),
        )  # fmt: skip

    def flow(
        self, x: Tensor, z0: Tensor, gamma: Tensor, posterior: DiagonalGaussian
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(z_K, rho_K, log N(rho_K) - log N(gamma)) from z_0 and the momentum's noise gamma."""
        create_graph = torch.is_grad_enabled()  # training: the loss differentiates through the steps
        potential = self.potential(x)
        grad_u = lambda z: gradient(potential, z, create_graph)  # noqa: E731
        state: dict[str, Tensor] = {}  # dU/dz at the current z, reused by the next step

        def step(z: Tensor, rho: Tensor) -> tuple[Tensor, Tensor]:
            z, rho, state["grad"] = leapfrog(z, rho, grad_u, self.eps_lf, state.get("grad"))
            return z, rho

        beta_zero = self.beta_zero
        z, rho = tempered_flow(z0, gamma / beta_zero.sqrt(), step, beta_zero, self.n_lf)
        return z, rho, log_standard_normal(rho) - log_standard_normal(gamma)

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """M_N times the Monte Carlo KLD through the flow, averaged over the batch."""
        log_q = DiagonalGaussian(output.mu, output.log_var).log_prob(output.z0)
        kld = (log_q - log_standard_normal(output.z) - output.log_momentum).mean()
        return kl_weight * kld, {"KLD": kld}
