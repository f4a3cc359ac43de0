"""Image transforms on PIL images, numpy arrays and tensors (no torchvision).

Pixel values leave this module as float tensors shaped (C, H, W) (or (N, C, H, W) for batches) in the
configured range: ``"unit"`` -> [0, 1], ``"symmetric"`` -> [-1, 1]. Random flips draw from a torch
``Generator`` when one is given, otherwise from the global torch RNG, so ``seed_everything`` (and
torch's per-worker seeding) makes them reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vaezoo.data.errors import DataError

NORMALIZATIONS = ("unit", "symmetric")
PIL_MODES = {1: "L", 3: "RGB"}


def value_range(normalize: str) -> tuple[float, float]:
    """The (min, max) pixel values of a normalisation."""
    check_normalize(normalize)
    return (0.0, 1.0) if normalize == "unit" else (-1.0, 1.0)


def check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZATIONS:
        raise DataError(f"data.normalize = {normalize!r} must be one of {list(NORMALIZATIONS)}")


def center_crop(image: Image.Image, size: int | None = None) -> Image.Image:
    """Crop the central ``size`` x ``size`` square; ``None`` crops to the shorter side."""
    width, height = image.size
    size = min(width, height) if size is None else size
    if size <= 0 or size > min(width, height):
        raise DataError(f"crop size {size} does not fit an image of {width}x{height} pixels")
    left = (width - size) // 2
    top = (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def resize(image: Image.Image, size: int) -> Image.Image:
    """Resize to ``size`` x ``size`` with PIL's antialiased bilinear filter (a no-op if already there)."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BILINEAR)


def flip_coin(generator: torch.Generator | None = None) -> bool:
    """True with probability 1/2, drawn from ``generator`` or the global torch RNG."""
    return bool(torch.rand((), generator=generator) < 0.5)


def random_hflip(image: Image.Image, generator: torch.Generator | None = None) -> Image.Image:
    """Mirror left-right with probability 1/2."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip_coin(generator) else image


def random_hflip_batch(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of an (N, C, H, W) batch (any dtype, e.g. uint8) left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5  # one draw per image
    if flip.any():
        images = images.clone()
        images[flip] = images[flip].flip(-1)
    return images


def uint8_to_float(images: torch.Tensor, normalize: str = "unit") -> torch.Tensor:
    """uint8 pixels 0..255 of a whole batch -> float32 in the range of ``normalize``, in one conversion."""
    if images.dtype != torch.uint8:
        raise DataError(f"expected a uint8 batch, got {images.dtype} {tuple(images.shape)}")
    return scale_unit(images.float().div_(255.0), normalize)


def convert_channels(image: Image.Image, channels: int) -> Image.Image:
    """Convert to 1 (greyscale, PIL mode L) or 3 (RGB) channels.

    Any mode PIL reads from an image file converts: palette ("P", with or without transparency),
    greyscale with alpha, RGBA (alpha dropped, as torchvision's ``convert("RGB")`` does), CMYK, and
    16-bit greyscale ("I;16*", "I"), which is scaled to 8 bits (PIL's own conversion clips
    it, turning all but the darkest pixels white).
    """
    if channels not in PIL_MODES:
        raise DataError(f"data.channels = {channels!r} must be 1 or 3")
    mode = PIL_MODES[channels]
    if image.mode.startswith("I;16") or image.mode == "I":
        wide = np.asarray(image).astype(np.float64)  # 0..65535
        image = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8))
    return image if image.mode == mode else image.convert(mode)


def scale_unit(tensor: torch.Tensor, normalize: str) -> torch.Tensor:
    """Map values in [0, 1] into the range of ``normalize``."""
    check_normalize(normalize)
    return tensor if normalize == "unit" else tensor * 2.0 - 1.0


def to_tensor(array: np.ndarray | Image.Image, normalize: str = "unit") -> torch.Tensor:
    """uint8 HxW or HxWxC pixels -> float32 tensor CxHxW in the range of ``normalize``."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise DataError(f"expected uint8 pixels shaped HxW or HxWxC, got {array.dtype} {array.shape}")
    tensor = torch.from_numpy(np.array(array, copy=True))
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return scale_unit(tensor.float() / 255.0, normalize)


def pad_or_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bring an (N, C, H, W) batch of square images to ``size`` x ``size``.

    A small even margin (at most half the native size, e.g. MNIST 28 -> 32) is zero-padded centrally,
    keeping the pixels intact; any other size is an antialiased bilinear resize (e.g. 28 -> 64).
    """
    native = images.shape[-1]
    margin = size - native
    if margin == 0:
        return images
    if margin > 0 and margin % 2 == 0 and margin <= native // 2:
        half = margin // 2
        return F.pad(images, (half, half, half, half), value=0.0)
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def resize_binary(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize an (N, C, H, W) batch of binary images: area average down, nearest up."""
    if images.shape[-1] == size:
        return images
    mode = "area" if size < images.shape[-1] else "nearest-exact"
    return F.interpolate(images, size=(size, size), mode=mode)


RESIZE_FILTER = "PIL.BILINEAR"  # the filter of ``resize``: part of the image cache's key


@dataclass
class ImagePipeline:
    """The transform of photo datasets: channels, centre crop, resize, optional flip, tensor.

    ``decode`` is the deterministic part (what the uint8 cache stores); the flip and the float
    conversion happen per batch on uint8 tensors (``random_hflip_batch``, ``uint8_to_float``).
    """

    image_size: int
    channels: int = 3
    crop: int | None = None  # None: crop to the shorter side
    flip: bool = False
    normalize: str = "unit"

    def decode(self, image: Image.Image) -> np.ndarray:
        """Channels, centre crop and resize: uint8 (C, size, size)."""
        image = convert_channels(image, self.channels)
        pixels = np.asarray(resize(center_crop(image, self.crop), self.image_size))
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    def key(self) -> dict[str, object]:
        """What ``decode`` depends on (the image cache is keyed by it)."""
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "crop": self.crop,
            "resize": RESIZE_FILTER,
        }

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        """One image -> float (C, size, size), flipped at random if ``flip``."""
        pixels = torch.from_numpy(np.array(self.decode(image)))[None]  # a copy: PIL's array is read-only
        if self.flip:
            pixels = random_hflip_batch(pixels, generator)
        return uint8_to_float(pixels, self.normalize)[0]
