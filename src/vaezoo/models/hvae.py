"""A two-level hierarchical VAE (Sønderby et al. 2016; Kingma et al. 2016)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vaezoo.losses import gaussian_kl
from vaezoo.models.vanilla_vae import VanillaVAE, expand_samples, per_dimension
from vaezoo.nn.blocks import GaussianHead
from vaezoo.nn.distributions import DiagonalGaussian, log_standard_normal
from vaezoo.nn.priors import ConditionalGaussian
from vaezoo.registry import register_model


class HierarchicalOutput(NamedTuple):
    """``forward``'s result: the shared prefix for z1, then z2 and the learned prior p(z1|z2)."""

    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D1) q(z1|x, z2)
    log_var: Tensor  # (B, D1)
    z: Tensor  # (B, D1) z1, the latent the decoder reads
    mu2: Tensor  # (B, D2) q(z2|x)
    log_var2: Tensor  # (B, D2)
    z2: Tensor  # (B, D2)
    prior_mu: Tensor  # (B, D1) p(z1|z2)
    prior_log_var: Tensor  # (B, D1)


class TwoLevelPosterior(DiagonalGaussian):
    """q(z1|x, z2), the Gaussian over the code ``decode`` takes, with q(z2|x) beside it (``top``);
    draws and the mode are z1's, and it unpacks as ``[mu1, log_var1, mu2, log_var2]``."""

    def __init__(self, bottom: DiagonalGaussian, top: DiagonalGaussian) -> None:
        super().__init__(bottom.mu, bottom.log_var)
        self.top = top

    def as_list(self) -> list[Tensor]:
        return [self.mu, self.log_var, self.top.mu, self.top.log_var]

    def fields(self) -> dict[str, Tensor]:
        return {**super().fields(), "mu2": self.top.mu, "log_var2": self.top.log_var}


