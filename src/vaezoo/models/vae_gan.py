"""VAE-GAN: a VAE whose reconstruction is measured in a GAN discriminator's feature space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.nn.discriminator import ImageDiscriminator, frozen
from vaezoo.registry import register_model


class VAEGANOutput(NamedTuple):
    """``forward``'s result: the VAE's fields, the code, and images decoded from prior draws."""

    recons: Tensor  # (B, C, H, W): Dec(z), z ~ q(z|x)
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D)
    log_var: Tensor  # (B, D)
    z: Tensor  # (B, D)
    fake: Tensor  # (B, C, H, W): Dec(z_p), z_p ~ p(z)


def feature_nll(real_features: Tensor, recon_features: Tensor) -> Tensor:
    """-log N(Dis_l(x); Dis_l(x_hat), I) per example up to its constant, (B,): half the summed
    squared difference of the (B, F) feature maps (Larsen et al. 2016, Eq. 8)."""
    return 0.5 * (real_features - recon_features).pow(2).sum(dim=1)


@register_model(aliases=("VAE_GAN",))
class VAEGAN(VanillaVAE):
    """VAE-GAN: Larsen et al. (2016), "Autoencoding beyond pixels using a learned similarity
    metric" (ICML), Eqs. 8-9 and Algorithm 1.

    The Gaussian VAE's pixel likelihood is replaced by a Gaussian likelihood of the features
    Dis_l(x) of a GAN discriminator's layer l (:class:`~vaezoo.nn.discriminator.ImageDiscriminator`,
    its last convolution), and a GAN is trained on top, with fakes both reconstructions
    x_hat = Dec(z), z ~ q(z|x), and samples x_p = Dec(z_p), z_p ~ p(z)::

        L_prior = KL(q(z|x) || p(z))                 L_llike = 0.5 * ||Dis_l(x) - Dis_l(x_hat)||^2
        L_GAN   = log Dis(x) + log(1 - Dis(x_hat)) + log(1 - Dis(x_p))

    Algorithm 1 has three objectives: encoder  <- grad(L_prior + L_llike); decoder <- grad(gamma *
    L_llike - L_GAN); discriminator <- grad(L_GAN), with neither L_llike reaching the discriminator
    nor L_GAN the encoder. vaezoo's trainer has two optimizers, so the encoder's and the decoder's
    objectives are one loss whose gradients reach each network as the paper says::

        loss = M_N * KL + L_llike(x_hat) + (gamma - 1) * L_llike(x_hat_d) + G(x_hat_d) + G(x_p)

    where x_hat_d = Dec(z.detach()) is the same reconstruction decoded from a detached code (its
    terms reach the decoder only) and G(x) = -log Dis(x), the non-saturating generator form of
    -L_GAN (Goodfellow et al. 2014). The encoder thus gets grad(KL + L_llike) and the decoder
    grad(gamma * L_llike + G); the value is M_N * KL + gamma * L_llike + G (plus the pixel term
    below, if any). All these terms run the discriminator with detached weights
    (:func:`~vaezoo.nn.discriminator.frozen`). The second optimizer (``auxiliary_loss``, learning rate ``discriminator_lr``) then trains the
    discriminator alone on BCE(Dis(x), 1) + BCE(Dis(x_hat), 0) + BCE(Dis(x_p), 0) (= -L_GAN), on
    the detached images of the same forward pass. Differences from the paper: one optimizer (one
    Adam state) for the encoder and the decoder instead of two; 3x3 kernels, LeakyReLU and
    per-image layer norm instead of batch norm in the discriminator; one extra decoder pass
    (x_hat_d) per training step.

    ``gamma`` weighs reconstruction against fooling the discriminator in the decoder's objective.
    ``pixel_weight`` (0 in the paper) adds the pixel squared error (at ``recon_reduction`` scale)
    to L_llike(x_hat), for the encoder and the decoder alike (not to the gamma - 1 term): with a
    discriminator still untrained, its features say little about the image, and the shipped config
    anchors the reconstructions with it. The features Dis_l(x) are layer-normalised per image (the
    paper's batch norm bounded their scale too), so the feature term is at most 2F for F features.
    ``likelihood`` must stay ``"mse"``: the feature term is not a normalised likelihood of x
    (``likelihood_is_normalized`` is False). ``Reconstruction_Loss`` is L_llike(x_hat) (batch
    mean), ``Generator_Loss`` is G(x_hat_d) + G(x_p); in the auxiliary dict, ``D_Loss`` and
    ``D_Accuracy``. The discriminator works on images only, so no ``architecture="mlp"``.
    """

    output_cls = VAEGANOutput
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD", "Generator_Loss")
    own_reconstruction = "its reconstruction term, a discriminator feature loss, replaces the likelihood"
    supports_vectors = False  # the discriminator is convolutional

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        gamma: float = 1.0,
        *,
        image_size: int = 64,
        discriminator_dims: Sequence[int] = (32, 128, 256, 256),
        discriminator_units: int = 512,
        discriminator_lr: float = 1e-4,
        pixel_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, image_size=image_size, **kwargs)
        self.gamma = gamma
        self.pixel_weight = pixel_weight
        self.discriminator = ImageDiscriminator(
            in_channels, discriminator_dims, image_size, discriminator_units
        )
        self.auxiliary_lr = discriminator_lr

    def forward(self, input: Tensor, **kwargs: Any) -> NamedTuple:
        posterior = self.encode(input)
        z = posterior.rsample()  # (B, D)
        prior_z = self.sample_prior(z.shape[0], z.device).to(z.dtype)  # (B, D)
        return self.pack(
            recons=self.decode(z), input=input, z=z, fake=self.decode(prior_z), **posterior.fields()
        )

    def reconstruction_loss(self, recons: Tensor, input: Tensor) -> Tensor:
        """L_llike per example, (B,): the feature loss, Dis frozen (L_llike never trains it), plus
        ``pixel_weight`` times the pixel squared error at ``recon_reduction`` scale."""
        _, features = frozen(self.discriminator, torch.cat([input, recons]))  # (2B, F)
        real, recon = features.chunk(2)
        llike = feature_nll(real, recon)
        if self.pixel_weight:
            llike = llike + self.pixel_weight * super().reconstruction_loss(recons, input)
        return llike

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """M_N * KL, plus the decoder-only terms (gamma - 1) * L_llike(x_hat_d) + G(x_hat_d) + G(x_p)."""
        kl_penalty, terms = super().regularizer(output, kl_weight)
        recon_d = self.decode(output.z.detach())  # (B, C, H, W): x_hat, reaching the decoder only
        images = torch.cat([output.input, recon_d, output.fake])  # (3B, C, H, W)
        logits, features = frozen(self.discriminator, images)  # (3B,), (3B, F)
        real_features, recon_features, _ = features.chunk(3)
        llike_d = feature_nll(real_features, recon_features).mean()
        _, recon_logits, fake_logits = logits.chunk(3)
        generator = F.softplus(-recon_logits).mean() + F.softplus(-fake_logits).mean()  # -log Dis
        penalty = kl_penalty + (self.gamma - 1.0) * llike_d + generator
        return penalty, {**terms, "Generator_Loss": generator}

    # -- the discriminator, trained by the second optimizer ----------------------------------------
    def auxiliary_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.discriminator.parameters())

    def auxiliary_loss(self, output: Any, **kwargs: Any) -> dict[str, Tensor]:
        images = torch.cat([output.input, output.recons.detach(), output.fake.detach()])  # (3B, ...)
        logits, _ = self.discriminator(images)  # (3B,)
        real, recon, fake = logits.chunk(3)
        loss = (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(recon, torch.zeros_like(recon))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        )  # -L_GAN, each term a batch mean
        targets = torch.cat([torch.ones_like(real), torch.zeros_like(recon), torch.zeros_like(fake)])
        accuracy = ((logits > 0).float() == targets).float().mean()
        return {"loss": loss, "D_Loss": loss.detach(), "D_Accuracy": accuracy}
