"""Any folder tree of images (PNG, JPEG, BMP, WebP), found recursively in sorted order.

The label is the index of the image's top-level subfolder among the sorted subfolder names (its
class); images directly in the root form a class of their own ("", sorted first), so a flat folder
labels everything 0. The images are decoded once into the uint8 cache (under ``data.cache_dir``);
decoding errors name the file (``data.bad_files: skip`` leaves unreadable files out instead). Any
mix of sizes and modes loads: greyscale, RGBA, palette and 16-bit images are converted to
``data.channels`` (16-bit scaled to 8), and every image is centre-cropped and resized.
The train/val split is drawn from ``data.split_seed`` and ``data.val_fraction``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaezoo.config import DataConfig
from vaezoo.data.cache import image_source
from vaezoo.data.common import DataSplits, FileImageDataset, require_path, split_indices
from vaezoo.data.errors import DataError
from vaezoo.data.transforms import ImagePipeline

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (any depth, extension case ignored), sorted by relative path."""
    if not folder.is_dir():
        raise DataError(
            f"data.path = '{folder}' is not a folder; expected a folder of images {list(EXTENSIONS)}"
        )
    files = sorted(
        (p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not files:
        raise DataError(f"{folder}: no image files found (looked recursively for {', '.join(EXTENSIONS)})")
    return files


def class_of(path: Path, folder: Path) -> str:
    """The top-level subfolder holding ``path``, or "" for files directly in ``folder``."""
    parts = path.relative_to(folder).parts
    return parts[0] if len(parts) > 1 else ""


def build_image_folder(config: DataConfig) -> DataSplits:
    """A seeded train/val split of a folder; test = val. The images used are cached once (uint8)."""
    folder = require_path(
        config, f"a folder of images ({', '.join(EXTENSIONS)}), optionally one subfolder per class"
    )
    files = find_images(folder)
    class_names = sorted({class_of(p, folder) for p in files})
    class_index = {name: i for i, name in enumerate(class_names)}
    labels = torch.tensor([class_index[class_of(p, folder)] for p in files], dtype=torch.int64)
    train, val = split_indices(config, len(files), str(folder))
    channels = config.channels or 3
    flip = True if config.flip is None else config.flip
    used = np.union1d(train, val)  # sorted: all files unless data.subset
    source = image_source(
        config, [files[i] for i in used], ImagePipeline(config.image_size, channels, config.crop)
    )

    def dataset(indices: np.ndarray, train: bool) -> FileImageDataset:
        pipeline = ImagePipeline(config.image_size, channels, config.crop, flip and train, config.normalize)
        chosen = [files[i] for i in indices]
        rows = np.searchsorted(used, indices)
        return FileImageDataset(
            chosen, labels[torch.from_numpy(indices)], pipeline, class_names, source, rows, config.bad_files
        )

    val_set = dataset(val, False)
    return DataSplits(dataset(train, True), val_set, val_set, channels, (), num_classes=len(class_names))
