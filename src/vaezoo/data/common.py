"""Pieces shared by the datasets: paths, splits, image files and the result of a dataset builder."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate

from vaezoo.config import DataConfig
from vaezoo.data.errors import DataError
from vaezoo.data.transforms import ImagePipeline, random_hflip_batch, uint8_to_float
from vaezoo.fileio import cache_root

# What PIL raises for files that are not images, are truncated or are otherwise broken.
IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass
class DataSplits:
    """What a dataset builder returns: the three splits and what a model needs to know about them."""

    train: SplitDataset
    val: SplitDataset
    test: SplitDataset
    channels: int
    label_shape: tuple[int, ...]
    ground_truth: Any = None  # the factor interface (dSprites) or None
    num_classes: int | None = None  # for class-index labels (label_shape == ()): how many classes


# --------------------------------------------------------------------------- paths


def cache_dir(config: DataConfig) -> Path:
    """``data.cache_dir``, else ``$VAEZOO_CACHE``, else ``~/.cache/vaezoo``."""
    return cache_root(config.cache_dir)


def require_path(config: DataConfig, expected: str, default: str | None = None) -> Path:
    """``data.path`` (or ``default``) as an existing path; the error says what it should point at."""
    raw = config.path or default
    if raw is None:
        raise DataError(
            f"data.path is not set: the {config.name} dataset needs data.path pointing at {expected}"
        )
    path = Path(raw).expanduser()
    if not path.exists():
        key = "data.path" if config.path else f"data.path (default for {config.name})"
        raise DataError(f"{key} = '{path}' does not exist; expected {expected}")
    return path


# --------------------------------------------------------------------------- splits


def subset_size(config: DataConfig, total: int, what: str) -> int:
    """How many of ``total`` images ``data.subset`` keeps (all of them if it asks for more)."""
    if config.subset is None or config.subset >= total:
        if config.subset is not None and config.subset > total:
            warnings.warn(
                f"data.subset = {config.subset} exceeds the {total} images of {what}; using all", stacklevel=3
            )
        return total
    if config.subset < 2:
        raise DataError(f"data.subset = {config.subset} must be an integer > 1 or null")
    return config.subset


def split_indices(config: DataConfig, total: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) index arrays of a dataset without an official split, each sorted.

    ``data.subset`` is drawn first, then ``data.val_fraction`` of it is held out (at least one image
    whenever the fraction is positive and there are two images or more).
    """
    if not 0 <= config.val_fraction < 1:
        raise DataError(f"data.val_fraction = {config.val_fraction!r} must be in [0, 1)")
    rng = np.random.default_rng(config.split_seed)
    chosen = rng.permutation(total)[: subset_size(config, total, what)]
    n_val = round(len(chosen) * config.val_fraction)
    if config.val_fraction > 0 and len(chosen) >= 2:
        n_val = min(max(n_val, 1), len(chosen) - 1)
    return np.sort(chosen[n_val:]), np.sort(chosen[:n_val])


def proportional_subsets(config: DataConfig, sizes: Sequence[int], what: str) -> list[np.ndarray]:
    """Index arrays into official splits of the given sizes, shrunk together by ``data.subset``.

    The first split is the training split; ``data.subset`` counts it plus the second (validation)
    split, and every split keeps its share of that total (at least one image each).
    """
    total = sum(sizes[:2])
    keep = subset_size(config, total, what)
    rng = np.random.default_rng(config.split_seed)
    out = []
    for size in sizes:
        n = size if keep == total else min(size, max(1, round(keep * size / total)))
        out.append(np.sort(rng.permutation(size)[:n]))
    return out


# --------------------------------------------------------------------------- image files


