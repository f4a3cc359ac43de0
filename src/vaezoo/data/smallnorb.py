"""SmallNORB (LeCun, Huang & Bottou 2004, "Learning Methods for Generic Object Recognition with
Invariance to Pose and Lighting"): ``smallnorb``.

``data.path`` is the folder of the six published files (each raw or gzipped, ``.gz``):
``smallnorb-5x46789x9x18x6x2x96x96-training-{dat,cat,info}.mat`` and
``smallnorb-5x01235x9x18x6x2x96x96-testing-{dat,cat,info}.mat``. Despite the suffix they are not
MATLAB files but the dataset's binary matrix format: a little-endian int32 magic number giving the
type (0x1E3D4C55 bytes, 0x1E3D4C54 int32, ...), an int32 number of dimensions, max(3, ndim) int32
sizes, then the values in C order. ``dat`` holds uint8 (24300, 2, 96, 96) stereo pairs, ``cat`` int32
(24300,) categories, ``info`` int32 (24300, 4) instance, elevation, azimuth (0, 2, .., 34) and
lighting.

As disentanglement_lib: the two files are one set (48,600 images: 5 categories x 10 instances -- 5
in each file -- x 9 elevations x 18 azimuths x 6 lightings, every combination once), the first
camera's image is used, azimuths are halved to 0..17, and the factors of the metrics are category,
elevation, azimuth and lighting: the instance is drawn at random for every image the metrics ask
for. The first views are converted once into a uint8 cache. Labels (float32 vectors) are the five
classes category, instance, elevation, azimuth, lighting; the train/val split is seeded.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, cast

import numpy as np
import torch

from vaezoo.config import DataConfig
from vaezoo.data.arrays import ArrayGroundTruth, Factors, grid_rows
from vaezoo.data.common import DataSplits, require_path
from vaezoo.data.errors import DataError
from vaezoo.data.grids import block_rows, cached_rows, grid_splits, image_source, row_blocks

SPLITS = ("5x46789x9x18x6x2x96x96-training", "5x01235x9x18x6x2x96x96-testing")
KINDS = ("dat", "cat", "info")
MAGIC = {  # the binary matrix type codes -> little-endian numpy dtypes
    0x1E3D4C51: "<f4",
    0x1E3D4C53: "<f8",
    0x1E3D4C54: "<i4",
    0x1E3D4C55: "u1",
    0x1E3D4C56: "<i2",
}
ALL_FACTORS: tuple[str, ...] = ("category", "instance", "elevation", "azimuth", "lighting")
NUISANCE = 1  # the instance: drawn at random, not a factor of the metrics
LAYOUT = (
    "a folder with the six SmallNORB files smallnorb-{" + ",".join(SPLITS) + "}-{dat,cat,info}.mat "
    "(each optionally .gz)"
)


def file_name(split: str, kind: str) -> str:
    return f"smallnorb-{split}-{kind}.mat"


def find_file(folder: Path, split: str, kind: str) -> Path:
    name = file_name(split, kind)
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder / name}: file is missing (also looked for .gz); expected {LAYOUT}")


def open_stream(path: Path) -> IO[bytes]:
    stream = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return cast(IO[bytes], stream)


def read_exactly(stream: IO[bytes], count: int, path: Path, what: str) -> bytes:
    parts, left = [], count
    try:
        while left > 0:  # in pieces: a header may promise far more than the file holds
            part = stream.read(min(left, 1 << 26))
            if not part:
                break
            parts.append(part)
            left -= len(part)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read the file ({type(err).__name__}: {err})") from None
    data = b"".join(parts)
    if len(data) != count:
        raise DataError(f"{path}: truncated: {what} needs {count} bytes, the file has {len(data)} left")
    return data


def check_end(stream: IO[bytes], path: Path, shape: tuple[int, ...]) -> None:
    """Bytes past the values the header promises are refused (not a SmallNORB file as published)."""
    try:
        extra = stream.read(1)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read the file ({type(err).__name__}: {err})") from None
    if extra:
        raise DataError(f"{path}: holds more bytes than its header {shape} says")


def read_header(stream: IO[bytes], path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, shape) of a binary matrix: magic, ndim, max(3, ndim) sizes (little-endian int32)."""
    magic, ndim = struct.unpack("<ii", read_exactly(stream, 8, path, "the header"))
    if magic not in MAGIC:
        raise DataError(
            f"{path}: bad magic number 0x{magic & 0xFFFFFFFF:08x}; expected a SmallNORB binary matrix "
            "(0x1e3d4c55 for bytes, 0x1e3d4c54 for int32)"
        )
    if not 1 <= ndim <= 16:
        raise DataError(f"{path}: the header says {ndim} dimensions; expected 1 to 16")
    sizes = struct.unpack(f"<{max(3, ndim)}i", read_exactly(stream, 4 * max(3, ndim), path, "the header"))
    return np.dtype(MAGIC[magic]), tuple(int(n) for n in sizes[:ndim])


