"""An LPIPS-style perceptual distance on VGG19-BN features from a user-supplied weights file.

Zhang et al. (2018), "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
Eq. 1 with unit weights w_l = 1 (no learned linear layers): each layer's features are normalised
to unit length over the channels, and the squared differences are averaged over positions and
summed over channels and layers. Esser et al. (2021) and Rombach et al. (2022) add LPIPS to the
reconstruction loss. Nothing is downloaded: without a weights file there is no perceptual term.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from vaezoo.nn.vgg import VGG19BNFeatures, imagenet_normalize

DEFAULT_PERCEPTUAL_LAYERS = ("relu1_2", "relu2_2", "relu3_4")


def unit_normalize(features: Tensor, eps: float = 1e-10) -> Tensor:
    """(B, C, H, W) features scaled to unit length over the channels at every position."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class PerceptualDistance:
    """d(x, x_hat) per example, (B,), on frozen VGG19-BN features (not an nn.Module on purpose: the
    VGG comes from a file on the training machine and stays out of the model's state dict)."""

    def __init__(
        self,
        weights: str,
        layers: Sequence[str] = DEFAULT_PERCEPTUAL_LAYERS,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.network = VGG19BNFeatures(layers)
        self.network.load_weights(weights)
        self.value_range = value_range

    def __call__(self, recons: Tensor, input: Tensor) -> Tensor:
        network = self.network.to(recons.device)
        fake = network(imagenet_normalize(recons.float(), self.value_range))
        with torch.no_grad():  # the targets need no graph
            real = network(imagenet_normalize(input.float(), self.value_range))
        distance = recons.new_zeros(recons.shape[0])
        for fake_l, real_l in zip(fake, real):
            diff = (unit_normalize(fake_l) - unit_normalize(real_l)).pow(2)  # (B, C, H, W)
            distance = distance + diff.sum(dim=1).mean(dim=(1, 2))
        return distance


def build_perceptual(
    owner: str, weights: str | None, layers: Sequence[str] | None, value_range: tuple[float, float]
) -> PerceptualDistance | None:
    """The perceptual distance from ``weights`` (a torchvision ``vgg19_bn`` state dict), or None with a
    warning saying the model trains without the term."""
    if weights is None:
        warnings.warn(
            f"{owner}: perceptual_weights is None, so the loss has no perceptual (LPIPS-style) term; pass "
            "perceptual_weights=<path to a torchvision vgg19_bn .pth or .safetensors file> to add it",
            UserWarning,
            stacklevel=5,  # the caller of the (config-recording) constructor
        )
        return None
    return PerceptualDistance(weights, layers or DEFAULT_PERCEPTUAL_LAYERS, value_range)
