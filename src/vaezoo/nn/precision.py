"""Numerics that must stay in fp32 when the trainer runs the model under bf16 / fp16 autocast.

Autocast runs matmuls and convolutions in low precision. That is right for the networks, wrong for
quantities built from differences of large sums: variances (SSIM), Gram matrices and pairwise
distances (MMD, DIP's covariance, sliced Wasserstein projections, a codebook's nearest neighbour),
whose 8 mantissa bits in bf16 cancel into noise or NaN. Such functions are wrapped with
:func:`full_precision`. (Likelihood sums, KL terms and log-sum-exps need no wrapper: the trainer
hands ``loss_function`` fp32 tensors, and autocast leaves elementwise ops and reductions in the
dtype of their inputs.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

F = TypeVar("F", bound=Callable[..., Any])


def _fp32(value: Any) -> Any:
    if isinstance(value, Tensor) and value.dtype in (torch.bfloat16, torch.float16):
        return value.float()
    return value


def full_precision(fn: F) -> F:
    """Run ``fn`` with autocast off and its bf16 / fp16 tensor arguments cast to fp32."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        device_type = tensors[0].device.type if tensors else "cpu"
        with torch.autocast(device_type, enabled=False):
            return fn(*map(_fp32, args), **{k: _fp32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
