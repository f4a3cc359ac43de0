"""MNIST-format IDX files: ``mnist`` and ``fashion_mnist`` (never downloaded).

A folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte``, each raw or gzipped (``.gz``). Fashion-MNIST defaults to the folder of
the Debian package ``dataset-fashion-mnist``. Train = the train files, val = test = the t10k files.
Images (1x28x28) are zero-padded (a small even margin, e.g. to 32) or resized to ``data.image_size``;
the label is the class index (int64).
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vaezoo.config import DataConfig
from vaezoo.data.common import Batch, DataSplits, SplitDataset, proportional_subsets, require_path
from vaezoo.data.errors import DataError
from vaezoo.data.transforms import pad_or_resize, random_hflip_batch, scale_unit, uint8_to_float

DEFAULT_PATHS: dict[str, str | None] = {"mnist": None, "fashion_mnist": "/usr/share/datasets/fashion-mnist"}
# IDX type codes (third magic byte) -> big-endian numpy dtypes.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC = 0x0803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x0801  # unsigned bytes, 1 dimension
LAYOUT = (
    "a folder with train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
    "and t10k-labels-idx1-ubyte (each optionally .gz)"
)


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped if it ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read the file ({type(err).__name__}: {err})") from None


def parse_idx(data: bytes, path: Path, expected_magic: int) -> np.ndarray:
    """Parse an IDX file: magic (0, 0, type, ndim), ndim big-endian uint32 sizes, then the values."""
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: bad IDX magic number 0x{magic:08x}; expected 0x{expected_magic:08x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header; expected {ndim} dimension sizes")
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[data[2]])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: four 32-bit sizes overflow an int64
    if len(data) - header != expected:
        raise DataError(
            f"{path}: holds {len(data) - header} bytes of values; its header {shape} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def find_file(folder: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` (also the ``train-images.idx3-ubyte`` spelling) in ``folder``."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder / stem}: file is missing (also looked for .gz); expected {LAYOUT}")


def load_split(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W) uint8, labels (N,) int64) of the ``train`` or ``t10k`` files."""
    image_file = find_file(folder, f"{prefix}-images-idx3-ubyte")
    label_file = find_file(folder, f"{prefix}-labels-idx1-ubyte")
    images = parse_idx(read_bytes(image_file), image_file, IMAGES_MAGIC)
    labels = parse_idx(read_bytes(label_file), label_file, LABELS_MAGIC)
    if images.shape[1] != images.shape[2] or images.shape[1] == 0:
        raise DataError(
            f"{image_file}: holds images of {images.shape[1]}x{images.shape[2]} pixels; expected square "
            "images (MNIST's are 28x28)"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels"
        )
    return images, labels.astype(np.int64)


class IDXDataset(SplitDataset):
    """In-memory greyscale images: ``(image, class index)``, batches transformed in one go."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        image_size: int,
        normalize: str = "unit",
        channels: int = 1,
        flip: bool = False,
    ) -> None:
        self.images = images
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        self.image_size = image_size
        self.normalize = normalize
        self.channels = channels
        self.flip = flip

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, size, size) float and class indices: uint8 gather and flip, then one conversion."""
        index = np.asarray(positions, dtype=np.int64)
        images = torch.from_numpy(self.images[index]).unsqueeze(1)  # (N, 1, 28, 28) uint8
        if self.flip:
            images = random_hflip_batch(images)
        images = pad_or_resize(uint8_to_float(images), self.image_size).clamp_(0.0, 1.0)
        if self.channels != 1:
            images = images.expand(-1, self.channels, -1, -1).contiguous()
        return scale_unit(images, self.normalize), self.labels[torch.from_numpy(index)]

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        return Batch(*self.batch(positions))

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.batch([position])
        return images[0], labels[0]

    def without_augmentation(self) -> IDXDataset:
        return IDXDataset(self.images, self.labels.numpy(), self.image_size, self.normalize, self.channels)


def build_idx(config: DataConfig) -> DataSplits:
    """Train on the train files, validate and test on t10k; ``data.subset`` shrinks both in proportion."""
    folder = require_path(config, LAYOUT, DEFAULT_PATHS.get(config.name))
    if not folder.is_dir():
        raise DataError(f"data.path = '{folder}' is not a folder; expected {LAYOUT}")
    train_images, train_labels = load_split(folder, "train")
    test_images, test_labels = load_split(folder, "t10k")
    keep_train, keep_test = proportional_subsets(config, [len(train_images), len(test_images)], str(folder))
    channels = config.channels or 1
    flip = bool(config.flip)

    def dataset(images: np.ndarray, labels: np.ndarray, keep: np.ndarray, train: bool) -> IDXDataset:
        return IDXDataset(
            images[keep], labels[keep], config.image_size, config.normalize, channels, flip and train
        )

    test = dataset(test_images, test_labels, keep_test, False)
    num_classes = int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1
    return DataSplits(
        dataset(train_images, train_labels, keep_train, True),
        test,
        test,
        channels,
        (),
        num_classes=num_classes,
    )
