"""Spectral regularisation by power iteration (Vahdat & Kautz 2020, NVAE Sec. 3.2; the power
method of Miyato et al. 2018, "Spectral Normalization for Generative Adversarial Networks", Alg. 1).

A convolution's weight (C_out, C_in, k, k) is read as the matrix W (C_out, C_in k k); its largest
singular value s(W) is estimated by power iteration, u <- W v / |W v|, v <- W^T u / |W^T u|,
s ~ u^T W v, with u and v kept between calls so one iteration per training step suffices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SpectralNorms(nn.Module):
    """The largest singular values of a fixed list of weights, by persistent power iteration."""

    def __init__(self, weights: Sequence[Tensor]) -> None:
        super().__init__()
        self.count = len(weights)
        generator = torch.Generator().manual_seed(0)
        for index, weight in enumerate(weights):
            rows, cols = weight.shape[0], weight[0].numel()
            self.register_buffer(f"u{index}", F.normalize(torch.randn(rows, generator=generator), dim=0))
            self.register_buffer(f"v{index}", F.normalize(torch.randn(cols, generator=generator), dim=0))

    def forward(self, weights: Sequence[Tensor], iterations: int = 1) -> Tensor:
        """s(W_i) of every weight, (N,); differentiable in the weights, not in u and v."""
        if len(weights) != self.count:
            raise ValueError(f"SpectralNorms holds {self.count} weights, got {len(weights)}")
        norms = []
        for index, weight in enumerate(weights):
            matrix = weight.flatten(1)  # (C_out, C_in k k)
            u, v = getattr(self, f"u{index}"), getattr(self, f"v{index}")
            with torch.no_grad():
                for _ in range(iterations):
                    v = F.normalize(matrix.t() @ u, dim=0)
                    u = F.normalize(matrix @ v, dim=0)
                getattr(self, f"u{index}").copy_(u)
                getattr(self, f"v{index}").copy_(v)
            norms.append(u @ matrix @ v)
        return torch.stack(norms)
