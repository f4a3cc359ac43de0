"""Sliced Wasserstein distance between two equally large sample sets (Kolouri et al. 2019,
"Sliced-Wasserstein Auto-Encoders", ICLR; Bonneel et al. 2015).

Project both sets on L random unit directions; in one dimension optimal transport matches the sorted
values, so SW_p^p is the mean over directions and ranks of |sorted(x.theta) - sorted(y.theta)|^p.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from vaezoo.nn.precision import full_precision

ProjectionDistribution = Literal["normal", "cauchy"]


def random_directions(
    num_projections: int,
    dim: int,
    distribution: ProjectionDistribution = "normal",
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(L, D) directions on the unit sphere. "normal" draws them uniformly on the sphere; "cauchy"
    (PyTorch-VAE's option) favours directions close to the coordinate axes."""
    if distribution == "normal":
        raw = torch.randn(num_projections, dim, device=device, dtype=dtype)
    elif distribution == "cauchy":
        raw = torch.empty(num_projections, dim, device=device, dtype=dtype).cauchy_()
    else:
        raise ValueError(f"projection distribution '{distribution}' is not one of ('normal', 'cauchy')")
    return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)


@full_precision
def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    num_projections: int = 50,
    p: float = 2.0,
    distribution: ProjectionDistribution = "normal",
    directions: Tensor | None = None,
) -> Tensor:
    """Monte Carlo estimate of SW_p^p between samples x (N, D) and y (N, D); a scalar >= 0.

    The cost is c(a, b) = |a - b|^p: the absolute value comes before the power, so odd or
    fractional p stay non-negative (PyTorch-VAE raised the signed difference to the power p).
    ``directions`` (L, D) fixes the projections (tests); by default L fresh ones are drawn.
    """
    if x.shape != y.shape:
        raise ValueError(
            f"sliced Wasserstein needs equally many samples of one size, got {x.shape} and {y.shape}"
        )
    if directions is None:
        directions = random_directions(num_projections, x.shape[1], distribution, x.device, x.dtype)
    projected_x = torch.sort(x @ directions.T, dim=0).values  # (N, L), sorted along the samples
    projected_y = torch.sort(y @ directions.T, dim=0).values  # (N, L)
    return (projected_x - projected_y).abs().pow(p).mean()
