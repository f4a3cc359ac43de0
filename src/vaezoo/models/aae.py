"""The adversarial autoencoder: a deterministic autoencoder whose aggregate code distribution is
matched to the prior by a discriminator on the latent codes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.models.wae_mmd import LatentMatchingAutoencoder
from vaezoo.nn.discriminator import LatentDiscriminator, frozen
from vaezoo.registry import register_model


def real_logit(logits: Tensor) -> Tensor:
    """The logit of "z was drawn from the prior", (B,), from the two-logit discriminator's (B, 2):
    class 0 (prior) against class 1 (encoder), so that D(z) = sigmoid(real_logit)."""
    return logits[:, 0] - logits[:, 1]


@register_model(aliases=("AdversarialAutoencoder", "Adversarial_AE"))
class AAE(LatentMatchingAutoencoder):
    """Adversarial autoencoder: Makhzani et al. (2016), "Adversarial Autoencoders" (ICLR
    workshop), Sec. 2.

    A deterministic encoder z = q(x) and a decoder are trained to reconstruct, while the aggregate
    posterior q(z) = E_x[q(z|x)] is matched to the prior p(z) = N(0, latent_var * I) by a GAN in
    latent space: a discriminator D(z) tells prior draws (real) from codes (fake), and the encoder,
    the generator, learns to fool it. With the non-saturating generator loss::

        autoencoder loss   = mean_batch[ recon(x, x_hat) ] + adversarial_weight * mean_z[ -log D(z) ]
        discriminator loss = BCE(D(z'), 1) and BCE(D(z), 0) averaged, z' ~ p(z), z = q(x) detached

    The paper alternates three phases per minibatch (reconstruction; discriminator; generator,
    each with its own SGD step). vaezoo's two optimizers fold the reconstruction and generator
    phases into one step on the sum above (the encoder/decoder optimizer), then train the
    discriminator (``auxiliary_parameters`` / ``auxiliary_loss``, learning rate
    ``discriminator_lr``) on the *detached* codes of the same forward pass. The generator term
    runs the discriminator with its weights detached (:func:`~vaezoo.nn.discriminator.frozen`),
    so the autoencoder's loss puts no gradient on the discriminator, and the discriminator's puts
    none on the autoencoder.

    The discriminator is :class:`~vaezoo.nn.discriminator.LatentDiscriminator`: the paper's two
    layers of 1000 units (MNIST) by default, ReLU replaced by LeakyReLU(0.2). ``sample`` decodes
    prior draws. With no posterior there is no ``kl_per_dimension`` and no likelihood bound.
    Loss keys: ``loss``, ``Reconstruction_Loss``, ``Generator_Loss`` (-log D(z), nats); in the
    auxiliary dict ``D_Loss`` and ``D_Accuracy``. ``M_N`` plays no part.

    Under DDP each process scores its own codes and prior draws; the discriminator's gradients are
    averaged like the others', and DDP needs ``find_unused_parameters`` (as for FactorVAE).
    """

    divergence_key = "Generator_Loss"
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "Generator_Loss")

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        adversarial_weight: float = 1.0,
        *,
        latent_var: float = 1.0,
        discriminator_units: int = 1000,
        discriminator_layers: int = 2,
        discriminator_lr: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            in_channels,
            latent_dim,
            hidden_dims,
            reg_weight=adversarial_weight,
            latent_var=latent_var,
            **kwargs,
        )
        self.adversarial_weight = adversarial_weight
        self.discriminator = LatentDiscriminator(latent_dim, discriminator_units, discriminator_layers)
        self.auxiliary_lr = discriminator_lr

    def divergence(self, z: Tensor, prior_z: Tensor) -> Tensor:
        """The generator loss -log D(z), batch mean. The prior enters through the discriminator,
        which ``auxiliary_loss`` trains on prior draws; ``prior_z`` is not needed here."""
        return F.softplus(-real_logit(frozen(self.discriminator, z))).mean()  # -log sigmoid(l)

    # -- the discriminator, trained by the second optimizer ----------------------------------------
    def auxiliary_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def auxiliary_loss(self, output: Any, **kwargs: Any) -> dict[str, Tensor]:
        fake = output.z.detach()  # (B, D): codes of the encoder; the autoencoder's step is over
        real = self.sample_prior(fake.shape[0], fake.device).to(fake.dtype)  # (B, D): z' ~ p(z)
        logits = real_logit(self.discriminator(torch.cat([real, fake])))  # (2B,)
        targets = torch.cat([torch.ones_like(fake[:, 0]), torch.zeros_like(fake[:, 0])])
        loss = F.binary_cross_entropy_with_logits(logits, targets)  # the two halves' mean
        accuracy = ((logits > 0).float() == targets).float().mean()
        return {"loss": loss, "D_Loss": loss.detach(), "D_Accuracy": accuracy}
