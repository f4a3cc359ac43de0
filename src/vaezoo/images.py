"""Image grids, PNG and GIF files from tensors, with Pillow and numpy (no torchvision)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vaezoo.fileio import atomic_path


def to_unit(images: Tensor, value_range: Sequence[float] = (0.0, 1.0)) -> Tensor:
    """Images with values in ``value_range`` -> [0, 1], clipped, float32 on the CPU."""
    low, high = value_range
    return ((images.detach().float().cpu() - low) / (high - low)).clamp(0.0, 1.0)


def from_unit(images: Tensor, value_range: Sequence[float]) -> Tensor:
    """The way back from :func:`to_unit`: [0, 1] -> ``value_range``."""
    low, high = value_range
    return images * (high - low) + low


def make_grid(
    images: Tensor,
    nrow: int | None = None,
    padding: int = 2,
    value_range: tuple[float, float] = (0.0, 1.0),
    pad_value: float = 1.0,
) -> Tensor:
    """Tile a batch (B, C, H, W) into one image (C, H', W'), ``nrow`` images per row.

    Values are mapped from ``value_range`` to [0, 1] and clipped; one-channel images stay one
    channel. ``nrow`` defaults to a square-ish layout; ``pad_value`` is in [0, 1].
    """
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"make_grid expects (B, C, H, W) images, got shape {tuple(images.shape)}")
    images = to_unit(images, value_range)
    count, channels, height, width = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(count)))
    ncol = min(nrow, count)
    rows = math.ceil(count / nrow)
    grid = torch.full(
        (channels, rows * (height + padding) + padding, ncol * (width + padding) + padding), float(pad_value)
    )
    for index in range(count):
        r, c = divmod(index, nrow)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        grid[:, top : top + height, left : left + width] = images[index]
    return grid


def to_pil(image: Tensor) -> Image.Image:
    """A (C, H, W) tensor in [0, 1] (C = 1 or 3) -> a Pillow image."""
    array = (image.detach().cpu().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
    if array.shape[0] == 1:
        return Image.fromarray(array[0], mode="L")
    return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)), mode="RGB")


def png_bytes(image: Tensor) -> bytes:
    """A (C, H, W) image in [0, 1] as the bytes of a PNG file."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


def png_uri(image: Tensor) -> str:
    """A (C, H, W) image in [0, 1] as a ``data:image/png;base64,...`` URI, for a web page."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def save_image(
    images: Tensor,
    path: str | Path,
    nrow: int | None = None,
    padding: int = 2,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Path:
    """Save a batch (B, C, H, W) as one PNG grid (or a single (C, H, W) image), atomically."""
    grid = make_grid(images, nrow=nrow, padding=padding, value_range=value_range)
    path = Path(path)
    with atomic_path(path) as tmp:
        to_pil(grid).save(tmp, format="PNG")
    return path


def save_gif(frames: Tensor, path: str | Path, frame_ms: int = 120) -> Path:
    """Save frames (T, C, H, W) in [0, 1] as a looping GIF that plays forwards then back, atomically."""
    if frames.dim() != 4 or frames.shape[0] < 2:
        raise ValueError(f"save_gif expects (T, C, H, W) frames with T >= 2, got {tuple(frames.shape)}")
    pictures = [to_pil(frame) for frame in frames]
    pictures += pictures[-2:0:-1]  # back again, without repeating the turning frames
    path = Path(path)
    with atomic_path(path) as tmp:
        pictures[0].save(
            tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0
        )
    return path


def add_gif(writer: Any, tag: str, gif: str | Path, frames: Tensor, step: int) -> None:
    """Log the GIF file ``gif`` of ``frames`` (T, C, H, W) to a TensorBoard ``SummaryWriter`` as an
    image summary whose encoded bytes are the GIF: TensorBoard's image dashboard serves them with
    the type it detects (image/gif), so the browser plays the animation. ``SummaryWriter.add_video``
    writes the same kind of summary, but encodes the GIF with moviepy."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    height, width = frames.shape[-2:]
    image = Summary.Image(
        height=height, width=width, colorspace=frames.shape[1], encoded_image_string=Path(gif).read_bytes()
    )
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def interleave_rows(originals: Tensor, reconstructions: Tensor, nrow: int) -> Tensor:
    """Stack rows of ``nrow`` originals, each followed by the row of their reconstructions.

    A short last row is filled with blank images (the darkest value of the originals), so that
    every input stays above its own reconstruction in a grid of ``nrow`` columns."""
    pairs = []
    for start in range(0, originals.shape[0], nrow):
        row, recons = originals[start : start + nrow], reconstructions[start : start + nrow]
        missing = nrow - row.shape[0]
        if missing:
            blank = originals.new_full((missing, *originals.shape[1:]), float(originals.min()))
            row, recons = torch.cat([row, blank]), torch.cat([recons, blank.to(recons)])
        pairs += [row, recons]
    return torch.cat(pairs)
