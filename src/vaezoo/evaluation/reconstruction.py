"""Reconstruction quality: MSE, PSNR and SSIM per image, as plain functions of image tensors."""

from __future__ import annotations

import torch
from torch import Tensor

from vaezoo.losses.ssim import ssim


def check_pair(inputs: Tensor, recons: Tensor) -> None:
    """Both (B, C, H, W) with the same shape, else a ValueError saying which shapes came."""
    if inputs.dim() != 4 or inputs.shape != recons.shape:
        raise ValueError(
            f"expected inputs and reconstructions of one shape (B, C, H, W), got {tuple(inputs.shape)} "
            f"and {tuple(recons.shape)}"
        )


def mse_per_image(inputs: Tensor, recons: Tensor) -> Tensor:
    """Mean squared error over the pixels of each image, (B,)."""
    check_pair(inputs, recons)
    return (recons.float() - inputs.float()).pow(2).flatten(start_dim=1).mean(dim=1)


def psnr_per_image(inputs: Tensor, recons: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio of each image in dB, 10 log10(range^2 / MSE), (B,).

    A perfect reconstruction has infinite PSNR; it is capped at 100 dB so averages stay finite.
    """
    mse = mse_per_image(inputs, recons)
    return (10 * torch.log10(data_range**2 / mse.clamp_min(1e-10))).clamp_max(100.0)


def ssim_per_image(inputs: Tensor, recons: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity (Wang et al. 2004) of each image pair with an 11x11 Gaussian window, (B,)."""
    check_pair(inputs, recons)
    return ssim(recons.float(), inputs.float(), data_range=data_range)


def reconstruction_metrics(inputs: Tensor, recons: Tensor, data_range: float = 1.0) -> dict[str, float]:
    """Averages over a batch: ``mse`` (per pixel), ``psnr`` (dB, mean of per-image values) and ``ssim``."""
    return {
        "mse": mse_per_image(inputs, recons).mean().item(),
        "psnr": psnr_per_image(inputs, recons, data_range).mean().item(),
        "ssim": ssim_per_image(inputs, recons, data_range).mean().item(),
    }
