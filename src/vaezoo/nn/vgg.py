"""VGG19 with batch normalisation (Simonyan & Zisserman 2015, configuration E), as a frozen feature extractor.

Written in the project (torchvision does not import beside this torch build) with the module layout
of torchvision's ``vgg19_bn().features``, so its ImageNet weights load by key: every 3x3 conv is
followed by BatchNorm and ReLU (three modules), each of the five blocks ends in a 2x2 max-pool::

    block 1: conv 0, bn 1, relu 2 (relu1_1), conv 3 ... relu 5 (relu1_2), pool 6
    block 2: conv 7, bn 8, relu 9 (relu2_1), ..., pool 13
    block 3: conv 14, bn 15, relu 16 (relu3_1), ... four convs ..., pool 26
    block 4: conv 27 ... relu 29 (relu4_1), ..., pool 39
    block 5: conv 40 ... relu 42 (relu5_1), ..., pool 52

so a torchvision state dict has keys ``features.0.weight``, ``features.1.running_mean``, ... .
Nothing is ever downloaded: weights come from a file the user names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_bn_layers() -> tuple[list[nn.Module], dict[str, int]]:
    """torchvision's ``vgg19_bn().features`` as a list of modules, and the index of every ``reluB_L``."""
    layers: list[nn.Module] = []
    relu_index: dict[str, int] = {}
    in_channels = 3
    for block, widths in enumerate(VGG19_BLOCKS, start=1):
        for layer, width in enumerate(widths, start=1):
            layers += [
                nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            relu_index[f"relu{block}_{layer}"] = len(layers) - 1
            in_channels = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return layers, relu_index


class VGG19BNFeatures(nn.Module):
    """The activations of VGG19-BN at ``layers`` (e.g. ``relu1_1``), frozen and always in eval mode.

    Only the layers up to the deepest one asked for are built; their keys (``features.<i>.*``) are
    those of torchvision's ``vgg19_bn`` state dict.
    """

    def __init__(self, layers: Sequence[str]) -> None:
        super().__init__()
        modules, relu_index = vgg19_bn_layers()
        unknown = [name for name in layers if name not in relu_index]
        if unknown or not layers:
            raise ValueError(f"feature layers {list(layers)}: use some of {sorted(relu_index)}")
        self.taps = [relu_index[name] for name in layers]
        self.features = nn.Sequential(*modules[: max(self.taps) + 1])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19BNFeatures:
        return super().train(False)  # BatchNorm keeps its ImageNet running statistics

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) ImageNet-normalised images -> the feature map at each tap, in ``layers`` order."""
        found: dict[int, Tensor] = {}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self.taps:
                found[index] = x
        return [found[index] for index in self.taps]

    def load_weights(self, path: str | Path) -> None:
        """Load a torchvision ``vgg19_bn`` state dict (``.pth``/``.pt``, or ``.safetensors``) by key.

        A features-only dict (keys ``0.weight`` ...) works too; ``classifier.*`` keys are ignored.
        """
        state = read_state_dict(path)
        state = {k if k.startswith("features.") else f"features.{k}": v for k, v in state.items()}
        wanted = self.state_dict()
        missing = [key for key in wanted if key not in state]
        if missing:
            raise ValueError(
                f"'{path}' is not a vgg19_bn state dict in torchvision's layout: it lacks {missing[:4]}"
                f"{' ...' if len(missing) > 4 else ''} ({len(missing)} of the {len(wanted)} keys needed)"
            )
        try:
            self.load_state_dict({key: state[key] for key in wanted})
        except RuntimeError as err:
            raise ValueError(f"'{path}' does not fit VGG19-BN: {err}") from None


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors from a ``.safetensors`` file or a ``torch.save``d dict (read with ``weights_only=True``)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"VGG19-BN weight file '{path}' not found (feature_weights names a local file)"
        )
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read VGG19-BN weights from '{path}': {err}") from None
    if not isinstance(state, dict):
        raise ValueError(f"'{path}' holds a {type(state).__name__}, not a state dict")
    return state


def imagenet_normalize(images: Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Map images with pixels in ``value_range`` to the ImageNet statistics VGG was trained on.

    (B, 1 or 3, H, W) -> (B, 3, H, W): rescaled to [0, 1], a single channel repeated to three, then
    (x - mean) / std per channel.
    """
    if images.shape[1] not in (1, 3):
        raise ValueError(f"VGG features need 1- or 3-channel images, not {images.shape[1]} channels")
    low, high = value_range
    unit = (images - low) / (high - low)
    rgb = unit.expand(-1, 3, -1, -1) if images.shape[1] == 1 else unit
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (rgb - mean) / std
