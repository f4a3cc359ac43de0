"""The adversarial part of VQGAN and the latent-diffusion autoencoder, written once.

Esser, Rombach & Ommer (2021), "Taming Transformers for High-Resolution Image Synthesis" (CVPR),
Sec. 3.1: a PatchGAN discriminator (Isola et al. 2017, "Image-to-Image Translation with
Conditional Adversarial Networks") scores overlapping patches; the generator's term is weighed by
the adaptive weight of Eq. 7,

    lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + delta),

the ratio of the gradient norms of the reconstruction and the GAN terms at the decoder's last
layer G_L, and the discriminator joins only after ``disc_start`` training steps. The discriminator
is trained with the hinge loss (Lim & Ye 2017). Rombach et al. (2022, Appendix G) use the same
loss for their KL-regularised autoencoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.nn.discriminator import frozen


class PatchDiscriminator(nn.Module):
    """(B, C, H, W) images -> (B, 1, h, w) logits, one per overlapping patch (PatchGAN).

    Isola et al. (2017), Sec. 3.2.2 and their 70x70 network: 4x4 convolutions, ``num_layers``
    of stride 2 with doubling widths, one of stride 1, then a stride-1 conv to one logit per
    patch. Group norm with one group (per-image) replaces batch norm, so real and generated images
    can be scored in one concatenated pass without their statistics mixing.
    """

    def __init__(self, in_channels: int, width: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"discriminator num_layers must be >= 1, not {num_layers}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        channels = width
        for index in range(1, num_layers + 1):
            out = width * min(2**index, 8)
            stride = 2 if index < num_layers else 1  # the last hidden layer keeps the size
            layers += [
                nn.Conv2d(channels, out, kernel_size=4, stride=stride, padding=1),
                nn.GroupNorm(1, out),
                nn.LeakyReLU(0.2),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, kernel_size=4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, 1, h, w)


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))]), the hinge loss of the discriminator."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def adaptive_weight(
    rec_loss: Tensor, gan_loss: Tensor, last_layer: Tensor, delta: float = 1e-4, max_weight: float = 1e4
) -> Tensor:
    """Eq. 7 of Esser et al. (2021): ||grad L_rec|| / (||grad L_GAN|| + delta) at ``last_layer``,
    clamped to [0, ``max_weight``] and detached (a weight, not a path for gradients).

    Both losses must still have their graphs; they are kept (``retain_graph``) for the backward
    pass of the full loss. Without a graph (e.g. validation under ``torch.no_grad``) the weight is 0.
    """
    if not (rec_loss.requires_grad and gan_loss.requires_grad):
        return rec_loss.new_zeros(())
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (gan_grad.norm() + delta)
    return weight.clamp(0.0, max_weight).detach()


class AdversarialLoss(nn.Module):
    """The PatchGAN, its start step and the adaptive weight, for a model whose decoder ends in
    ``last_layer`` (Esser et al. 2021, Eq. 7 and their ``disc_start``).

    :meth:`generator_term` is added to the model's loss (the discriminator frozen, so only the
    generator learns from it); :meth:`discriminator_loss` is the second optimizer's objective.
    Before step ``start`` both are zero (the generator's term and its weight are not computed).
    """

    def __init__(
        self, in_channels: int, start: int = 0, weight: float = 0.5, width: int = 64, num_layers: int = 3
    ) -> None:
        super().__init__()
        if start < 0 or weight < 0:
            raise ValueError(f"adversarial start and weight must be >= 0, not start={start}, weight={weight}")
        self.start, self.weight = start, weight
        self.discriminator = PatchDiscriminator(in_channels, width, num_layers)

    def active(self, global_step: int | None) -> bool:
        """Whether the discriminator plays at ``global_step`` (None, outside training: it does)."""
        return global_step is None or global_step >= self.start

    def generator_term(
        self, rec_loss: Tensor, fakes: Tensor, last_layer: Tensor, global_step: int | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """weight * lambda * L_GAN with L_GAN = -E[D(x_hat)], and the named terms to log."""
        if not self.active(global_step):
            zero = rec_loss.new_zeros(())
            return zero, {"Generator_Loss": zero, "Adaptive_Weight": zero}
        gan_loss = -frozen(self.discriminator, fakes).mean()
        lam = adaptive_weight(rec_loss, gan_loss, last_layer)
        return self.weight * lam * gan_loss, {"Generator_Loss": gan_loss.detach(), "Adaptive_Weight": lam}

    def discriminator_loss(self, reals: Tensor, fakes: Tensor, global_step: int | None) -> dict[str, Tensor]:
        """The hinge loss on real and (detached) generated images, times 0 before the start step."""
        logits = self.discriminator(torch.cat([reals, fakes.detach()]))
        real, fake = logits.chunk(2)
        factor = 1.0 if self.active(global_step) else 0.0
        loss = factor * hinge_discriminator_loss(real, fake)
        return {
            "loss": loss,
            "D_Loss": loss.detach(),
            "D_Real": real.mean().detach(),
            "D_Fake": fake.mean().detach(),
        }
