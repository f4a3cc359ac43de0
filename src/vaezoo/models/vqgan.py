"""VQGAN: the VQ-VAE with a perceptual term and a PatchGAN (Esser, Rombach & Ommer 2021)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from vaezoo.models.kl_autoencoder import PerceptualAdversarialMixin
from vaezoo.models.vq_vae import VQVAE
from vaezoo.registry import register_model


@register_model(aliases=("VQ_GAN",))
class VQGAN(PerceptualAdversarialMixin, VQVAE):
    """VQGAN: Esser et al. (2021), "Taming Transformers for High-Resolution Image Synthesis" (CVPR),
    Eqs. 4-7: :class:`~vaezoo.models.vq_vae.VQVAE`'s loss (Eq. 4) plus a perceptual term and the
    adaptively weighted PatchGAN term of :class:`~vaezoo.models.kl_autoencoder.KLAutoencoder`::

        loss = L_VQ + L_perc + disc_weight * lambda * L_GAN,   lambda of Eq. 7 at the decoder's last layer

    with the discriminator (hinge loss) trained by the second optimizer from step ``disc_start``.
    ``perceptual_weights`` names a local torchvision ``vgg19_bn`` state dict (without it there is no
    perceptual term, and a warning says so). With ``adversarial=False`` and no perceptual weights
    the loss is exactly VQVAE's. Everything else (codes, sampling through a fitted prior) is VQVAE's.
    """

    loss_keys: tuple[str, ...] = (*VQVAE.loss_keys, "Perceptual_Loss", "Generator_Loss", "Adaptive_Weight")
    training_only_arguments: ClassVar[dict[str, Any]] = {"perceptual_weights": None}

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        num_embeddings: int = 512,
        hidden_dims: list[int] | None = None,
        beta: float = 0.25,
        image_size: int = 64,
        *,
        perceptual_weights: str | None = None,
        perceptual_weight: float = 1.0,
        adversarial: bool = True,
        disc_start: int = 1000,
        disc_weight: float = 0.8,
        disc_width: int = 32,
        disc_layers: int = 2,
        output_activation: str = "sigmoid",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            in_channels, latent_dim, num_embeddings, hidden_dims, beta, image_size,
            output_activation=output_activation, **kwargs,
        )  # fmt: skip
        self.setup_extra_losses(
            in_channels, perceptual_weights, perceptual_weight, output_activation,
            disc_start, disc_weight, disc_width, disc_layers, adversarial,
        )  # fmt: skip

    def loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        terms = super().loss(output, M_N, **kwargs)
        # the reconstruction term again, with its graph (VQVAE's dict holds it detached)
        rec = self.reconstruction_loss(self.recon_params(output), output.input).mean()
        perceptual = self.perceptual_loss(output.recons, output.input).mean()
        gan, gan_terms = self.gan_term(rec + perceptual, output, kwargs.get("global_step"))
        zero = rec.new_zeros(())
        return {
            **terms,
            "loss": terms["loss"] + perceptual + gan,
            "Perceptual_Loss": perceptual.detach(),
            "Generator_Loss": gan_terms.get("Generator_Loss", zero),
            "Adaptive_Weight": gan_terms.get("Adaptive_Weight", zero),
        }
