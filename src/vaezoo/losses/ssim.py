"""Structural similarity: SSIM (Wang et al. 2004, "Image Quality Assessment: From Error Visibility to
Structural Similarity") and its multi-scale form MS-SSIM (Wang, Simoncelli & Bovik 2003,
"Multi-Scale Structural Similarity for Image Quality Assessment").

Pure functions of (B, C, H, W) tensors returning one value per image, (B,), averaged over channels
and positions. Statistics are local means under a normalised Gaussian window (sigma 1.5, 11 taps),
computed over the "valid" region; a window larger than the image shrinks to the image.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vaezoo.nn.precision import full_precision

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, Sec. 3.1
K1, K2 = 0.01, 0.03  # stabilising constants C1 = (K1 L)^2, C2 = (K2 L)^2 (Wang et al. 2004, Eq. 7, 9)


def gaussian_window(size: int, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> Tensor:
    """(size,) taps exp(-(x - c)^2 / (2 sigma^2)) around the centre c, normalised to sum to 1.

    The exponent is negative (PyTorch-VAE dropped the minus sign, giving an inverted window).
    """
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def _local_mean(images: Tensor, window: Tensor) -> Tensor:
    """Separable Gaussian filter of every channel on its own: (B, C, H, W) -> (B, C, H-k+1, W-k+1)."""
    channels = images.shape[1]
    vertical = window.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    horizontal = window.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    filtered = F.conv2d(images, vertical, groups=channels)
    return F.conv2d(filtered, horizontal, groups=channels)


@full_precision
def ssim_terms(
    x: Tensor, y: Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5
) -> tuple[Tensor, Tensor]:
    """Per-image SSIM and contrast-structure term cs, each (B,) (Wang et al. 2004, Eq. 13).

    SSIM = l * cs with l = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) and
    cs = (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2), averaged over the valid positions.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"SSIM compares two (B, C, H, W) batches of one shape, got {x.shape} and {y.shape}")
    size = min(window_size, x.shape[-2], x.shape[-1])
    window = gaussian_window(size, sigma, x.dtype).to(x.device)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_x, mu_y = _local_mean(x, window), _local_mean(y, window)
    var_x = _local_mean(x * x, window) - mu_x**2
    var_y = _local_mean(y * y, window) - mu_y**2
    cov_xy = _local_mean(x * y, window) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    ssim_map = luminance * contrast_structure
    return ssim_map.flatten(start_dim=1).mean(dim=1), contrast_structure.flatten(start_dim=1).mean(dim=1)


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of each image pair, (B,); 1 for identical images. ``data_range``: 1 for [0, 1] data, 2 for [-1, 1]."""
    return ssim_terms(x, y, data_range, window_size, sigma)[0]


def num_scales(image_size: int, max_scales: int = len(MS_SSIM_WEIGHTS), min_size: int = 4) -> int:
    """How many dyadic scales fit: the coarsest must still be ``min_size`` pixels (32 px -> 4, 64 px -> 5)."""
    if image_size < min_size:
        return 1
    return min(max_scales, int(math.log2(image_size / min_size)) + 1)


MsSsimForm = Literal["clamped", "shifted"]


def ms_ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    form: MsSsimForm = "clamped",
) -> Tensor:
    """Multi-scale SSIM of each image pair, (B,), in [0, 1] (Wang et al. 2003, Eq. 7):

        MS-SSIM = l_M^{w_M} * prod_{j=1..M} cs_j^{w_j}

    with scale j+1 the 2x2 average-pooled scale j. Images too small for all five scales use the
    first M weights, renormalised to sum to 1. SSIM and cs lie in [-1, 1], and a fractional power
    of a negative base is NaN, so each factor t is first mapped into [0, 1]:

    - ``"clamped"``: max(t, 0), the metric as usually reported. An image with one anti-correlated
      scale scores 0 and, as a loss, gets no gradient at all (relu and the product are flat there);
      with a freshly initialised decoder that is a few percent of the images or more.
    - ``"shifted"``: (1 + t) / 2, for training: monotone in t, still 1 for identical images, and
      zero only for a perfectly anti-correlated scale, so every image keeps a gradient.
    """
    if form not in ("clamped", "shifted"):
        raise ValueError(f"ms_ssim form '{form}' is not one of 'clamped', 'shifted'")
    scales = num_scales(min(x.shape[-2], x.shape[-1]), len(weights))
    exponents = torch.tensor(weights[:scales], dtype=x.dtype, device=x.device)
    exponents = exponents / exponents.sum()
    factors = []
    for scale in range(scales):
        similarity, contrast_structure = ssim_terms(x, y, data_range, window_size, sigma)
        last = scale == scales - 1
        factors.append(similarity if last else contrast_structure)  # (B,)
        if not last:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    terms = torch.stack(factors, dim=1)  # (B, scales)
    terms = torch.relu(terms) if form == "clamped" else (1 + terms) / 2
    return torch.prod(terms**exponents, dim=1)  # (B,)
