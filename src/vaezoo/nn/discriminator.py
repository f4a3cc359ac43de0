"""Discriminators: a latent-code one (FactorVAE, AAE) and an image one with a feature layer (VAE-GAN).

:class:`LatentDiscriminator`: Kim & Mnih (2018), "Disentangling by Factorising", Appendix
(architecture table): six fully connected layers of 1000 units with LeakyReLU(0.2), then two
logits. No batch norm (PyTorch-VAE's added it), so a code's score does not depend on the rest of
its batch. :class:`ImageDiscriminator`: Larsen et al. (2016), Sec. 4 (their Dis network).

:func:`frozen` runs a discriminator with its weights detached, for the objectives that train the
*other* networks: their gradients reach the discriminator's inputs, never its parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.nn.blocks import check_image_size


def frozen(module: nn.Module, *inputs: Tensor) -> Any:
    """``module(*inputs)`` with every parameter detached: gradients flow back to ``inputs`` only."""
    weights = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, weights, inputs)


class LatentDiscriminator(nn.Module):
    """(B, D) codes -> (B, 2) logits: index 0 "from the joint q(z)", index 1 "from prod_j q(z_j)"."""

    def __init__(self, latent_dim: int, hidden_units: int = 1000, num_layers: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_units), nn.LeakyReLU(0.2)]
            width = hidden_units
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)  # (B, 2)

    def log_odds(self, z: Tensor) -> Tensor:
        """log D(z) / (1 - D(z)) = logit_joint - logit_product, (B,); its mean over z ~ q(z)
        estimates the total correlation by the density-ratio trick."""
        logits = self(z)  # (B, 2)
        return logits[:, 0] - logits[:, 1]


class ImageDiscriminator(nn.Module):
    """(B, C, H, W) images -> ((B,) logit of "real", (B, F) features Dis_l(x)).

    Larsen et al. (2016), Sec. 4: stride-2 convolutions (``hidden_dims``; the paper's 32, 128, 256,
    256 of 5x5 kernels), then a 512-unit dense layer and one logit. The features are the flattened
    output of the last convolution, the layer l whose activations the VAE-GAN reconstructs,
    layer-normalised per image (mean 0, variance 1 over the F features, no affine map) so that
    their scale cannot grow without bound as the discriminator trains. Here the kernels are 3x3
    (the shared stacks' geometry, so any size the stack halves works) with LeakyReLU(0.2) and no
    batch norm: a score never depends on the rest of its batch, so real and generated images can
    be scored in one concatenated pass.
    """

    def __init__(
        self, in_channels: int, hidden_dims: Sequence[int], image_size: int, units: int = 512
    ) -> None:
        super().__init__()
        side = check_image_size(image_size, len(hidden_dims))
        widths = [in_channels, *hidden_dims]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(a, b, kernel_size=3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.out_features = widths[-1] * side * side
        self.classifier = nn.Sequential(
            nn.Linear(self.out_features, units), nn.LeakyReLU(0.2), nn.Linear(units, 1)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = torch.flatten(self.features(x), start_dim=1)  # (B, F)
        features = F.layer_norm(features, features.shape[1:])  # Dis_l(x): per image, mean 0, variance 1
        return self.classifier(features).squeeze(1), features  # (B,), (B, F)
