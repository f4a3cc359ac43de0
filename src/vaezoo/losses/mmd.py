"""Maximum mean discrepancy between two sample sets (Gretton et al. 2012, "A Kernel Two-Sample Test").

Used by InfoVAE and WAE-MMD to pull the aggregate posterior q(z) towards the prior p(z). Both kernels
share one scale convention, C = 2 * D * sigma^2 (Tolstikhin et al. 2018, Sec. 4), so an RBF and an
IMQ discrepancy of the same samples are of the same order and one ``reg_weight`` suits either:

- RBF: k(x, y) = exp(-||x - y||^2 / C)
- IMQ: k(x, y) = C / (C + ||x - y||^2)

Both equal 1 at distance 0 and decay on the same length scale.

Under data parallelism (DDP) the models call :func:`mmd` per process, on that process's own batch
of codes and prior draws: nothing is gathered, so P processes of batch B compare sets of B, not P * B.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

Kernel = Literal["rbf", "imq"]


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """||x_i - y_j||^2 for (N, D) and (M, D) samples -> (N, M).

    Written as an explicit difference (not ``torch.cdist``) so the gradient at distance 0 is 0, not NaN.
    """
    return (x.unsqueeze(1) - y.unsqueeze(0)).pow(2).sum(-1)


def rbf_kernel(squared: Tensor, scale: float) -> Tensor:
    return torch.exp(-squared / scale)


def imq_kernel(squared: Tensor, scale: float) -> Tensor:
    return scale / (scale + squared)


KERNELS: dict[str, Callable[[Tensor, float], Tensor]] = {"rbf": rbf_kernel, "imq": imq_kernel}


def kernel_scale(latent_dim: int, latent_var: float) -> float:
    """C = 2 * D * sigma^2: the expected squared distance between two draws of N(0, sigma^2 I_D)."""
    return 2.0 * latent_dim * latent_var


def _off_diagonal_mean(gram: Tensor) -> Tensor:
    n = gram.shape[0]
    return (gram.sum() - gram.diagonal().sum()) / (n * (n - 1))


def mmd(x: Tensor, y: Tensor, kernel: Kernel = "imq", latent_var: float = 1.0) -> Tensor:
    """Unbiased estimate of MMD^2 between samples x (N, D) and y (M, D); N, M >= 2. A scalar.

    MMD^2_u = 1/(N(N-1)) sum_{i!=j} k(x_i, x_j) + 1/(M(M-1)) sum_{i!=j} k(y_i, y_j)
              - 2/(NM) sum_{i,j} k(x_i, y_j)                      (Gretton et al. 2012, Lemma 6)

    The diagonals k(x_i, x_i) = 1 are left out of the within-set terms, which makes the estimate
    unbiased: its expectation is 0 when x and y come from one distribution (it can then be < 0).
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel '{kernel}' is not one of {tuple(KERNELS)}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("the unbiased MMD needs at least two samples on each side")
    k = KERNELS[kernel]
    scale = kernel_scale(x.shape[1], latent_var)
    within_x = _off_diagonal_mean(k(squared_distances(x, x), scale))
    within_y = _off_diagonal_mean(k(squared_distances(y, y), scale))
    across = k(squared_distances(x, y), scale).mean()
    return within_x + within_y - 2.0 * across
