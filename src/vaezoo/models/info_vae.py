"""InfoVAE (MMD-VAE) of Zhao, Song & Ermon, AAAI 2019."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from vaezoo.losses import gaussian_kl
from vaezoo.losses.mmd import KERNELS, Kernel, mmd
from vaezoo.models.vanilla_vae import VAEOutputWithZ, VanillaVAE
from vaezoo.registry import register_model


@register_model(aliases=("MMDVAE", "INFOVAE_MMD"))
class InfoVAE(VanillaVAE):
    """InfoVAE, Zhao, Song & Ermon 2019, "InfoVAE: Balancing Learning and Inference in Variational
    Autoencoders" (AAAI), Eq. 6/7 with the divergence D = MMD (the MMD-VAE):

        loss = beta * recon + (1 - alpha) * M_N * KL(q(z|x) || p(z))
               + (alpha + lambda - 1) * MMD(q(z), p(z))

    alpha weighs the mutual information I(x; z) (alpha = 0: the ELBO plus an MMD term; alpha = 1:
    no per-example KL at all) and lambda (``reg_weight``) the divergence between the aggregate
    posterior q(z) and p(z) = N(0, I). The MMD compares the batch of sampled z with as many prior
    draws, unbiased, with the RBF or IMQ kernel at scale C = 2 * D * ``latent_var``
    (:mod:`vaezoo.losses.mmd`). Both weights must be >= 0, or the loss is unbounded below.
    ``beta`` is PyTorch-VAE's weight of the reconstruction term (its default there is 5; here 1,
    the paper's objective, so that leaving it out changes nothing); ``Reconstruction_Loss`` is
    logged unweighted, as PyTorch-VAE logs it.

    Signature: PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, alpha, beta,
    reg_weight, kernel_type, latent_var)``, then VanillaVAE's keyword-only arguments.

    Fixed against PyTorch-VAE: IMQ and RBF on one scale with their diagonals removed; no extra
    1/(B(B-1)) factor. Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD``, ``MMD``.

    Under DDP the MMD is computed per process, on its own batch of codes and prior draws (not
    gathered): a run on P processes of batch B estimates it from batches of B, like one process
    with batch B, not P * B; the gradients of those per-process estimates are then averaged.
    """

    output_cls = VAEOutputWithZ
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD", "MMD")

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        alpha: float = -0.5,
        beta: float = 1.0,
        reg_weight: float = 100.0,
        kernel_type: Kernel = "imq",
        latent_var: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        if alpha > 1 or alpha + reg_weight < 1:
            raise ValueError(
                f"alpha={alpha}, reg_weight={reg_weight}: need alpha <= 1 and alpha + reg_weight >= 1 so "
                "that the KL weight (1 - alpha) and the MMD weight (alpha + reg_weight - 1) are >= 0"
            )
        if beta < 0:
            raise ValueError(f"beta, the reconstruction weight, must be >= 0, got {beta}")
        if kernel_type not in KERNELS:
            raise ValueError(f"kernel_type '{kernel_type}' is not one of {tuple(KERNELS)}")
        self.alpha = alpha
        self.beta = beta
        self.reg_weight = reg_weight
        self.kernel_type = kernel_type
        self.latent_var = latent_var

    @property
    def reconstruction_weight(self) -> float:
        return self.beta

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        kld = gaussian_kl(output.mu, output.log_var).mean()
        prior_z = torch.randn_like(output.z)  # (B, D) draws of p(z) = N(0, I)
        divergence = mmd(output.z, prior_z, self.kernel_type, self.latent_var)
        penalty = (1 - self.alpha) * kl_weight * kld + (self.alpha + self.reg_weight - 1) * divergence
        return penalty, {"KLD": kld, "MMD": divergence}
