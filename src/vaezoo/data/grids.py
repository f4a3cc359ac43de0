"""What the ground-truth factor datasets share (Shapes3D, MPI3D, SmallNORB, Cars3D).

Each of them is a complete grid of factor combinations with one image each, published in its own
format. The images end up as uint8 rows in a file that is read by position: where they lie (an
uncompressed ``.npz`` member, a contiguous HDF5 dataset), or else converted once into a uint8
``.npy`` under ``data.cache_dir`` (a compressed member, gzipped or MATLAB files, one view of a
stereo pair). Batches are made by ``ArrayImages`` (channels, centre crop, resize, normalize), and
the factor interface of the disentanglement metrics is an ``ArrayGroundTruth``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from tqdm import tqdm

from vaezoo.config import DataConfig
from vaezoo.data.arrays import ArrayDataset, ArrayGroundTruth, ArrayImages, Factors
from vaezoo.data.cache import RowReader, parse_npy_header, read_npy_header
from vaezoo.data.common import DataSplits, cache_dir, split_indices
from vaezoo.data.errors import DataError
from vaezoo.fileio import DiskFullError, atomic_path

CACHE_VERSION = 1  # bump on any change of how a cache is laid out: renames (invalidates) the caches


class FileRows(RowReader):
    """Rows of an array stored contiguously (C order) in a file from byte ``offset`` on, read by
    position (``os.preadv``, as the image cache's rows; never a memory map: a file cut short while
    in use is a DataError, not a SIGBUS). The descriptor is opened again after pickling (a
    DataLoader worker). A file too short for the array is refused naming it and both sizes.
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype, what: str) -> None:
        # The layout is given (an npz member, an HDF5 dataset), not read from a .npy header.
        self.path = Path(path)
        self.offset = int(offset)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.row_shape = self.shape[1:]
        self.row_bytes = math.prod(self.row_shape) * self.dtype.itemsize
        self._fd = None
        needed = self.offset + self.shape[0] * self.row_bytes
        size = self.path.stat().st_size
        if size < needed:
            raise DataError(
                f"{self.path}: truncated: {what} {self.dtype} {self.shape} needs {needed} bytes, the file "
                f"has {size}; the file was cut short (copy or download it again)"
            )

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return self.read(rows)


# --------------------------------------------------------------------------- the uint8 cache