def check_matrix(path: Path, dtype: np.dtype, shape: tuple[int, ...], kind: str) -> None:
    expected = {
        "dat": ("u1", 4, "uint8 (N, 2, H, W) stereo pairs"),
        "cat": ("<i4", 1, "int32 (N,) categories"),
        "info": ("<i4", 2, "int32 (N, 4) instance, elevation, azimuth, lighting"),
    }[kind]
    ok = dtype == np.dtype(expected[0]) and len(shape) == expected[1] and min(shape) > 0
    if ok and kind == "dat":
        ok = shape[1] == 2
    if ok and kind == "info":
        ok = shape[1] == 4
    if not ok:
        raise DataError(f"{path}: holds {dtype} {shape}; expected {expected[2]}")


def read_matrix(path: Path, kind: str) -> np.ndarray:
    """A whole ``cat`` or ``info`` matrix; bytes past its end are refused too."""
    with open_stream(path) as stream:
        dtype, shape = read_header(stream, path)
        check_matrix(path, dtype, shape, kind)
        count = math.prod(shape) * dtype.itemsize  # Python ints: huge sizes do not overflow
        values = np.frombuffer(read_exactly(stream, count, path, f"{dtype} {shape}"), dtype).reshape(shape)
        check_end(stream, path, shape)
    return values.astype(np.int64)


def dat_shape(path: Path) -> tuple[int, ...]:
    with open_stream(path) as stream:
        dtype, shape = read_header(stream, path)
    check_matrix(path, dtype, shape, "dat")
    return shape


def first_views(path: Path) -> Iterator[np.ndarray]:
    """The first camera's images of a ``dat`` file, (n, H, W) uint8 blocks, as they are read."""
    with open_stream(path) as stream:
        _, shape = read_header(stream, path)
        pair = 2 * shape[2] * shape[3]
        for start, stop in row_blocks(shape[0], block_rows(pair)):
            data = read_exactly(stream, (stop - start) * pair, path, f"image pairs {start}..{stop - 1}")
            yield np.frombuffer(data, np.uint8).reshape(stop - start, 2, shape[2], shape[3])[:, 0]
        check_end(stream, path, shape)


