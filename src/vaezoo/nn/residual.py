"""Residual cells and resampling for deep hierarchical VAEs (Vahdat & Kautz 2020, NVAE Fig. 3;
Child 2021, VDVAE Fig. 3): shape-preserving residual branches at one resolution, and 2x down/up
sampling between resolutions."""

from __future__ import annotations

from torch import Tensor, nn


class ResidualCell(nn.Module):
    """x + branch(x), branch = SiLU -> conv3x3 -> SiLU -> conv3x3, (B, C, H, W) -> (B, C, H, W).

    The last convolution starts at zero, so every cell is the identity at initialisation and a deep
    stack starts as a shallow network (VDVAE scales its last layer down for the same reason).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.SiLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        )
        last = self.branch[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


def downsample(channels: int) -> nn.Module:
    """Halve H and W: a 3x3 stride-2 convolution, (B, C, H, W) -> (B, C, H/2, W/2)."""
    return nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)


def upsample(channels: int) -> nn.Module:
    """Double H and W: nearest-neighbour upsampling then a 3x3 convolution (no checkerboard)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, kernel_size=3, padding=1)
    )
