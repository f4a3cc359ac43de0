"""A gated PixelCNN over maps of discrete codes: the autoregressive prior of VQ-VAE.

van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu, "Conditional Image Generation
with PixelCNN Decoders" (NeurIPS 2016), Sec. 2.1-2.2. A map c of h x w indices, each one of K codes,
is modelled in raster order (row by row, left to right)::

    p(c) = prod_{i, j} p(c_ij | c_<(i, j))        (Eq. 1, over codes instead of pixels)

Each layer keeps two stacks (Fig. 2). The vertical stack sees only rows above: its (k/2 + 1) x k
convolution covers rows i - k/2 .. i at columns j - k/2 .. j + k/2, and it reaches the horizontal
stack shifted down by one row, so position (i, j) gets rows < i only, including the columns to its
right (the original PixelCNN's masked 3x3 stack never sees those: its blind spot). The horizontal
stack sees the current row to the left: a 1 x (k/2 + 1) convolution over columns j - k/2 .. j. The
first layer is of mask type A (its horizontal input is shifted right by one, so position (i, j)
never sees its own code); the others are of type B (they may see position j of the layer below,
which itself never saw the code at j) and add a residual connection. Both stacks use the gated
unit of Eq. 2::

    y = tanh(W_f * x) . sigmoid(W_g * x)

and the vertical stack's 2C pre-activations enter the horizontal one through a 1x1 convolution.
A ReLU, a 1x1 convolution, a ReLU and a 1x1 convolution to K logits per position make the head.

Shifts and one-sided padding do what the paper's masks do, without computing masked-out taps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def shift_down(x: Tensor) -> Tensor:
    """(B, C, h, w): row i takes row i - 1's values; row 0 is zeros."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def shift_right(x: Tensor) -> Tensor:
    """(B, C, h, w): column j takes column j - 1's values; column 0 is zeros."""
    return F.pad(x, (1, 0))[:, :, :, :-1]


def gate(x: Tensor) -> Tensor:
    """Eq. 2: tanh of the first half of the channels times sigmoid of the second, (B, 2C, ...) -> (B, C, ...)."""
    features, gates = x.chunk(2, dim=1)
    return torch.tanh(features) * torch.sigmoid(gates)


class GatedLayer(nn.Module):
    """One gated layer of the vertical and horizontal stacks (Fig. 2), mask type "A" or "B"."""

    def __init__(self, channels: int, kernel_size: int, mask_type: str) -> None:
        super().__init__()
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        self.radius, self.mask_type = kernel_size // 2, mask_type
        self.vertical = nn.Conv2d(channels, 2 * channels, (self.radius + 1, kernel_size))
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, self.radius + 1))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, kernel_size=1)
        self.horizontal_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, vertical: Tensor, horizontal: Tensor) -> tuple[Tensor, Tensor]:
        half = self.radius
        v = self.vertical(F.pad(vertical, (half, half, half, 0)))  # (B, 2C, h, w): rows <= i
        h_in = shift_right(horizontal) if self.mask_type == "A" else horizontal  # A: not position j
        h = self.horizontal(F.pad(h_in, (half, 0, 0, 0)))  # (B, 2C, h, w): row i, columns <= j
        h = h + self.vertical_to_horizontal(shift_down(v))  # rows < i only: nothing at or after (i, j)
        h = self.horizontal_out(gate(h))  # (B, C, h, w)
        if self.mask_type == "B":
            h = h + horizontal  # the residual; type A's input holds the code at (i, j) itself
        return gate(v), h


class GatedPixelCNN(nn.Module):
    """Logits (B, K, h, w) of p(c_ij | c_<(i, j)) for index maps (B, h, w) of ``num_codes`` codes.

    An embedding of the indices feeds both stacks; ``num_layers`` gated layers (the first of mask
    type A) with ``kernel_size`` x ``kernel_size`` receptive steps; a 1x1 head to K logits.
    With r = ``num_layers * (kernel_size // 2)``, position (i, j) sees the r + 1 rows above it,
    from column j - r to j + r, and the r + 1 codes to its left.
    """

    def __init__(self, num_codes: int, channels: int = 64, num_layers: int = 6, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and at least 3, got {kernel_size}")
        if min(num_codes, channels, num_layers) < 1:
            raise ValueError(
                f"num_codes, channels and num_layers must be positive, got {(num_codes, channels, num_layers)}"
            )
        self.num_codes = num_codes
        self.embedding = nn.Embedding(num_codes, channels)
        self.layers = nn.ModuleList(
            GatedLayer(channels, kernel_size, "A" if k == 0 else "B") for k in range(num_layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(channels, num_codes, kernel_size=1),
        )

    def forward(self, codes: Tensor) -> Tensor:
        x = self.embedding(codes).permute(0, 3, 1, 2)  # (B, h, w) -> (B, C, h, w)
        vertical = horizontal = x
        for layer in self.layers:
            vertical, horizontal = layer(vertical, horizontal)
        return self.head(horizontal)  # (B, K, h, w)

    def nll(self, codes: Tensor) -> Tensor:
        """-log p(c_ij | c_<(i, j)) in nats at every position, (B, h, w)."""
        return F.cross_entropy(self(codes), codes, reduction="none")

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        height: int,
        width: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Index maps (n, h, w) drawn position by position in raster order, all samples at once:
        h * w passes, each over the rows so far (later rows cannot change earlier logits).
        ``temperature`` divides the logits (< 1: fewer unlikely codes); ``generator`` is a CPU one."""
        device = self.embedding.weight.device
        codes = torch.zeros(num_samples, height, width, dtype=torch.long, device=device)
        for i in range(height):
            for j in range(width):
                logits = self(codes[:, : i + 1])[:, :, i, j].float()  # (n, K)
                probs = torch.softmax(logits / temperature, dim=1).cpu()
                codes[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0].to(device)
        return codes
