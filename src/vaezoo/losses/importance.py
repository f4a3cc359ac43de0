"""Importance-weighted bounds on log p(x) (Burda et al. 2016; Rainforth et al. 2018).

A log importance weight per latent sample z_i ~ q(z|x) is::

    log w_i = log p(x|z_i) + M_N * (log p(z_i) - log q(z_i|x))

and the bound is the log of the mean weight. Everything here is a pure function of tensors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def log_importance_weights(
    log_likelihood: Tensor, log_prior: Tensor, log_posterior: Tensor, kl_weight: float = 1.0
) -> Tensor:
    """log w = log p(x|z) + kl_weight * (log p(z) - log q(z|x)), elementwise (Burda et al. 2016, Eq. 8).

    ``kl_weight`` (the trainer's ``M_N``) weighs the prior/posterior ratio as it weighs the KL in the
    ELBO; 1 gives the true importance weights.
    """
    return log_likelihood + kl_weight * (log_prior - log_posterior)


def log_mean_exp(values: Tensor, dim: int = -1) -> Tensor:
    """log(mean(exp(values))) along ``dim``, computed stably through logsumexp."""
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])


def importance_weights(log_weights: Tensor, dim: int = -1) -> Tensor:
    """Normalised weights w_i / sum_j w_j = softmax(log w) along ``dim``: they sum to 1 and the
    sample with the largest log-weight gets the largest weight. They are the weights of the
    bound's gradient, sum_i w~_i * grad log w_i (Burda et al. 2016, Eq. 14)."""
    return torch.softmax(log_weights, dim=dim)


def multi_sample_bound(log_weights: Tensor, num_estimates: int = 1) -> Tensor:
    """The importance-weighted bound per example from (B, M*K) log-weights -> (B,).

    The M*K samples form ``num_estimates`` = M groups of K; the bound is the mean over groups of
    log mean_k w_{m,k}: IWAE-K for M = 1 (Burda et al. 2016, Eq. 8), MIWAE-(M, K) otherwise
    (Rainforth et al. 2018, Sec. 4). M*K = 1 is the one-sample ELBO.
    """
    batch, total = log_weights.shape
    if total % num_estimates:
        raise ValueError(f"{total} samples cannot be split into {num_estimates} equal groups")
    grouped = log_weights.view(batch, num_estimates, total // num_estimates)  # (B, M, K)
    return log_mean_exp(grouped, dim=-1).mean(dim=-1)  # (B,)