@register_model
class HVAE(VanillaVAE):
    """Two-level hierarchical VAE: the generative model p(z2) p(z1|z2) p(x|z1) of Sønderby et al.
    2016 ("Ladder Variational Autoencoders", Sec. 2, with L = 2), inferred top-down as
    q(z2|x) q(z1|x, z2) (the order of Kingma et al. 2016, "Improved Variational Inference with
    Inverse Autoregressive Flow").

    - q(z2|x) = N(mu2(h), sigma2^2(h)) with h the conv features of x;
    - q(z1|x, z2) = N(mu1(h + A z2), sigma1^2(h + A z2)) (z2 projected into the feature space);
    - p(z2) = N(0, I); p(z1|z2) = N(mu_p(z2), sigma_p^2(z2)), a learned one-hidden-layer network;
    - p(x|z1): the conv decoder, so ``decode(z)`` takes z1 and ``latent_dim`` is its size.

    The negative ELBO, with the expectation over z2 estimated at the sampled z2::

        loss = recon(x, x_hat) + M_N * mean_batch[ KL(q(z2|x) || p(z2))
                                                   + E_q(z2|x) KL(q(z1|x, z2) || p(z1|z2)) ]

    both KLs in closed form. ``sample`` draws z2 ~ N(0, I), then z1 ~ p(z1|z2), and decodes z1.
    ``encode(x)`` returns ``[mu1, log_var1, mu2, log_var2]``, with q(z1|x, z2) at z2 = mu2, and
    ``embed(x)`` is mu1 there. ``log_importance_weights`` use the whole hierarchy,
    log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z2|x) - log q(z1|x, z2).

    Fixes PyTorch-VAE's HVAE: its loss added an ad-hoc ``-log p(z1|z2)`` term, ``decode`` took a
    feature map, the key was ``'Reconstruction Loss'`` and ``sample`` called ``.cuda()``.
    Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD`` (total), ``KLD_z1``, ``KLD_z2``.

    Arguments in PyTorch-VAE's order, ``(in_channels, latent_dim, latent2_dim, hidden_dims,
    image_size)`` -- ``HVAE(3, 64, 64)`` -- with ``prior_width`` and VanillaVAE's other arguments by
    keyword only. PyTorch-VAE's ``latent1_dim`` is ``latent_dim`` (z1, the decoder's input) and its
    ``img_size`` is ``image_size``; its ``pseudo_input_size`` is accepted and dropped with a warning
    (PyTorch-VAE stores it for a VampPrior whose code is commented out).
    """

    output_cls: type[NamedTuple] = HierarchicalOutput
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD", "KLD_z1", "KLD_z2")
    kl_terms = ()  # KL of a hierarchy, against the learned p(z1|z2): no per-dimension split
    argument_aliases = {"latent1_dim": "latent_dim"}
    ignored_arguments = {
        "pseudo_input_size": "the size of pseudo-inputs for a VampPrior PyTorch-VAE's HVAE never builds",
    }

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        latent2_dim: int = 16,
        hidden_dims: Sequence[int] | None = None,
        image_size: int = 64,
        *,
        prior_width: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, image_size=image_size, **kwargs)
        features = self.encoder_features()
        self.latent2_dim = latent2_dim
        self.top_head = GaussianHead(features, latent2_dim)  # q(z2|x); self.head is q(z1|x, z2)
        self.z2_to_features = nn.Linear(latent2_dim, features)  # A
        self.top_down = ConditionalGaussian(latent2_dim, latent_dim, prior_width)  # p(z1|z2)

    def bottom_posterior(self, h: Tensor, z2: Tensor) -> DiagonalGaussian:
        """q(z1|x, z2) from the conv features h (..., F) and z2 (..., D2)."""
        return DiagonalGaussian(*self.head(h + self.z2_to_features(z2)))  # (..., D1)

    def infer(
        self, input: Tensor, stochastic: bool = True
    ) -> tuple[DiagonalGaussian, Tensor, DiagonalGaussian]:
        """q(z2|x), z2 (a sample, or the mean), and q(z1|x, z2)."""
        h = self.encoder(input)  # (B, F)
        top = DiagonalGaussian(*self.top_head(h))  # (B, D2)
        z2 = top.rsample() if stochastic else top.mu
        return top, z2, self.bottom_posterior(h, z2)

    def encode(self, input: Tensor) -> TwoLevelPosterior:
        """q(z1|x, z2) q(z2|x) with z2 at its mean; unpacks as ``[mu1, log_var1, mu2, log_var2]``."""
        top, _, bottom = self.infer(input, stochastic=False)
        return TwoLevelPosterior(bottom, top)

    def forward(self, input: Tensor, **kwargs: Any) -> NamedTuple:  # HierarchicalOutput (+ recon_params)
        top, z2, bottom = self.infer(input)
        z1 = bottom.rsample()  # (B, D1)
        prior = self.top_down(z2)  # p(z1|z2)
        recons, params = self.decode_with_params(z1)
        return self.pack(
            recons=recons,
            recon_params=params,
            input=input,
            mu=bottom.mu,
            log_var=bottom.log_var,
            z=z1,
            mu2=top.mu,
            log_var2=top.log_var,
            z2=z2,
            prior_mu=prior.mu,
            prior_log_var=prior.log_var,
        )

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        kld_z2 = gaussian_kl(output.mu2, output.log_var2)  # (B,)
        posterior = DiagonalGaussian(output.mu, output.log_var)
        kld_z1 = posterior.kl(DiagonalGaussian(output.prior_mu, output.prior_log_var))  # (B,)
        kld = (kld_z1 + kld_z2).mean()
        return kl_weight * kld, {"KLD": kld, "KLD_z1": kld_z1.mean(), "KLD_z2": kld_z2.mean()}

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        z2 = torch.randn(num_samples, self.latent2_dim, device=self.device)  # p(z2) = N(0, I)
        return self.top_down(z2).rsample().to(device)  # z1 ~ p(z1|z2), (N, D1)

    # -- evaluation ------------------------------------------------------------------------------
    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        """KL(q(z1_d|x, z2) || p(z1_d|z2)) per dimension of z1 (what ``embed`` and ``decode`` use),
        (B, D1), at z2 = its posterior mean; the KL of z2 is not included."""
        _, z2, bottom = self.infer(x, stochastic=False)
        return per_dimension(bottom).kl(per_dimension(self.top_down(z2)))

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        """(z2, z1) ~ q(z2|x) q(z1|x, z2); log p = log N(z2; 0, I) + log p(z1|z2), log q likewise.
        Returns z1, (B, S, D1), the latent ``decode`` reads."""
        h = self.encoder(x).unsqueeze(1)  # (B, 1, F)
        top = expand_samples(DiagonalGaussian(*self.top_head(h.squeeze(1))), num_samples)  # (B, S, D2)
        z2 = top.rsample()
        bottom = self.bottom_posterior(h, z2)  # (B, S, D1)
        z1 = bottom.rsample()
        log_prior = log_standard_normal(z2) + self.top_down(z2).log_prob(z1)
        return z1, log_prior, top.log_prob(z2) + bottom.log_prob(z1)
