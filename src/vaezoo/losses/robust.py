"""Robust reconstruction errors: the log-cosh loss of Chen et al. (2019), "Log Hyperbolic Cosine Loss
Improves Variational Auto-Encoder".

f(t; a) = (1/a) log cosh(a t) is a t^2 / 2 for small |t| (smooth like the squared error) and
|t| - log(2)/a for large |t| (robust like the absolute error); its gradient is tanh(a t).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from vaezoo.losses.reconstruction import RECON_REDUCTIONS


def log_cosh(t: Tensor, alpha: float = 1.0) -> Tensor:
    """(1/alpha) * log cosh(alpha * t), elementwise, without overflow for any alpha and t.

    log cosh(u) = |u| + log(1 + exp(-2|u|)) - log 2, and exp(-2|u|) <= 1 never overflows
    (PyTorch-VAE evaluated exp(-2 alpha t), which is inf for alpha * t < -44 in float32).
    """
    u = (alpha * t).abs()
    return (u + F.softplus(-2.0 * u) - math.log(2.0)) / alpha


def per_example(error: Tensor, reduction: str = "mean") -> Tensor:
    """Reduce an elementwise error (B, ...) to (B,): mean or sum over everything but the batch."""
    flat = error.flatten(start_dim=1)
    if reduction == "mean":
        return flat.mean(dim=1)
    if reduction == "sum":
        return flat.sum(dim=1)
    raise ValueError(f"recon_reduction '{reduction}' is not one of {RECON_REDUCTIONS}")


def log_cosh_error(recons: Tensor, target: Tensor, alpha: float = 10.0, reduction: str = "mean") -> Tensor:
    """Log-cosh reconstruction error per example, (B, ...) -> (B,), reduced like ``squared_error``."""
    return per_example(log_cosh(recons - target, alpha), reduction)
