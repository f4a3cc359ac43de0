"""How many images get no MS-SSIM reconstruction gradient at initialisation, per form.

The clamped form max(t, 0) of each scale's term gives an image with one anti-correlated scale a
score of 0 and, as a loss, a gradient of exactly 0; the shifted form (1 + t) / 2 keeps one for every
image (see vaezoo.losses.ssim.ms_ssim). Measured on freshly initialised MSSIMVAEs of
configs/mssim_vae.yaml, 5 seeds of 64 images each:

    .venv/bin/python benchmarks/ms_ssim_zero_gradients.py
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vaezoo.config import load_config
from vaezoo.data import render_dsprites
from vaezoo.losses.ssim import ms_ssim
from vaezoo.registry import create_model

SEEDS, IMAGES, CHANNELS = range(5), 64, 3


def grey_dsprites(seed: int) -> torch.Tensor:
    """dSprites shapes on 64x64 at grey levels in [0.1, 0.9] plus a little noise, 3 channels."""
    rng = np.random.default_rng(seed)
    classes = np.stack([rng.integers(0, k, IMAGES) for k in (3, 6, 40, 32, 32)], axis=1)
    x = torch.from_numpy(render_dsprites(classes)).float().unsqueeze(1).repeat(1, CHANNELS, 1, 1)
    return x * 0.8 + 0.1 * torch.rand_like(x)


def smooth_images(seed: int) -> torch.Tensor:
    """Random 8x8 images upsampled bicubically to 64x64, in [0, 1]."""
    low = torch.rand(IMAGES, CHANNELS, 8, 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(low, size=(64, 64), mode="bicubic").clamp(0, 1)


def zero_gradient_share(images: torch.Tensor, form: str, seed: int) -> float:
    torch.manual_seed(seed)
    config = load_config("configs/mssim_vae.yaml")
    model = create_model(config.model_name, **{**config.model_kwargs, "in_channels": CHANNELS})
    recons = model(images)[0].detach().requires_grad_(True)
    score = ms_ssim(recons, images, model.data_range, form=form)
    (grad,) = torch.autograd.grad((1 - score).sum(), recons)
    return (grad.flatten(1).abs().sum(1) == 0).float().mean().item()


def main() -> None:
    for name, make in (("grey dSprites", grey_dsprites), ("smooth random images", smooth_images)):
        for form in ("clamped", "shifted"):
            share = np.mean([zero_gradient_share(make(seed), form, seed) for seed in SEEDS])
            print(f"{name:22s} {form:8s} {share:6.1%} of images with no gradient")


if __name__ == "__main__":
    main()
