"""The hyperspherical VAE (S-VAE) of Davidson, Falorsi, De Cao, Kipf & Tomczak 2018: a von
Mises-Fisher posterior on the unit sphere and a uniform prior on it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.models.autoencoder import ConvAutoencoder
from vaezoo.nn.hyperspherical import (
    MAX_REJECTION_ROUNDS,
    HypersphericalUniform,
    VonMisesFisher,
    wood_log_noise_density,
)
from vaezoo.registry import register_model


class SVAEOutput(NamedTuple):
    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D), unit norm: the mean direction of q(z|x)
    kappa: Tensor  # (B, 1), > 0: its concentration
    z: Tensor  # (B, D), on the sphere
    noise: Tensor  # (B, 1), the accepted eps of Wood's sampler that z was made from


class VMFHead(nn.Module):
    """Flat features -> (mu, kappa): a unit mean direction (B, D) and a concentration (B, 1) >= 1.

    The floor of 1 (softplus + 1) keeps kappa away from 0, where the posterior is nearly uniform
    and its gradient in mu vanishes."""

    def __init__(self, in_features: int, latent_dim: int) -> None:
        super().__init__()
        self.fc_mu = nn.Linear(in_features, latent_dim)
        self.fc_kappa = nn.Linear(in_features, 1)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mu = F.normalize(self.fc_mu(h), dim=-1)  # (B, D)
        kappa = F.softplus(self.fc_kappa(h)) + 1.0  # (B, 1)
        return mu, kappa


@register_model(aliases=("HypersphericalVAE", "S-VAE"))
class SVAE(ConvAutoencoder):
    """Hyperspherical VAE (Davidson et al. 2018, "Hyperspherical Variational Auto-Encoders",
    UAI): q(z|x) = vMF(mu(x), kappa(x)) on S^{D-1}, the unit sphere in R^D (D = ``latent_dim``),
    and p(z) = U(S^{D-1}):

        loss = mean_batch[ recon(x, x_hat) ] + M_N * mean_batch[ KL(vMF(mu, kappa) || U(S^{D-1})) ]

    with KL = kappa A_D(kappa) + log C_D(kappa) + log |S^{D-1}| in closed form (their Sec. 3; A_D the
    Bessel ratio I_{D/2} / I_{D/2-1}, from the exponentially scaled Bessel functions so that it is
    finite for large kappa), independent of mu. z is drawn by Wood's (1994) rejection sampler for
    w = mu^T z (their Algorithm 1) and a Householder reflection of e1 onto mu.

    Gradients: the accepted proposal eps is the noise, and z = h(eps, kappa, mu) is differentiated
    in kappa and mu (the g_rep term of their reparameterisation gradient, after Naesseth et al.
    2017). Their correction term g_cor = E[f(z) d/dkappa log pi(eps; kappa)], pi the law of the
    accepted eps (:func:`~vaezoo.nn.hyperspherical.wood_log_noise_density`), is dropped by
    default, as the paper allows. It touches kappa only: the accepted eps does not depend on mu,
    so the gradient in mu is unbiased either way. Without it the gradient in kappa is biased low,
    the more so in few dimensions and at small kappa; measured on d/dkappa E[mu^T z] (g_rep over
    the exact A_D'): D = 2: 0.56 at kappa = 1, 0.89 at 10; D = 3: 0.70 at 3, 0.90 at 10, 0.98 at
    50; D = 10: 0.92 at 10; D = 64: 0.99 or more. ``gradient_correction=True`` adds g_cor with f
    the per-example reconstruction term and a leave-one-out batch mean as its baseline (a
    surrogate of value 0: the logged loss is unchanged), which makes the kappa-gradient unbiased
    at the price of a score-function term's variance; the KL's gradient is exact in both cases.

    ``sample`` decodes uniform draws on the sphere (normalised standard normals); ``embed`` is mu.
    There is no per-dimension KL (the vMF's KL belongs to the whole sphere), so ``kl_terms`` is
    empty and ``kl_per_dimension`` says so; ``log_importance_weights`` uses the vMF density and the
    uniform prior. ``max_rejection_rounds`` bounds the sampler's rounds (each redraws every
    pending sample at once); running out raises an error. Loss keys: ``loss``,
    ``Reconstruction_Loss``, ``KLD``.
    """

    output_cls = SVAEOutput
    latent_geometry = "hypersphere"
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD")
    kl_terms = ()  # the KL is closed-form but not a sum over latent dimensions

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        *,
        max_rejection_rounds: int = MAX_REJECTION_ROUNDS,
        gradient_correction: bool = False,
        **kwargs: Any,
    ) -> None:
        if latent_dim < 2:
            raise ValueError(f"SVAE needs latent_dim >= 2 (z lies on S^{{latent_dim-1}}), got {latent_dim}")
        if max_rejection_rounds < 1:
            raise ValueError(f"max_rejection_rounds must be >= 1, got {max_rejection_rounds}")
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        self.max_rejection_rounds = max_rejection_rounds
        self.gradient_correction = gradient_correction
        self.prior = HypersphericalUniform(latent_dim)

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        return VMFHead(in_features, latent_dim)

    def encode(self, input: Tensor) -> VonMisesFisher:
        """q(z|x) = vMF(mu(x), kappa(x)); unpacks as ``[mu, kappa]``."""
        mu, kappa = self.head(self.encoder(input))  # (B, D), (B, 1)
        return VonMisesFisher(mu, kappa, self.max_rejection_rounds)

    def reparameterize(self, mu: Tensor, kappa: Tensor) -> Tensor:
        """A reparameterised draw of vMF(mu, kappa), (B, D)."""
        return VonMisesFisher(mu, kappa, self.max_rejection_rounds).rsample()

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """M_N times KL(vMF(mu, kappa) || U(S^{D-1})), averaged over the batch."""
        kld = VonMisesFisher(output.mu, output.kappa).kl(self.prior).mean()
        return kl_weight * kld, {"KLD": kld}

    def loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        losses = super().loss(output, M_N, **kwargs)
        if self.gradient_correction and torch.is_grad_enabled():
            recon = self.reconstruction_loss(self.recon_params(output), output.input).detach()  # (B,)
            losses["loss"] = losses["loss"] + self.correction_surrogate(recon, output.noise, output.kappa)
        return losses

    def correction_surrogate(self, recon: Tensor, noise: Tensor, kappa: Tensor) -> Tensor:
        """A term of value 0 whose gradient is the batch mean of g_cor: (f_i - baseline_i) times
        the score d/dkappa log pi(eps_i; kappa_i), baseline_i the mean of the other examples' f."""
        batch = recon.shape[0]
        baseline = (recon.sum() - recon) / (batch - 1) if batch > 1 else torch.zeros_like(recon)
        log_pi = wood_log_noise_density(noise.float(), kappa.float(), self.latent_dim).squeeze(-1)  # (B,)
        return ((recon - baseline) * (log_pi - log_pi.detach())).mean()

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        """z ~ U(S^{D-1}), (N, D)."""
        return self.prior.sample(num_samples, device)

    # -- evaluation: the vMF posterior against the uniform prior ---------------------------------
    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        raise NotImplementedError(
            "SVAE's KL(vMF || uniform on the sphere) is one term for the whole sphere: it does not "
            "split over latent dimensions"
        )

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        mu, kappa = (t.unsqueeze(1).expand(-1, num_samples, -1) for t in self.encode(x))  # (B, S, .)
        posterior = VonMisesFisher(mu, kappa, self.max_rejection_rounds)
        z = posterior.rsample()  # (B, S, D)
        return z, self.prior.log_prob(z), posterior.log_prob(z)
