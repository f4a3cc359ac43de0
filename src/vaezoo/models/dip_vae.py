"""DIP-VAE: the Gaussian VAE with the covariance of its inferred latents pushed towards the identity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor

from vaezoo.losses.dip import dip_penalty, latent_covariance
from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.registry import register_model

DIP_TYPES = ("i", "ii")


@register_model
class DIPVAE(VanillaVAE):
    """DIP-VAE I and II: Kumar, Sattigeri & Balakrishnan (2018), "Variational Inference of
    Disentangled Latent Concepts from Unlabeled Observations" (ICLR).

    The ELBO plus a penalty matching moments of the aggregate posterior q(z) to the prior N(0, I)::

        loss = recon + M_N * KL + lambda_offdiag * sum_{i != j} Cov_ij^2 + lambda_diag * sum_i (Cov_ii - 1)^2

    - ``dip_type="i"`` (Eq. 6): Cov = Cov_p(x)[mu(x)], the covariance of the posterior means.
    - ``dip_type="ii"`` (Eq. 7): Cov = Cov_q(z)[z] = E_p(x)[diag sigma^2(x)] + Cov_p(x)[mu(x)].

    Expectations over p(x) are batch means (see :mod:`vaezoo.losses.dip`). disentanglement_lib
    uses lambda_diag = 10 * lambda_offdiag for DIP-I and lambda_diag = lambda_offdiag for DIP-II.
    Logged: ``KLD`` and ``DIP_Loss`` (the penalty, lambdas included).

    Fixed from PyTorch-VAE: mu was centred over the latent dimensions instead of the batch, the
    covariance was not divided by the batch size, and the DIP-II term added E[sigma^4] taken along
    the wrong axis instead of E[sigma^2]; DIP-I was missing.

    Signature: PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, lambda_diag,
    lambda_offdiag)``; ``dip_type`` and VanillaVAE's arguments are keyword-only.
    """

    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD", "DIP_Loss")

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        lambda_diag: float = 10.0,
        lambda_offdiag: float = 5.0,
        *,
        dip_type: Literal["i", "ii"] = "ii",
        **kwargs: Any,
    ) -> None:
        if dip_type not in DIP_TYPES:
            raise ValueError(f"dip_type '{dip_type}' is not one of {DIP_TYPES}")
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        self.lambda_diag = lambda_diag
        self.lambda_offdiag = lambda_offdiag
        self.dip_type = dip_type

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        kl_penalty, terms = super().regularizer(output, kl_weight)
        log_var = output.log_var if self.dip_type == "ii" else None  # DIP-II adds E[sigma^2]
        covariance = latent_covariance(output.mu, log_var)  # (D, D)
        dip = dip_penalty(covariance, self.lambda_offdiag, self.lambda_diag)
        return kl_penalty + dip, {**terms, "DIP_Loss": dip}
