"""Pieces shared by the datasets: paths, splits, image files and the result of a dataset builder."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate, get_worker_info

from vaezoo.config import DataConfig
from vaezoo.data.errors import BadImageFile, DataError, SkippedFileWarning
from vaezoo.data.transforms import ImagePipeline, random_hflip_batch, uint8_to_float
from vaezoo.fileio import cache_root

# A damaged file makes PIL raise UnidentifiedImageError, OSError, SyntaxError, ValueError or
# DecompressionBombError, and its plugins are not bound to these (struct.error, EOFError, ...): every
# exception while a file is opened, decoded or converted is reported as the file's BadImageFile.
BAD_FILES = ("fail", "skip")
SKIP_HINT = "set data.bad_files: skip to leave unreadable files out, or replace the file"


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
    kind: str = "images"  # "images" (N, C, H, W) or "vectors" (N, D), with channels = D
    value_range: tuple[float, float] | None = None  # vectors: the training values' (min, max)
    output_activation: str | None = None  # the decoder activation the values call for (vectors)


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
    n_val = min(n_val, max(len(chosen) - 1, 0))  # one image trains: the training split is never empty
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


def bad_image(path: Path, what: str, err: BaseException) -> BadImageFile:
    """The error of an unreadable image: names the file, what failed and how to go on."""
    reason = f"{what} ({type(err).__name__}: {err})"
    return BadImageFile(f"{path}: {reason}; {SKIP_HINT}", path=path, reason=reason)


def check_image_header(path: Path) -> None:
    """Open ``path`` without decoding it; a non-image raises a BadImageFile naming the file."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - reading the header is the check
    except Exception as err:  # any failure of a PIL plugin is the file's (see above)
        raise bad_image(path, "not a readable image", err) from None


def load_image(path: Path) -> Image.Image:
    """Decode an image file fully; any failure raises a BadImageFile naming the file."""
    try:
        image = Image.open(path)
    except Exception as err:
        raise bad_image(path, "not a readable image", err) from None
    try:
        with image:
            image.load()
            return image.copy()
    except Exception as err:
        raise bad_image(path, "cannot decode the image", err) from None


def decode_file(path: Path, pipeline: ImagePipeline) -> np.ndarray:
    """One file through ``pipeline.decode``: uint8 (C, H, W); any failure names the file.

    An unreadable file is a BadImageFile (``data.bad_files: skip`` leaves it out); a setting the
    image does not fit (a crop larger than the image) is a plain DataError: skipping cannot fix it.
    """
    image = load_image(path)
    try:
        return pipeline.decode(image)
    except BadImageFile:
        raise
    except DataError as err:
        message = str(err)
        raise DataError(message if str(path) in message else f"{path}: {message}") from None
    except Exception as err:  # e.g. a mode PIL cannot convert ("La", "LAB")
        raise bad_image(path, f"cannot convert the {image.mode} image", err) from None


class SkipRecord:
    """Which files of an image source were unreadable and left out (``data.bad_files: skip``).

    One uint8 flag per file (plus a last one: "warned"), in shared memory: DataLoader workers hold
    copies of the dataset (forked, or pickled through torch's shared-memory reductions), and what
    a worker marks is seen by the main process and by every other worker, across epochs.
    """

    def __init__(self, count: int) -> None:
        self.flags = torch.zeros(count + 1, dtype=torch.uint8).share_memory_()

    def __len__(self) -> int:
        return len(self.flags) - 1

    def is_bad(self, row: int) -> bool:
        return bool(self.flags[row])

    def bad_rows(self) -> np.ndarray:
        """The rows marked bad, ascending."""
        return np.flatnonzero(self.flags[:-1].numpy())

    def mark(self, row: int, err: BadImageFile) -> None:
        """Leave ``row`` out from now on; the first file marked in any process is warned about."""
        if self.flags[row]:
            return
        self.flags[row] = 1
        if self.flags[-1]:
            return
        self.flags[-1] = 1
        warn_skipped(err)


def warn_skipped(err: BadImageFile) -> None:
    """The one warning of a run with ``data.bad_files: skip``: names the first unreadable file."""
    message = (
        f"{err.path}: {err.reason}; left out (data.bad_files: skip). Further unreadable files are "
        "left out without a warning and counted (VAEDataModule.skipped_files)"
    )
    if get_worker_info() is None:
        warnings.warn(message, SkippedFileWarning, stacklevel=3)
    else:
        # In a DataLoader worker the warning filters are a copy of the parent's at fork time (under a
        # warning-capturing parent, such as pytest, a warning would vanish into the copy): straight
        # to the worker's stderr, which is the terminal's.
        sys.stderr.write(f"{__name__} (DataLoader worker): {SkippedFileWarning.__name__}: {message}\n")
        sys.stderr.flush()


def count_skipped(datasets: Iterable[object]) -> int:
    """How many distinct files of ``datasets`` were left out as unreadable (splits sharing one
    source, and so one SkipRecord, count each file once)."""
    seen: dict[int, tuple[SkipRecord, set[int]]] = {}
    for dataset in datasets:
        if not isinstance(dataset, FileImageDataset):
            continue
        record = dataset.source.skips
        bad = record.bad_rows()
        if len(bad) == 0:
            continue
        hits = bad[np.isin(bad, dataset.rows)]
        seen.setdefault(id(record), (record, set()))[1].update(int(r) for r in hits)
    return sum(len(rows) for _, rows in seen.values())


