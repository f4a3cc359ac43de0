"""A VAE with Gamma latents, reparameterised through the Marsaglia-Tsang rejection sampler
(Naesseth, Ruiz, Linderman & Blei, AISTATS 2017)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.arguments import Alias, as_int
from vaezoo.models.autoencoder import ConvAutoencoder
from vaezoo.nn.distributions import Posterior
from vaezoo.registry import register_model

MIN_PARAMETER = 1e-3  # floor of the concentration and rate: keeps lgamma, digamma and 1/alpha finite


# -- the Gamma distribution: rejection sampler, reparameterised sample, KL --------------------------
def marsaglia_tsang_noise(shape: Tensor) -> Tensor:
    """The accepted proposals eps ~ N(0, 1) of Marsaglia & Tsang's sampler of Gamma(shape, 1), shape >= 1.

    Proposal z = h(eps, a); accept when log u < eps^2/2 + d - d v + d log v with d = a - 1/3,
    v = (1 + eps / sqrt(9 d))^3, u ~ U(0, 1). Not differentiated: the gradient flows through h.
    """
    d = shape - 1.0 / 3.0
    c = torch.rsqrt(9.0 * d)
    noise = torch.zeros_like(shape)
    pending = torch.ones_like(shape, dtype=torch.bool)
    while pending.any():  # acceptance is >= 95% for shape >= 1, so a few rounds suffice
        eps = torch.randn_like(shape)
        v = (1.0 + c * eps) ** 3
        log_u = torch.log(torch.rand_like(shape))
        accept = (v > 0) & (log_u < 0.5 * eps**2 + d - d * v + d * torch.log(v.clamp_min(1e-30)))
        noise = torch.where(pending & accept, eps, noise)
        pending = pending & ~accept
    return noise


def marsaglia_tsang_transform(eps: Tensor, shape: Tensor) -> Tensor:
    """h(eps, a) = (a - 1/3) (1 + eps / sqrt(9a - 3))^3, differentiable in the shape a."""
    return (shape - 1.0 / 3.0) * (1.0 + eps * torch.rsqrt(9.0 * shape - 3.0)) ** 3


def gamma_rsample(concentration: Tensor, rate: Tensor, boosts: int) -> Tensor:
    """A reparameterised draw of Gamma(concentration, rate) with shape augmentation (Naesseth et
    al. 2017, Sec. 5): z = h(eps, alpha + B) * prod_{i=1..B} u_i^{1/(alpha + i - 1)} / rate.

    The B boosts make the sampler's acceptance probability ~1, so the correction term g_cor of the
    gradient (their Sec. 3) becomes negligible and is left out: this is the g_rep estimator.
    """
    boosted = concentration + boosts  # (B, D), >= 1 whenever boosts >= 1
    eps = marsaglia_tsang_noise(boosted.detach())
    z = marsaglia_tsang_transform(eps, boosted)  # ~ Gamma(alpha + B, 1)
    if boosts > 0:
        u = torch.rand(*concentration.shape, boosts, device=concentration.device, dtype=concentration.dtype)
        u = u.clamp_min(torch.finfo(u.dtype).tiny)
        offsets = torch.arange(boosts, device=concentration.device, dtype=concentration.dtype)  # i - 1
        z = z * torch.exp((torch.log(u) / (concentration.unsqueeze(-1) + offsets)).sum(-1))
    return z / rate  # (B, D)


def gamma_kl_per_dimension(
    concentration: Tensor, rate: Tensor, prior_concentration: float | Tensor, prior_rate: float | Tensor
) -> Tensor:
    """KL(Gamma(a, b) || Gamma(a0, b0)) in closed form, elementwise -> (B, D):

    (a - a0) psi(a) - lgamma(a) + lgamma(a0) + a0 (log b - log b0) + a (b0 - b) / b.
    """
    a, b = concentration, rate
    a0, b0 = (torch.as_tensor(v, dtype=a.dtype, device=a.device) for v in (prior_concentration, prior_rate))
    kl = (a - a0) * torch.digamma(a) - torch.lgamma(a) + torch.lgamma(a0)
    return kl + a0 * (torch.log(b) - torch.log(b0)) + a * (b0 - b) / b


def gamma_kl(concentration: Tensor, rate: Tensor, prior_concentration: float, prior_rate: float) -> Tensor:
    """:func:`gamma_kl_per_dimension` summed over the last dimension -> (B,)."""
    return gamma_kl_per_dimension(concentration, rate, prior_concentration, prior_rate).sum(-1)


# -- the model --------------------------------------------------------------------------------------
class GammaOutput(NamedTuple):
    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    concentration: Tensor  # (B, D), alpha of q(z|x)
    rate: Tensor  # (B, D), beta of q(z|x)
    z: Tensor  # (B, D), positive


class GammaHead(nn.Module):
    """Flat features -> (concentration, rate) of a Gamma per latent dimension, both > 0."""

    def __init__(self, in_features: int, latent_dim: int) -> None:
        super().__init__()
        self.fc_concentration = nn.Linear(in_features, latent_dim)
        self.fc_rate = nn.Linear(in_features, latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        concentration = F.softplus(self.fc_concentration(h)) + MIN_PARAMETER  # (B, D)
        rate = F.softplus(self.fc_rate(h)) + MIN_PARAMETER  # (B, D)
        return concentration, rate


class GammaPosterior(Posterior):
    """q(z|x) = prod_d Gamma(alpha_d, beta_d), drawn by :func:`gamma_rsample` with ``shape_boosts``
    shape augmentations; unpacks as PyTorch-VAE's ``[alpha, beta]``."""

    def __init__(self, concentration: Tensor, rate: Tensor, shape_boosts: int) -> None:
        self.concentration, self.rate, self.shape_boosts = concentration, rate, shape_boosts

    def rsample(self, global_step: int | None = None) -> Tensor:
        return gamma_rsample(self.concentration, self.rate, self.shape_boosts)  # (B, D), positive

    def mode(self) -> Tensor:
        """The deterministic code used for evaluation: the posterior mean alpha / beta."""
        return self.concentration / self.rate

    def log_prob(self, z: Tensor) -> Tensor:
        return torch.distributions.Gamma(self.concentration, self.rate).log_prob(z).sum(-1)

    def kl(self, other: Posterior) -> Tensor:
        if not isinstance(other, GammaPosterior):
            raise TypeError(f"a Gamma's closed-form KL needs a Gamma, not {type(other).__name__}")
        return gamma_kl_per_dimension(self.concentration, self.rate, other.concentration, other.rate).sum(-1)

    def as_list(self) -> list[Tensor]:
        return [self.concentration, self.rate]

    def fields(self) -> dict[str, Tensor]:
        return {"concentration": self.concentration, "rate": self.rate}


