"""The DIP regulariser: moment matching of the aggregate posterior to N(0, I).

Kumar, Sattigeri & Balakrishnan (2018), "Variational Inference of Disentangled Latent Concepts from
Unlabeled Observations" (ICLR), penalise the covariance of the inferred latents::

    lambda_od * sum_{i != j} Cov_ij^2  +  lambda_d * sum_i (Cov_ii - 1)^2

with Cov = Cov_p(x)[mu(x)] for DIP-VAE-I (Eq. 6), and Cov = Cov_q(z)[z] = E_p(x)[diag sigma^2(x)] +
Cov_p(x)[mu(x)] for DIP-VAE-II (Eq. 7). Both expectations over p(x) are taken over the minibatch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaezoo.nn.precision import full_precision


@full_precision
def latent_covariance(mu: Tensor, log_var: Tensor | None = None) -> Tensor:
    """Cov[mu(x)] over the batch (centred on the batch mean, divided by B); given ``log_var``, plus
    E[diag sigma^2(x)], which makes it Cov_q(z)[z]. (B, D) -> (D, D)"""
    centred = mu - mu.mean(dim=0, keepdim=True)  # (B, D): centred over the batch, not over D
    covariance = centred.T @ centred / mu.shape[0]  # (D, D)
    if log_var is not None:
        covariance = covariance + torch.diag(log_var.exp().mean(dim=0))  # + E[sigma^2], not E[sigma^4]
    return covariance


def dip_penalty(covariance: Tensor, lambda_offdiag: float, lambda_diag: float) -> Tensor:
    """lambda_od * (sum of squared off-diagonal entries) + lambda_d * sum (diagonal - 1)^2: a scalar."""
    diagonal = torch.diagonal(covariance)  # (D,)
    off_diagonal = covariance - torch.diag(diagonal)  # (D, D)
    return lambda_offdiag * off_diagonal.pow(2).sum() + lambda_diag * (diagonal - 1).pow(2).sum()