class DecodedImages:
    """uint8 pixels decoded from the files on every read (no cache): slow, but needs no disk."""

    def __init__(self, files: Sequence[Path], pipeline: ImagePipeline) -> None:
        self.files = list(files)
        self.pipeline = pipeline
        self.skips = SkipRecord(len(self.files))

    def __len__(self) -> int:
        return len(self.files)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), C, H, W) uint8 of the files at ``rows``; an unreadable file raises."""
        return np.stack([decode_file(self.files[int(i)], self.pipeline) for i in np.asarray(rows)])

    def read_skipping(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pixels, readable): as ``read``, but an unreadable file is marked bad in ``skips`` and
        its pixels are zeros; files already marked are not opened again."""
        rows = np.asarray(rows, dtype=np.int64)
        shape = (self.pipeline.channels, self.pipeline.image_size, self.pipeline.image_size)
        out = np.zeros((len(rows), *shape), dtype=np.uint8)
        ok = np.zeros(len(rows), dtype=bool)
        for i, row in enumerate(rows.tolist()):
            if self.skips.is_bad(row):
                continue
            try:
                out[i] = decode_file(self.files[row], self.pipeline)
                ok[i] = True
            except BadImageFile as err:
                self.skips.mark(row, err)
        return out, ok


class ImageSource(Protocol):
    """Where a file dataset's pixels come from: the uint8 cache, or the files decoded on the fly."""

    skips: SkipRecord  # the rows left out as unreadable (data.bad_files: skip)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), C, H, W) uint8; an unreadable file raises a BadImageFile."""
        ...

    def read_skipping(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pixels, readable mask): unreadable files are marked in ``skips``, never raised."""
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

    ``bad_files`` is ``data.bad_files``: with "fail" an unreadable file raises a BadImageFile that
    names it; with "skip" it is marked in ``source.skips`` (warned about once) and its place in the
    batch is taken by the next readable image of the split, so batches keep their size.
    """

    def __init__(
        self,
        files: Sequence[Path],
        labels: torch.Tensor,
        pipeline: ImagePipeline,
        label_names: Sequence[str] | None = None,
        source: ImageSource | None = None,
        rows: np.ndarray | None = None,
        bad_files: str = "fail",
    ) -> None:
        if len(files) != len(labels):
            raise DataError(f"{len(files)} image files but {len(labels)} labels")
        if bad_files not in BAD_FILES:
            raise DataError(f"data.bad_files = {bad_files!r} must be one of {list(BAD_FILES)}")
        self.files = list(files)
        self.labels = labels
        self.pipeline = pipeline
        self.label_names = list(label_names) if label_names is not None else None  # attribute or class names
        self.source = source if source is not None else DecodedImages(self.files, pipeline)
        self.rows = np.arange(len(self.files)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.bad_files = bad_files
        if len(self.rows) != len(self.files):
            raise DataError(f"{len(self.files)} image files but {len(self.rows)} cache rows")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def skipped_files(self) -> int:
        """How many files of this split were left out as unreadable so far (in any process)."""
        return count_skipped([self])

    def batch(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, H, W) float and labels of dataset positions."""
        index = np.asarray(positions, dtype=np.int64)
        if self.bad_files == "skip":
            pixels, index = self.read_readable(index)
        else:
            pixels = self.source.read(self.rows[index])
        images = torch.from_numpy(pixels)  # (N, C, H, W) uint8
        if self.pipeline.flip:
            images = random_hflip_batch(images)
        return uint8_to_float(images, self.pipeline.normalize), self.labels[torch.from_numpy(index)]

    def read_readable(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pixels, positions) of ``index`` with every unreadable file replaced by the next readable
        one of the split (wrapping round); unreadable files met are marked in ``source.skips``."""
        index = index.copy()
        pixels, ok = self.source.read_skipping(self.rows[index])
        for slot in np.flatnonzero(~ok):
            start = int(index[slot])
            for step in range(1, len(self) + 1):
                position = (start + step) % len(self)
                row = int(self.rows[position])
                if self.source.skips.is_bad(row):
                    continue
                found, readable = self.source.read_skipping(np.array([row]))
                if readable[0]:
                    pixels[slot], index[slot] = found[0], position
                    break
            else:
                raise DataError(
                    f"every one of the {len(self)} image files of this split is unreadable "
                    f"(data.bad_files: skip left them all out), e.g. {self.files[start]}"
                )
        return pixels, index

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        return Batch(*self.batch(positions))

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.batch([position])
        return images[0], labels[0]

    def without_augmentation(self) -> FileImageDataset:
        """The same files with the random flip turned off (for fixed image grids)."""
        pipeline = ImagePipeline(**{**vars(self.pipeline), "flip": False})
        return FileImageDataset(
            self.files, self.labels, pipeline, self.label_names, self.source, self.rows, self.bad_files
        )