@register_model
class GammaVAE(ConvAutoencoder):
    """VAE with a Gamma posterior q(z|x) = prod_d Gamma(alpha_d(x), beta_d(x)) and a Gamma prior
    p(z) = Gamma(prior_shape, prior_rate), trained with the rejection-sampling reparameterisation
    gradients of Naesseth, Ruiz, Linderman & Blei 2017, "Reparameterization Gradients through
    Acceptance-Rejection Sampling Algorithms" (AISTATS): z = h(eps, alpha + B) with eps the
    accepted Marsaglia-Tsang noise (their Sec. 3, the g_rep part of the gradient), shape-augmented
    by B = ``shape_boosts`` uniform powers (Sec. 5), divided by the rate:

        loss = mean_batch[ recon(x, x_hat) ] + M_N * mean_batch[ KL(q(z|x) || p(z)) ]

    with the Gamma-to-Gamma KL in closed form (:func:`gamma_kl`). The pipeline is the shared
    autoencoder's; the head, the posterior (:class:`GammaPosterior`, whose ``rsample`` is the
    sampler) and the ``regularizer`` are the Gamma ones. ``embed`` is the posterior mean
    alpha / beta; ``kl_per_dimension`` and ``log_importance_weights`` use the Gamma densities.

    Fixed against PyTorch-VAE: alpha and beta come from softplus heads with a floor of 1e-3 (a
    Softmax without ``dim`` forced them onto a simplex of tiny values and caused NaNs); M_N weighs
    the KL (it was ignored); the reconstruction and KL are logged; ``sample`` draws from the Gamma
    prior on any device. Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD``.

    Arguments in PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, shape_boosts,
    prior_shape, prior_rate)``, and ConvAutoencoder's others by keyword. PyTorch-VAE's ``gamma_shape``
    is ``shape_boosts``, the B added to the posterior's shape before sampling (``8.0`` -> ``8``); it
    must be a whole number here, since the B uniform powers undo the boost one unit at a time.
    """

    output_cls = GammaOutput
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD")
    kl_terms = ("KLD",)
    argument_aliases = {"gamma_shape": Alias("shape_boosts", as_int)}

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        shape_boosts: int = 8,
        prior_shape: float = 2.0,
        prior_rate: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        shape_boosts = as_int(shape_boosts)
        if not isinstance(shape_boosts, int) or isinstance(shape_boosts, bool) or shape_boosts < 1:
            raise ValueError(
                f"shape_boosts (PyTorch-VAE's gamma_shape) must be a whole number >= 1, got {shape_boosts!r}"
            )
        if prior_shape <= 0 or prior_rate <= 0:
            raise ValueError("the prior's shape and rate must be positive")
        self.shape_boosts = shape_boosts
        self.prior_shape = prior_shape
        self.prior_rate = prior_rate

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        return GammaHead(in_features, latent_dim)

    def encode(self, input: Tensor) -> GammaPosterior:
        concentration, rate = self.head(self.encoder(input))  # (B, D), (B, D)
        return GammaPosterior(concentration, rate, self.shape_boosts)

    def reparameterize(self, concentration: Tensor, rate: Tensor) -> Tensor:
        """PyTorch-VAE's ``reparameterize(alpha, beta)`` of its GammaVAE: a draw of q(z|x)."""
        return GammaPosterior(concentration, rate, self.shape_boosts).rsample()

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        kld = gamma_kl(output.concentration, output.rate, self.prior_shape, self.prior_rate).mean()
        return kl_weight * kld, {"KLD": kld}

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        """z ~ Gamma(prior_shape, prior_rate) per dimension, (N, D)."""
        shape = torch.full((num_samples, self.latent_dim), self.prior_shape, device=device)
        return torch.distributions.Gamma(shape, self.prior_rate).sample()

    # -- evaluation: Gamma posterior and prior ---------------------------------------------------
    def embed(self, x: Tensor, **kwargs: Any) -> Tensor:
        """The posterior mean alpha / beta, (B, D)."""
        return self.encode(x).mode()

    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        concentration, rate = self.encode(x)
        return gamma_kl_per_dimension(concentration, rate, self.prior_shape, self.prior_rate)  # (B, D)

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Exact draws of q(z|x) (PyTorch's Gamma sampler), kept off 0 where lgamma densities end."""
        concentration, rate = (t.unsqueeze(1).expand(-1, num_samples, -1) for t in self.encode(x))
        posterior = torch.distributions.Gamma(concentration, rate)  # (B, S, D)
        z = posterior.rsample().clamp_min(torch.finfo(concentration.dtype).tiny)
        prior = torch.distributions.Gamma(z.new_tensor(self.prior_shape), z.new_tensor(self.prior_rate))
        return z, prior.log_prob(z).sum(-1), posterior.log_prob(z).sum(-1)