def file_key(files: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of each source file: a change of any of them renames the cache."""
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def cache_file(config: DataConfig, sources: Sequence[Path], shape: tuple[int, ...]) -> Path:
    text = json.dumps([CACHE_VERSION, config.name, list(shape), file_key(sources)])
    return cache_dir(config) / f"{config.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}-u8.npy"


def cached_rows(
    config: DataConfig,
    sources: Sequence[Path],
    shape: tuple[int, ...],
    blocks: Callable[[], Iterator[np.ndarray]],
    what: str,
) -> FileRows:
    """uint8 rows ``shape`` converted once from ``sources`` into a ``.npy`` under ``data.cache_dir``.

    ``blocks()`` yields the rows in order, a block at a time; they are written to a temporary file
    renamed into place when complete (a failed or interrupted build leaves nothing partial). A
    cache whose header matches is used as it is; its name holds the sources' sizes and times.
    """
    npy = cache_file(config, sources, shape)
    if npy.is_file():
        try:
            found, dtype, offset = read_npy_header(npy)
            if found == shape and dtype == np.uint8:
                return FileRows(npy, offset, shape, np.dtype(np.uint8), what)
        except DataError:
            pass  # damaged: built again below
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    progress = tqdm(total=shape[0], desc=f"caching {what} into {npy}", unit="img", disable=None, leave=False)
    try:
        with atomic_path(npy) as tmp, open(tmp, "wb") as out, progress:
            np.lib.format.write_array_header_2_0(out, header)
            rows = 0
            for block in read_blocks(blocks(), what):
                if block.shape[1:] != shape[1:] or rows + len(block) > shape[0]:
                    raise DataError(f"{what}: rows {block.shape} do not fit the expected {shape}")
                out.write(np.ascontiguousarray(block, dtype=np.uint8).tobytes())
                rows += len(block)
                progress.update(len(block))
            if rows != shape[0]:
                raise DataError(f"{what}: {rows} rows read; expected {shape[0]}")
    except (DataError, DiskFullError):
        raise
    except OSError as err:
        raise DataError(
            f"{npy.parent}: cannot write the uint8 cache of {what} there ({type(err).__name__}: {err}); "
            "set data.cache_dir or $VAEZOO_CACHE to a writable folder"
        ) from None
    return FileRows(npy, read_npy_header(npy)[2], shape, np.dtype(np.uint8), what)


def read_blocks(blocks: Iterator[np.ndarray], what: str) -> Iterator[np.ndarray]:
    """``blocks``, with a failure to read the source (an OSError) said as the source's, not the cache's."""
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            return
        except OSError as err:
            raise DataError(f"{what}: cannot read the source ({type(err).__name__}: {err})") from None
        yield block


def row_blocks(rows: int, step: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive blocks of at most ``step`` rows."""
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def block_rows(row_bytes: int, target: int = 64 << 20) -> int:
    """Rows per block of about ``target`` bytes."""
    return max(1, target // max(1, row_bytes))


# --------------------------------------------------------------------------- factors and splits


def grid_classes(sizes: Sequence[int]) -> np.ndarray:
    """The classes of every row of a row-major (C order) grid, (prod(sizes), F) int64."""
    count = int(np.prod(sizes, dtype=np.int64))
    return np.stack(np.unravel_index(np.arange(count), tuple(sizes)), axis=-1).astype(np.int64)


def grid_ground_truth(
    images: ArrayImages, names: Sequence[str], sizes: Sequence[int], classes: np.ndarray | None = None
) -> ArrayGroundTruth:
    """The ground truth of images stored in the row-major order of their factor grid (``classes``:
    that grid's ``grid_classes(sizes)``, if already at hand)."""
    classes = grid_classes(sizes) if classes is None else classes
    factors = Factors(classes, tuple(int(s) for s in sizes), tuple(names))
    return ArrayGroundTruth(images, factors, np.arange(len(factors.classes), dtype=np.int64))


def image_source(rows: FileRows, layout: str, config: DataConfig, channels: int) -> ArrayImages:
    """Batches of uint8 rows: channels converted, centre-cropped, resized to ``data.image_size``."""
    array = cast(np.ndarray, rows)  # ArrayImages only indexes it by rows and reads shape and dtype
    return ArrayImages(array, layout, 255.0, config.image_size, channels, config.crop, config.normalize)


def grid_splits(
    config: DataConfig, images: ArrayImages, labels: np.ndarray, ground_truth: object, where: str
) -> DataSplits:
    """Seeded train/val splits (``data.subset``, ``data.val_fraction``, ``data.split_seed``); test = val.

    ``labels`` (N, K) become float32 vectors; no flip unless ``data.flip`` (a flip changes a pose)."""
    tensor = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))
    train, val = split_indices(config, len(images), where)
    val_set = ArrayDataset(images, val, tensor)
    return DataSplits(
        ArrayDataset(images, train, tensor, flip=bool(config.flip)),
        val_set,
        val_set,
        images.channels,
        (tensor.shape[1],),
        ground_truth=ground_truth,
    )


@contextlib.contextmanager
def reading_zip(path: Path, expected: str) -> Iterator[None]:
    """Any failure to read the ``.npz`` within the block is a DataError naming it: a damaged zip fails
    in many ways (BadZipFile, zlib.error, EOFError, a damaged .npy header, ...), all of them the file's."""
    try:
        yield
    except DataError:
        raise
    except Exception as err:  # see above
        raise DataError(
            f"{path}: not a readable .npz file ({type(err).__name__}: {err}); expected {expected}"
        ) from None


def npz_blocks(path: Path, key: str, step: int, expected: str) -> Iterator[np.ndarray]:
    """The rows of an array in a ``.npz``, ``step`` at a time, decompressed as they are read."""
    with reading_zip(path, expected), zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as stream:
        shape, dtype = parse_npy_header(stream, f"{path}: array '{key}'")
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        for start, stop in row_blocks(shape[0], step):
            data = stream.read((stop - start) * row_bytes)
            if len(data) != (stop - start) * row_bytes:
                raise DataError(
                    f"{path}: array '{key}' is truncated at row {start}; expected {shape[0]} rows"
                )
            yield np.frombuffer(data, dtype=dtype).reshape(stop - start, *shape[1:])


def check_file(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise DataError(f"data.path = '{path}' is not a file; expected {expected}")
    return path


def os_error(path: Path, err: OSError, expected: str) -> DataError:
    return DataError(f"{path}: cannot read the file ({type(err).__name__}: {err}); expected {expected}")