def check_image_header(path: Path) -> None:
    """Open ``path`` without decoding it; a non-image raises a DataError naming the file."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - reading the header is the check
    except IMAGE_ERRORS as err:
        raise DataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def load_image(path: Path) -> Image.Image:
    """Decode an image file fully; any failure raises a DataError naming the file."""
    try:
        image = Image.open(path)
    except IMAGE_ERRORS as err:
        raise DataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
    try:
        with image:
            image.load()
            return image.copy()
    except IMAGE_ERRORS as err:
        raise DataError(f"{path}: cannot decode the image ({type(err).__name__}: {err})") from None


def decode_file(path: Path, pipeline: ImagePipeline) -> np.ndarray:
    """One file through ``pipeline.decode``: uint8 (C, H, W); any failure names the file."""
    try:
        return pipeline.decode(load_image(path))
    except DataError as err:
        message = str(err)
        raise DataError(message if str(path) in message else f"{path}: {message}") from None


class DecodedImages:
    """uint8 pixels decoded from the files on every read (no cache): slow, but needs no disk."""

    def __init__(self, files: Sequence[Path], pipeline: ImagePipeline) -> None:
        self.files = list(files)
        self.pipeline = pipeline

    def read(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), C, H, W) uint8 of the files at ``rows``."""
        return np.stack([decode_file(self.files[int(i)], self.pipeline) for i in np.asarray(rows)])


class ImageSource(Protocol):
    """Where a file dataset's pixels come from: the uint8 cache, or the files decoded on the fly."""

    def read(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), C, H, W) uint8."""
        ...


# --------------------------------------------------------------------------- batches


class Batch(NamedTuple):
    """A whole batch made by a dataset's ``__getitems__``; ``collate`` passes it through."""

    images: torch.Tensor  # (N, C, H, W) float in the configured range
    labels: torch.Tensor  # (N, ...) float32 vectors or (N,) int64 class indices


def collate(data: Batch | list) -> list[torch.Tensor]:
    """The loaders' ``collate_fn``: a ready Batch as ``[images, labels]`` (what ``default_collate``
    made of per-sample pairs), anything else through ``default_collate``."""
    if isinstance(data, Batch):
        return [data.images, data.labels]
    return default_collate(data)


class SplitDataset(Dataset):
    """What the datasets of a split share: a length, whole batches by position (``__getitems__``,
    which the loaders use) and a copy without random augmentation (for fixed image grids)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        raise NotImplementedError

    def without_augmentation(self) -> SplitDataset:
        raise NotImplementedError


class FileImageDataset(SplitDataset):
    """Image files with one label each: ``(image, label)``, built a whole batch at a time.

    ``source`` gives the decoded uint8 pixels of ``files`` (by default decoded on the fly), row
    ``rows[i]`` holding ``files[i]``: one cache of a dataset's files serves all its splits. A batch
    is a uint8 gather, a random flip of the uint8 batch (``pipeline.flip``) and one float conversion.
    """

    def __init__(
        self,
        files: Sequence[Path],
        labels: torch.Tensor,
        pipeline: ImagePipeline,
        label_names: Sequence[str] | None = None,
        source: ImageSource | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        if len(files) != len(labels):
            raise DataError(f"{len(files)} image files but {len(labels)} labels")
        self.files = list(files)
        self.labels = labels
        self.pipeline = pipeline
        self.label_names = list(label_names) if label_names is not None else None  # attribute or class names
        self.source = source if source is not None else DecodedImages(self.files, pipeline)
        self.rows = np.arange(len(self.files)) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(self.rows) != len(self.files):
            raise DataError(f"{len(self.files)} image files but {len(self.rows)} cache rows")

    def __len__(self) -> int:
        return len(self.files)

    def batch(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, H, W) float and labels of dataset positions."""
        index = np.asarray(positions, dtype=np.int64)
        images = torch.from_numpy(self.source.read(self.rows[index]))  # (N, C, H, W) uint8
        if self.pipeline.flip:
            images = random_hflip_batch(images)
        return uint8_to_float(images, self.pipeline.normalize), self.labels[torch.from_numpy(index)]

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        return Batch(*self.batch(positions))

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.batch([position])
        return images[0], labels[0]

    def without_augmentation(self) -> FileImageDataset:
        """The same files with the random flip turned off (for fixed image grids)."""
        pipeline = ImagePipeline(**{**vars(self.pipeline), "flip": False})
        return FileImageDataset(self.files, self.labels, pipeline, self.label_names, self.source, self.rows)
