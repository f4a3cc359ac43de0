"""The KL-regularised autoencoder of latent diffusion, with a PatchGAN and a perceptual term."""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from vaezoo.models.autoencoder import ConvAutoencoder
from vaezoo.models.vq_vae import vq_decoder, vq_encoder
from vaezoo.nn.adversarial import AdversarialLoss
from vaezoo.nn.blocks import check_image_size
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.perceptual import PerceptualDistance, build_perceptual
from vaezoo.registry import register_model


class KLAutoencoderOutput(NamedTuple):
    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    z: Tensor  # (B, Z, h, w)
    mu: Tensor  # (B, Z, h, w)
    log_var: Tensor  # (B, Z, h, w)


def last_weight(module: nn.Module) -> nn.Parameter:
    """The weight of the last layer of ``module`` that has one (G_L of Esser et al. 2021, Eq. 7)."""
    weights = [w for m in module.modules() if isinstance(w := getattr(m, "weight", None), nn.Parameter)]
    if not weights:
        raise ValueError(f"{type(module).__name__} has no layer with a weight")
    return weights[-1]


class PerceptualAdversarialMixin:
    """The perceptual and adversarial terms shared by :class:`KLAutoencoder` and VQGAN."""

    perceptual: PerceptualDistance | None
    adversarial: AdversarialLoss | None
    decoder: nn.Module

    def setup_extra_losses(
        self, in_channels: int, perceptual_weights: str | None, perceptual_weight: float,
        output_activation: str, disc_start: int, disc_weight: float, disc_width: int,
        disc_layers: int, adversarial: bool,
    ) -> None:  # fmt: skip
        value_range = (-1.0, 1.0) if output_activation == "tanh" else (0.0, 1.0)
        self.perceptual_weight = perceptual_weight
        perceptual = build_perceptual(type(self).__name__, perceptual_weights, None, value_range)
        object.__setattr__(self, "perceptual", perceptual)  # not a submodule: a training-only file
        self.adversarial = (
            AdversarialLoss(in_channels, disc_start, disc_weight, disc_width, disc_layers)
            if adversarial
            else None
        )

    def perceptual_loss(self, recons: Tensor, input: Tensor) -> Tensor:
        """perceptual_weight * d(x, x_hat) per example (B,), or zeros without weights."""
        if self.perceptual is None:
            return recons.new_zeros(recons.shape[0])
        return self.perceptual_weight * self.perceptual(recons, input)

    def gan_term(
        self, rec_loss: Tensor, output: Any, global_step: int | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.adversarial is None:
            return rec_loss.new_zeros(()), {}
        return self.adversarial.generator_term(
            rec_loss, output.recons, last_weight(self.decoder), global_step
        )

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        return [] if self.adversarial is None else list(self.adversarial.parameters())

    def auxiliary_loss(self, output: Any, **kwargs: Any) -> dict[str, Tensor]:
        if self.adversarial is None:
            raise NotImplementedError(f"{type(self).__name__} with adversarial=False has no discriminator")
        return self.adversarial.discriminator_loss(output.input, output.recons, kwargs.get("global_step"))


@register_model(aliases=("KL_Autoencoder", "AutoencoderKL"))
class KLAutoencoder(PerceptualAdversarialMixin, ConvAutoencoder):
    """The KL-regularised autoencoder of Rombach et al. (2022), "High-Resolution Image Synthesis with
    Latent Diffusion Models" (CVPR), Sec. 3.1 and Appendix G, with the loss of Esser et al. (2021).

    A conv encoder maps x to a spatial Gaussian q(z|x) of shape (B, ``latent_dim``, H/f, W/f),
    f = 2^len(hidden_dims) (the paper's 4 x H/4 x W/4 for f=4), and the decoder maps z back::

        loss = L_rec + L_perc + kl_weight * M_N * KL(q(z|x) || N(0, I)) + disc_weight * lambda * L_GAN

    with L_rec the pixel term of ``likelihood`` (per image), L_perc ``perceptual_weight`` times an
    LPIPS-style distance on VGG19-BN features (only with ``perceptual_weights``, a local torchvision
    ``vgg19_bn`` state dict; without it there is no such term, and a warning says so), KL summed
    over all latent positions and the small ``kl_weight`` (1e-6 in the paper) that keeps the latent
    near-deterministic. L_GAN = -E[D(x_hat)] of a PatchGAN, lambda the adaptive weight (Eq. 7 of
    Esser et al.), both zero before step ``disc_start``; the discriminator is trained by the second
    optimizer on the hinge loss (``D_Loss``). ``adversarial=False`` drops the discriminator.
    Differences: the encoder and decoder are the VQ-VAE's residual stacks (small, for a CPU), and
    the perceptual term has unit layer weights instead of LPIPS's learned ones.
    ``sample`` decodes z ~ N(0, I) of the spatial shape (poor images: a latent-diffusion model is
    meant to learn the prior); ``generate`` reconstructs.
    """

    output_cls = KLAutoencoderOutput
    loss_keys = (
        "loss", "Reconstruction_Loss", "Perceptual_Loss", "KLD", "Generator_Loss", "Adaptive_Weight",
    )  # fmt: skip
    supports_vectors = False  # a spatial latent from conv stacks
    kl_terms: ClassVar[tuple[str, ...]] = ("KLD",)
    training_only_arguments: ClassVar[dict[str, Any]] = {"perceptual_weights": None}
    default_hidden_dims = (32, 64)

    def __init__(
        self,
        in_channels: int,
        latent_dim: int = 4,
        hidden_dims: list[int] | None = None,
        *,
        image_size: int = 64,
        kl_weight: float = 1e-6,
        num_residual_layers: int = 1,
        perceptual_weights: str | None = None,
        perceptual_weight: float = 1.0,
        adversarial: bool = True,
        disc_start: int = 1000,
        disc_weight: float = 0.5,
        disc_width: int = 32,
        disc_layers: int = 2,
        output_activation: str = "sigmoid",
        **kwargs: Any,
    ) -> None:
        self.num_residual_layers = num_residual_layers
        super().__init__(
            in_channels, latent_dim, hidden_dims, image_size=image_size,
            output_activation=output_activation, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
        self.kl_weight = kl_weight
        self.latent_side = image_size // 2 ** len(self.hidden_dims)
        self.setup_extra_losses(
            in_channels, perceptual_weights, perceptual_weight, output_activation,
            disc_start, disc_weight, disc_width, disc_layers, adversarial,
        )  # fmt: skip

    def build_encoder(self, in_channels: int, image_size: int) -> nn.Module:
        check_image_size(image_size, len(self.hidden_dims))
        return vq_encoder(in_channels, self.hidden_dims, 2 * self.latent_dim, self.num_residual_layers)

    def encoder_features(self) -> int:
        return 2 * self.latent_dim  # channels of the (B, 2Z, h, w) map: mean and log-variance

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        return nn.Identity()  # the encoder's last 1x1 conv already gives the posterior's parameters

    def build_decoder(self, out_channels: int, image_size: int) -> nn.Module:
        return vq_decoder(
            out_channels, self.hidden_dims, self.latent_dim, self.num_residual_layers, self.decoder_activation
        )

    def encode(self, input: Tensor) -> DiagonalGaussian:
        """q(z|x): mean and log-variance maps, each (B, Z, h, w); unpacks as ``[mu, log_var]``."""
        mu, log_var = self.head(self.encoder(input)).chunk(2, dim=1)
        return DiagonalGaussian(mu, log_var.clamp(-30.0, 20.0))  # the clamp of the paper's code

    def kl_map(self, mu: Tensor, log_var: Tensor) -> Tensor:
        """KL(q(z|x) || N(0, I)) of every latent position, flattened: (B, Z*h*w)."""
        return 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).flatten(1)

    def loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        rec = self.reconstruction_loss(self.recon_params(output), output.input).mean()
        perceptual = self.perceptual_loss(output.recons, output.input).mean()
        kld = self.kl_map(output.mu, output.log_var).sum(dim=1).mean()
        gan, terms = self.gan_term(rec + perceptual, output, kwargs.get("global_step"))
        zero = kld.new_zeros(())
        return {
            "loss": rec + perceptual + self.kl_weight * M_N * kld + gan,
            "Reconstruction_Loss": rec.detach(),
            "Perceptual_Loss": perceptual.detach(),
            "KLD": kld.detach(),
            "Generator_Loss": terms.get("Generator_Loss", zero),
            "Adaptive_Weight": terms.get("Adaptive_Weight", zero),
        }

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        side = self.latent_side
        return torch.randn(num_samples, self.latent_dim, side, side, device=device)  # (B, Z, h, w)

    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        """KL of every latent position (each of the Z*h*w dimensions), (B, Z*h*w)."""
        mu, log_var = self.encode(x)
        return self.kl_map(mu, log_var)

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        mu, log_var = self.encode(x)
        mu, log_var = mu.unsqueeze(1), log_var.unsqueeze(1)  # (B, 1, Z, h, w)
        eps = torch.randn(mu.shape[0], num_samples, *mu.shape[2:], device=mu.device, dtype=mu.dtype)
        z = mu + (0.5 * log_var).exp() * eps  # (B, S, Z, h, w)
        log_norm = 0.5 * math.log(2 * math.pi)
        log_prior = (-0.5 * z.pow(2) - log_norm).flatten(2).sum(-1)
        log_posterior = (-0.5 * eps.pow(2) - 0.5 * log_var - log_norm).flatten(2).sum(-1)
        return z, log_prior, log_posterior
