"""Encoder / decoder stacks and the Gaussian head, written once for every model.

The conv stacks follow PyTorch-VAE's layout (3x3 stride-2 convolutions, BatchNorm, LeakyReLU, halving
the image at each layer) but compute every shape from ``image_size`` and ``hidden_dims`` instead of
hard-coding 3x64x64 and 512x2x2. The MLP stacks are their counterpart for vectors (B, D): one
Linear + LeakyReLU layer per entry of ``hidden_dims``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

DEFAULT_HIDDEN_DIMS = (32, 64, 128, 256, 512)
DEFAULT_MLP_HIDDEN_DIMS = (256, 128)  # the MLP's layer widths when a model's hidden_dims are not given
ACTIVATIONS = ("sigmoid", "tanh", "none")


def check_image_size(image_size: int, num_layers: int) -> int:
    """The side of the smallest feature map; a size the stack cannot halve ``num_layers`` times is an error."""
    factor = 2**num_layers
    if image_size < factor or image_size % factor:
        examples = ", ".join(str(factor * k) for k in (1, 2, 3, 4))
        raise ValueError(
            f"image_size {image_size} does not fit {num_layers} stride-2 layers (hidden_dims of length "
            f"{num_layers}): it must be a positive multiple of 2^{num_layers} = {factor}, e.g. {examples}; "
            "or change hidden_dims"
        )
    return image_size // factor


def output_activation(name: str) -> nn.Module:
    """The decoder's last non-linearity, matching the data's range: sigmoid [0,1], tanh [-1,1], none."""
    table = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "none": nn.Identity}
    if name not in table:
        raise ValueError(f"output_activation '{name}' is not one of {ACTIVATIONS}")
    return table[name]()


def down_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Halve the spatial size: 3x3 stride-2 conv, BatchNorm, LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(),
    )


def up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Double the spatial size: 3x3 stride-2 transposed conv, BatchNorm, LeakyReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(),
    )


class ConvEncoder(nn.Module):
    """(B, C, H, W) images -> (B, F) flat features, one stride-2 block per entry of ``hidden_dims``."""

    def __init__(self, in_channels: int, hidden_dims: Sequence[int], image_size: int) -> None:
        super().__init__()
        side = check_image_size(image_size, len(hidden_dims))
        channels = [in_channels, *hidden_dims]
        self.layers = nn.Sequential(*(down_block(a, b) for a, b in zip(channels[:-1], channels[1:])))
        self.out_shape = (hidden_dims[-1], side, side)
        self.out_features = hidden_dims[-1] * side * side

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.layers(x), start_dim=1)  # (B, F)


class ConvDecoder(nn.Module):
    """(B, D) latents -> (B, C, H, W) images; the mirror image of :class:`ConvEncoder`.

    ``hidden_dims`` is given in encoder order (e.g. 32..512) and walked backwards; the caller's list
    is never modified.
    """

    def __init__(
        self,
        latent_dim: int,
        out_channels: int,
        hidden_dims: Sequence[int],
        image_size: int,
        activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        side = check_image_size(image_size, len(hidden_dims))
        dims = list(reversed(hidden_dims))  # e.g. 512, 256, 128, 64, 32
        self.start_shape = (dims[0], side, side)
        self.input = nn.Linear(latent_dim, dims[0] * side * side)
        self.layers = nn.Sequential(*(up_block(a, b) for a, b in zip(dims[:-1], dims[1:])))
        self.output = nn.Sequential(
            up_block(dims[-1], dims[-1]),  # the last doubling, back to image_size
            nn.Conv2d(dims[-1], out_channels, kernel_size=3, padding=1),
            output_activation(activation),
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.input(z).view(-1, *self.start_shape)  # (B, 512, s, s)
        return self.output(self.layers(h))  # (B, C, H, W)


def dense_block(in_features: int, out_features: int) -> nn.Sequential:
    """One MLP layer: Linear, LeakyReLU. No batch norm, so that any batch size trains (even 1)."""
    return nn.Sequential(nn.Linear(in_features, out_features), nn.LeakyReLU())


class MLPEncoder(nn.Module):
    """(B, D) vectors -> (B, F) features, one dense layer per entry of ``hidden_dims`` (F the last)."""

    def __init__(self, in_features: int, hidden_dims: Sequence[int]) -> None:
        super().__init__()
        widths = [in_features, *hidden_dims]
        self.in_features = in_features
        self.layers = nn.Sequential(*(dense_block(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.out_features = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"the MLP encoder takes vectors of shape (B, {self.in_features}), got {tuple(x.shape)}; "
                "images need architecture 'conv'"
            )
        return self.layers(x)  # (B, F)


class MLPDecoder(nn.Module):
    """(B, latent) codes -> (B, D) vectors; the mirror image of :class:`MLPEncoder` (``hidden_dims``
    in encoder order, walked backwards), then a Linear layer to D and the output activation."""

    def __init__(
        self, latent_dim: int, out_features: int, hidden_dims: Sequence[int], activation: str = "sigmoid"
    ) -> None:
        super().__init__()
        widths = [latent_dim, *reversed(hidden_dims)]  # e.g. latent, 128, 256
        self.layers = nn.Sequential(*(dense_block(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.output = nn.Sequential(nn.Linear(widths[-1], out_features), output_activation(activation))

    def forward(self, z: Tensor) -> Tensor:
        return self.output(self.layers(z))  # (B, D)


class GaussianHead(nn.Module):
    """Flat features -> (mu, log_var) of a diagonal Gaussian over ``latent_dim`` dimensions."""

    def __init__(self, in_features: int, latent_dim: int) -> None:
        super().__init__()
        self.fc_mu = nn.Linear(in_features, latent_dim)
        self.fc_var = nn.Linear(in_features, latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.fc_mu(h), self.fc_var(h)  # (B, D), (B, D)