class NuisanceGroundTruth:
    """The factor interface over every factor of a complete grid but one nuisance factor, which is
    drawn uniformly for each image asked for (disentanglement_lib's SmallNORB instance).

    ``images_from_factors(classes, rng=None)`` draws with ``rng``, else with its own generator
    (seeded: the same calls give the same images)."""

    def __init__(self, full: ArrayGroundTruth, nuisance: int, seed: int = 0) -> None:
        self.full = full
        self.nuisance = nuisance
        self.kept = [k for k in range(len(full.factor_sizes)) if k != nuisance]
        self.factor_names = tuple(full.factor_names[k] for k in self.kept)
        self.factor_sizes = tuple(full.factor_sizes[k] for k in self.kept)
        self.rng = np.random.default_rng(seed)

    def factor_classes(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """(N, F) int64 factor classes of images (rows of the set), without the nuisance."""
        return self.full.factor_classes(indices)[:, self.kept]

    def sample_factors(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` factor class tuples drawn uniformly and independently per factor, (n, F) int64."""
        rng = np.random.default_rng(rng)
        return rng.integers(0, self.factor_sizes, size=(n, len(self.factor_sizes)), dtype=np.int64)

    def sample_factors_matching(
        self, factor: int, values: np.ndarray, rng: np.random.Generator | int | None = None
    ) -> np.ndarray:
        """Factor classes whose factor ``factor`` is ``values``, the others drawn uniformly, (n, F).

        Its presence also tells the metrics not to memoize one code per combination
        (``MemoizedCodes``): each image asked for has an instance drawn anew."""
        classes = self.sample_factors(len(values), rng)
        classes[:, factor] = np.asarray(values, dtype=np.int64)
        return classes

    def images_from_factors(
        self, classes: np.ndarray, rng: np.random.Generator | None = None
    ) -> torch.Tensor:
        """Images of (N, F) factor classes, each with a random nuisance class."""
        array = np.asarray(classes)
        if array.ndim != 2 or array.shape[1] != len(self.kept) or not np.issubdtype(array.dtype, np.integer):
            raise DataError(
                f"factor classes must be an integer array shaped (N, {len(self.kept)}) over "
                f"{self.factor_names}, got {array.dtype} {array.shape}"
            )
        rng = self.rng if rng is None else rng
        drawn = rng.integers(0, self.full.factor_sizes[self.nuisance], size=len(array))
        return self.full.images_from_factors(np.insert(array.astype(np.int64), self.nuisance, drawn, axis=1))


def read_factors(folder: Path) -> tuple[np.ndarray, list[Path], tuple[int, int]]:
    """(classes (N, 5) of both files, the dat files, the image size); counts and values checked."""
    parts, dats, sides = [], [], set()
    for split in SPLITS:
        dat, cat, info = (find_file(folder, split, kind) for kind in KINDS)
        shape = dat_shape(dat)
        categories, infos = read_matrix(cat, "cat"), read_matrix(info, "info")
        if not len(categories) == len(infos) == shape[0]:
            raise DataError(
                f"{folder}: the {split} files hold {shape[0]} image pairs, {len(categories)} categories and "
                f"{len(infos)} info rows; expected one of each per image"
            )
        if (infos[:, 2] % 2).any():
            row = int(np.flatnonzero(infos[:, 2] % 2)[0])
            raise DataError(f"{info}: azimuth {infos[row, 2]} at row {row}; expected 0, 2, .., 34")
        parts.append(np.column_stack([categories, infos[:, 0], infos[:, 1], infos[:, 2] // 2, infos[:, 3]]))
        dats.append(dat)
        sides.add((shape[2], shape[3]))
    if len(sides) != 1:
        raise DataError(f"{folder}: the two dat files hold images of different sizes {sorted(sides)}")
    classes = np.concatenate(parts)
    if (classes < 0).any():
        row, column = (int(i[0]) for i in np.nonzero(classes < 0))
        raise DataError(
            f"{folder}: {ALL_FACTORS[column]} {classes[row, column]} at image {row}; expected >= 0"
        )
    return classes, dats, sides.pop()


def build_smallnorb(config: DataConfig) -> DataSplits:
    """Seeded train/val splits of both SmallNORB files together (test = val)."""
    folder = require_path(config, LAYOUT)
    if not folder.is_dir():
        raise DataError(f"data.path = '{folder}' is not a folder; expected {LAYOUT}")
    classes, dats, (height, width) = read_factors(folder)
    sizes = tuple(int(s) for s in classes.max(axis=0) + 1)
    factors = Factors(classes, sizes, ALL_FACTORS)
    cells = grid_rows(factors, str(folder))
    if isinstance(cells, str):
        raise DataError(
            f"{cells}; expected every ({', '.join(ALL_FACTORS)}) combination once over the training "
            "and testing files together"
        )
    if len(classes) != len(cells):
        raise DataError(
            f"{folder}: {len(classes)} images for the {len(cells)} combinations of the "
            f"{' x '.join(map(str, sizes))} grid of {', '.join(ALL_FACTORS)}: some combinations repeat; "
            "expected every combination once over the training and testing files together"
        )
    shape = (len(classes), height, width)

    def blocks() -> Iterator[np.ndarray]:
        for dat in dats:
            yield from first_views(dat)

    sources = [find_file(folder, split, kind) for split in SPLITS for kind in KINDS]
    rows = cached_rows(config, sources, shape, blocks, f"{folder}: the first views of the dat files")
    source = image_source(rows, "NHW", config, config.channels or 1)
    ground_truth = NuisanceGroundTruth(ArrayGroundTruth(source, factors, cells), NUISANCE)
    return grid_splits(config, source, classes, ground_truth, str(folder))
