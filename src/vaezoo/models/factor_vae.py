"""FactorVAE: the Gaussian VAE plus a total-correlation penalty estimated by a discriminator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.losses.total_correlation import permute_dims
from vaezoo.models.vanilla_vae import VAEOutputWithZ, VanillaVAE
from vaezoo.nn.discriminator import LatentDiscriminator
from vaezoo.registry import register_model

JOINT, PRODUCT = 0, 1  # discriminator classes: z ~ q(z), and z ~ prod_j q(z_j)


@register_model
class FactorVAE(VanillaVAE):
    """FactorVAE: Kim & Mnih (2018), "Disentangling by Factorising" (ICML), Sec. 3 and Alg. 2.

    The ELBO minus gamma times the total correlation TC = KL(q(z) || prod_j q(z_j)) of the
    aggregate posterior. TC is estimated with the density-ratio trick: a discriminator D tells codes
    z ~ q(z) (class "joint") from codes whose dimensions were shuffled across the batch, samples of
    prod_j q(z_j) (``permute_dims``, Alg. 1), and TC ~ E_q(z)[log D(z) / (1 - D(z))]::

        VAE loss            = recon + M_N * KL + gamma * mean_z[ logit_joint(z) - logit_product(z) ]
        discriminator loss  = 0.5 * (CE(D(z), joint) + CE(D(permute_dims(z)), product))

    The discriminator (6 x 1000 units, LeakyReLU 0.2, :class:`LatentDiscriminator`) is trained by
    the trainer's second optimizer (``auxiliary_parameters`` / ``auxiliary_loss``, learning rate
    ``discriminator_lr``, 1e-4 in the paper) after the VAE step, on the *detached* codes of the same
    forward pass. Alg. 2 permutes the codes of a second batch; like disentanglement_lib we permute
    the same batch. Logged: ``KLD`` and ``VAE_TC_Loss`` (the TC estimate); in the auxiliary dict,
    ``D_TC_Loss`` (the discriminator's cross-entropy) and ``D_Accuracy``.

    Under DDP the permutation shuffles each process's own batch (samples of prod_j q(z_j) from the
    local batch only; not gathered), while the discriminator's gradients are averaged over the
    processes like every other parameter's, so its copies stay identical. DDP must run it with
    ``find_unused_parameters`` (the second backward pass reaches the discriminator alone;
    :func:`vaezoo.training.distributed.strategy_for` asks for it).

    Fixed from PyTorch-VAE: its permutation shuffled the dimensions *within* each code instead of
    each dimension *across* the batch; its discriminator step reused the graph of the previous VAE
    step (a "backward through the graph a second time" error); the discriminator's parameters were
    also in the VAE's optimizer.

    PyTorch-VAE's callers pick the objective with ``optimizer_idx``:
    ``loss_function(*out, M_N=..., optimizer_idx=0)`` is the VAE loss (the default) and
    ``loss_function(*out, optimizer_idx=1)`` the discriminator's, ``auxiliary_loss(out)`` with its
    ``D_TC_Loss``. Signature: PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, gamma)``;
    the discriminator's settings and VanillaVAE's arguments are keyword-only.
    """

    output_cls = VAEOutputWithZ
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD", "VAE_TC_Loss")

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        gamma: float = 40.0,
        *,
        discriminator_units: int = 1000,
        discriminator_layers: int = 6,
        discriminator_lr: float = 1e-4,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        self.gamma = gamma
        self.discriminator = LatentDiscriminator(latent_dim, discriminator_units, discriminator_layers)
        self.auxiliary_lr = discriminator_lr

    def loss(
        self, output: Any, M_N: float = 1.0, optimizer_idx: int | None = 0, **kwargs: Any
    ) -> dict[str, Tensor]:
        """The VAE loss (``optimizer_idx=0``) or, as PyTorch-VAE's second optimizer asks for it,
        the discriminator's loss (``optimizer_idx=1``, :meth:`auxiliary_loss`)."""
        if optimizer_idx == 1:
            return self.auxiliary_loss(output, **kwargs)
        if optimizer_idx not in (0, None):
            raise ValueError(
                f"FactorVAE has two objectives, optimizer_idx 0 (the VAE) and 1 (the discriminator), "
                f"not {optimizer_idx!r}"
            )
        return super().loss(output, M_N=M_N, **kwargs)

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        kl_penalty, terms = super().regularizer(output, kl_weight)
        tc = self.discriminator.log_odds(output.z).mean()  # density-ratio estimate of TC, nats
        return kl_penalty + self.gamma * tc, {**terms, "VAE_TC_Loss": tc}

    # -- the discriminator, trained by the second optimizer ----------------------------------------
    def auxiliary_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def auxiliary_optimizer_kwargs(self) -> dict[str, Any]:
        return {"betas": (0.5, 0.9)}  # the discriminator's Adam settings in Kim & Mnih (2018)

    def auxiliary_loss(self, output: Any, **kwargs: Any) -> dict[str, Tensor]:
        z = output.z.detach()  # (B, D): the VAE step is over; no gradient flows back into it
        codes = torch.cat([z, permute_dims(z)])  # (2B, D): joint samples, then product samples
        targets = torch.cat([torch.full_like(z[:, 0], JOINT), torch.full_like(z[:, 0], PRODUCT)]).long()
        logits = self.discriminator(codes)  # (2B, 2)
        loss = F.cross_entropy(logits, targets)  # the mean of the two halves' cross-entropies
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return {"loss": loss, "D_TC_Loss": loss.detach(), "D_Accuracy": accuracy}
