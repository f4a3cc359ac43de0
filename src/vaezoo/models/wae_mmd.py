"""Wasserstein auto-encoders: a deterministic encoder whose aggregate code distribution q(z) is pulled
towards the prior p(z) by a divergence between samples. :class:`LatentMatchingAutoencoder` is the
shared pipeline (WAE-MMD here, SWAE in ``swae.py``); a variant supplies ``divergence``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from vaezoo.losses.mmd import KERNELS, Kernel, mmd
from vaezoo.models.autoencoder import PointMassAutoencoder
from vaezoo.registry import register_model


class LatentMatchingAutoencoder(PointMassAutoencoder):
    """Deterministic auto-encoder z = f(x) with prior p(z) = N(0, latent_var * I), trained on

        loss = mean_batch[ recon(x, x_hat) ] + reg_weight * divergence(q(z), p(z))

    where the divergence compares the batch of codes with as many prior draws. It is the
    deterministic-encoder pipeline (:class:`~vaezoo.models.autoencoder.PointMassAutoencoder`: a
    linear code head, a point-mass "posterior", no KL per dimension, no likelihood bound) with the
    divergence as ``regularizer``. There is no KL term, so ``M_N`` (the KL weight) is accepted and
    ignored. Subclasses set ``divergence_key`` (and ``loss_keys``) and implement
    :meth:`divergence`. A ``likelihood`` other than mse makes the cost c = -log p(x|z).
    ``reg_weight`` and ``latent_var`` are keyword-only here: each subclass puts them where
    PyTorch-VAE's constructor has them.
    """

    divergence_key = "Divergence"  # the name of the divergence in the loss dict
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "Divergence")

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        *,
        reg_weight: float = 100.0,
        latent_var: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        if latent_var <= 0:
            raise ValueError(f"latent_var must be positive, got {latent_var}")
        self.reg_weight = reg_weight
        self.latent_var = latent_var

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        """z ~ N(0, latent_var * I), the prior the codes are matched to."""
        return math.sqrt(self.latent_var) * torch.randn(num_samples, self.latent_dim, device=device)

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        prior_z = self.sample_prior(output.z.shape[0], output.z.device).to(output.z.dtype)  # (B, D)
        divergence = self.divergence(output.z, prior_z)
        return self.reg_weight * divergence, {self.divergence_key: divergence}

    def divergence(self, z: Tensor, prior_z: Tensor) -> Tensor:
        """A sample-based divergence between codes (B, D) and prior draws (B, D); a scalar."""
        raise NotImplementedError


@register_model
class WAE_MMD(LatentMatchingAutoencoder):
    """Wasserstein Auto-Encoder with an MMD penalty, Tolstikhin et al. 2018, "Wasserstein
    Auto-Encoders" (ICLR), Algorithm 2 (WAE-MMD):

        loss = mean_batch[ c(x, G(Q(x))) ] + lambda * MMD_k(q(z), p(z))

    with a deterministic encoder Q, lambda = ``reg_weight``, p(z) = N(0, sigma_z^2 I) (``latent_var``
    = sigma_z^2, default 1; the paper used 2 on CelebA) and the unbiased MMD estimate with the RBF or IMQ kernel at scale C = 2 * D * sigma_z^2 (the paper's
    Sec. 4 choice; see :mod:`vaezoo.losses.mmd`). ``sample`` decodes draws of that prior.

    Fixed against PyTorch-VAE: IMQ and RBF are on one scale (PyTorch-VAE summed one kernel matrix
    and averaged the other, and kept the RBF diagonal); no extra 1/(B(B-1)) factor on an already
    averaged MMD; the prior that is sampled is the prior the codes were matched to. ``latent_var``
    is sigma_z^2, the prior's variance, as in the paper: PyTorch-VAE set the kernel scale from it
    but drew its prior samples from N(0, I) whatever its value.
    Loss keys: ``loss``, ``Reconstruction_Loss``, ``MMD``.

    Signature: PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, reg_weight,
    kernel_type, latent_var)`` (PyTorch-VAE's default latent_var is 2, vaezoo's 1), then
    ConvAutoencoder's keyword-only arguments. As there, ``M_N`` plays no part in the loss.

    Under DDP the MMD is computed per process, on its own batch of codes and prior draws (not
    gathered): P processes of batch B estimate it from batches of B, not from one of P * B.
    """

    divergence_key = "MMD"
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "MMD")

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        reg_weight: float = 100.0,
        kernel_type: Kernel = "imq",
        latent_var: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            in_channels, latent_dim, hidden_dims, reg_weight=reg_weight, latent_var=latent_var, **kwargs
        )
        if kernel_type not in KERNELS:
            raise ValueError(f"kernel_type '{kernel_type}' is not one of {tuple(KERNELS)}")
        self.kernel_type = kernel_type

    def divergence(self, z: Tensor, prior_z: Tensor) -> Tensor:
        return mmd(z, prior_z, self.kernel_type, self.latent_var)
