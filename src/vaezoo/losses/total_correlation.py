"""Total correlation of a latent code, estimated on one minibatch.

Chen et al. (2018), "Isolating Sources of Disentanglement in Variational Autoencoders", split the
KL term of the ELBO (their Eq. 2), for z ~ q(z|n) and the aggregate posterior q(z) = E_n q(z|n)::

    KL(q(z|n) || p(z)) = [log q(z|n) - log q(z)]                    index-code mutual information
                       + [log q(z) - sum_j log q(z_j)]              total correlation (TC)
                       + [sum_j log q(z_j) - sum_j log p(z_j)]      dimension-wise KL

q(z) and its marginals q(z_j) are mixtures over the whole data set, estimated from the minibatch
as a weighted mixture of the batch's posteriors, log q(z_i) ~ logsumexp_k(log w_ik + log q(z_i|n_k)):

- ``"mws"``, minibatch-weighted sampling (Sec. 4.1): every posterior of the batch weighs 1/M.
  The paper writes the normaliser as log(N*M); that divides each density estimate by N, adding
  the constants log N to the MI, (D-1) log N to the TC and -D log N to the dimension-wise KL (same
  gradients). We normalise the weights to sum to 1, so the logged terms estimate the quantities
  themselves (TC ~ 0 for independent latents).
- ``"mss"``, minibatch-stratified sampling (Appendix C.1): z_i's own posterior stands for itself
  (weight 1/N); the other N - 1 data points are split into M - 1 strata, each represented by one
  other sample of the batch: M - 2 strata of N/(M-1) points (weight 1/(M-1)) and one of the
  remaining N - M + 1 points (weight (N-M+1)/(N(M-1))). The weights sum to 1 and need ``dataset_size``.

``permute_dims`` (Kim & Mnih 2018, "Disentangling by Factorising", Alg. 1) draws from the product of
the marginals instead, for FactorVAE's discriminator.

Under data parallelism (DDP) every estimate here is computed per process, from that process's own
minibatch: nothing is gathered across processes, so P processes of batch B estimate with
minibatches of B, not P * B (``dataset_size`` stays the size of the whole training set).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from vaezoo.nn.distributions import DiagonalGaussian, log_standard_normal

TC_SAMPLINGS = ("mws", "mss")


class KLDecomposition(NamedTuple):
    """Chen et al.'s three terms per example, (B,) each; they add up to log q(z|n) - log p(z)."""

    mutual_information: Tensor
    total_correlation: Tensor
    dimensionwise_kl: Tensor


def pairwise_log_density(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """log q(z_ij | n_k) of sample i under posterior k, per latent dimension j: (B, D) -> (B, B, D)."""
    # A trailing axis of size 1, so log_prob's sum over the last axis keeps the dimensions apart.
    posteriors = DiagonalGaussian(mu[None, :, :, None], log_var[None, :, :, None])  # (1, B, D, 1)
    return posteriors.log_prob(z[:, None, :, None])  # (B, B, D)


def log_importance_weights(
    batch_size: int, sampling: Literal["mws", "mss"], dataset_size: int | None = None
) -> Tensor:
    """log w_ik, the weight of posterior k in the estimate of q(z_i); every row sums to 1. (M, M)"""
    if sampling not in TC_SAMPLINGS:
        raise ValueError(f"sampling '{sampling}' is not one of {TC_SAMPLINGS}")
    m = batch_size
    if sampling == "mws" or m == 1:
        return torch.full((m, m), -math.log(m))
    if dataset_size is None:
        raise ValueError(
            "minibatch-stratified sampling ('mss') needs dataset_size, the number of training images"
        )
    n = max(dataset_size, m)
    weights = torch.full((m, m), 1.0 / (m - 1))
    rows = torch.arange(m)
    weights[rows, (rows + 1) % m] = (n - m + 1) / (n * (m - 1))  # the stratum of the remaining points
    weights[rows, rows] = 1.0 / n  # z_i's own posterior
    return weights.log()


def kl_decomposition(
    z: Tensor,
    mu: Tensor,
    log_var: Tensor,
    sampling: Literal["mws", "mss"] = "mws",
    dataset_size: int | None = None,
) -> KLDecomposition:
    """MI, TC and dimension-wise KL per example (Chen et al. 2018, Eq. 2) from a batch z ~ q(z|n)."""
    log_q_pairs = pairwise_log_density(z, mu, log_var)  # (B, B, D)
    log_w = log_importance_weights(z.shape[0], sampling, dataset_size).to(z)  # (B, B)
    log_q_z_given_n = DiagonalGaussian(mu, log_var).log_prob(z)  # (B,)
    log_q_z = torch.logsumexp(log_w + log_q_pairs.sum(dim=2), dim=1)  # (B,)
    log_prod_q_zj = torch.logsumexp(log_w.unsqueeze(2) + log_q_pairs, dim=1).sum(dim=1)  # (B,)
    return KLDecomposition(
        mutual_information=log_q_z_given_n - log_q_z,
        total_correlation=log_q_z - log_prod_q_zj,
        dimensionwise_kl=log_prod_q_zj - log_standard_normal(z),
    )


def total_correlation(
    z: Tensor,
    mu: Tensor,
    log_var: Tensor,
    sampling: Literal["mws", "mss"] = "mws",
    dataset_size: int | None = None,
) -> Tensor:
    """The batch mean of the TC estimate KL(q(z) || prod_j q(z_j)), in nats: a scalar."""
    return kl_decomposition(z, mu, log_var, sampling, dataset_size).total_correlation.mean()


def permute_dims(z: Tensor) -> Tensor:
    """Samples of prod_j q(z_j): each latent dimension shuffled across the batch by its own random
    permutation (Kim & Mnih 2018, Alg. 1). (B, D) -> (B, D)"""
    order = torch.argsort(torch.rand(z.shape, device=z.device), dim=0)  # (B, D), a permutation per column
    return torch.gather(z, 0, order)
