"""dSprites, rendered procedurally on the official factor grid and index order.

The 737,280 binary 64x64 images are every combination of five factors, flattened in C order over
(shape, scale, orientation, posX, posY), so posY varies fastest -- the order of the official
``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (whose latents have a sixth, constant ``color``
column first, which we drop).

The official renderer was never published, so the drawing is ours: a white filled shape on black,
rotated counter-clockwise (as seen on screen) about its centre by the orientation angle. Its centre
in continuous pixel coordinates (pixel i spans [i, i + 1]) is column ``16 + 31 * posX`` and row
``16 + 31 * posY``, so every position step is a shift by exactly one pixel (posX right, posY down).
Each of the 720 (shape, scale, orientation) sprites is drawn once on a 32x32 patch centred at
(16, 16) -- supersampled 4x4 per pixel and thresholded at half coverage -- and then pasted at
(row, column) offset (posY index, posX index). Every sprite lies within 15.5 px of its centre, so no
image touches the outer row or column of the canvas.

The whole grid is generated once into a memory-mapped ``.npy`` cache of bits packed along each row
(shape (737280, 64, 8), 377 MB). An official ``.npz`` given as ``data.path`` is converted into the
same format instead, and its latents are used as labels.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from vaezoo.config import DataConfig
from vaezoo.data.cache import RowReader, parse_npy_header
from vaezoo.data.common import Batch, DataSplits, SplitDataset, cache_dir, require_path, split_indices
from vaezoo.data.errors import DataError
from vaezoo.data.transforms import random_hflip_batch, resize_binary, scale_unit
from vaezoo.fileio import atomic_path

# --------------------------------------------------------------------------- the factor grid

FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES: tuple[int, ...] = (3, 6, 40, 32, 32)
SHAPES: tuple[str, ...] = ("square", "ellipse", "heart")
FACTOR_VALUES: tuple[np.ndarray, ...] = (
    np.array([1.0, 2.0, 3.0]),  # shape: 1 square, 2 ellipse, 3 heart
    np.linspace(0.5, 1.0, 6),  # scale
    np.linspace(0.0, 2 * np.pi, 40),  # orientation in radians (0 and 2*pi look the same)
    np.linspace(0.0, 1.0, 32),  # posX
    np.linspace(0.0, 1.0, 32),  # posY
)
NUM_IMAGES = 737_280  # 3 * 6 * 40 * 32 * 32
IMAGE_SIZE = 64
OFFICIAL_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"


def check_classes(classes: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Validate an (N, 5) array of factor classes; returns it as int64."""
    array = np.asarray(classes)
    if array.ndim != 2 or array.shape[1] != len(FACTOR_SIZES) or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"factor classes must be an integer array shaped (N, {len(FACTOR_SIZES)}) over {FACTOR_NAMES}, "
            f"got {array.dtype} {array.shape}"
        )
    for column, (name, size) in enumerate(zip(FACTOR_NAMES, FACTOR_SIZES, strict=True)):
        bad = (array[:, column] < 0) | (array[:, column] >= size)
        if bad.any():
            raise DataError(f"factor '{name}' class {array[bad, column][0]} is outside 0..{size - 1}")
    return array.astype(np.int64, copy=False)


def index_to_classes(index: np.ndarray | int) -> np.ndarray:
    """Flat dSprites indices -> (N, 5) factor classes (C order, posY fastest)."""
    index = np.atleast_1d(np.asarray(index, dtype=np.int64))
    if index.size and (index.min() < 0 or index.max() >= NUM_IMAGES):
        raise DataError(
            f"dSprites index out of range: expected 0..{NUM_IMAGES - 1}, got {index.min()}..{index.max()}"
        )
    return np.stack(np.unravel_index(index, FACTOR_SIZES), axis=-1).astype(np.int64)


def classes_to_index(classes: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """(N, 5) factor classes -> flat dSprites indices."""
    return np.ravel_multi_index(tuple(check_classes(classes).T), FACTOR_SIZES).astype(np.int64)


def factor_values(classes: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """(N, 5) factor classes -> (N, 5) float64 factor values (as the official ``latents_values``)."""
    classes = check_classes(classes)
    return np.stack([FACTOR_VALUES[i][classes[:, i]] for i in range(len(FACTOR_SIZES))], axis=-1)


# --------------------------------------------------------------------------- drawing

PATCH = 32  # sprites are drawn on a PATCH x PATCH square centred at (16, 16)
SUPERSAMPLE = 4  # samples per pixel along each axis
SQUARE_HALF_SIDE = 10.0  # px at scale 1: a 20 px square covers 400 pixels
ELLIPSE_SEMI_AXES = (14.0, 9.0)  # px at scale 1, along and across the orientation
HEART_UNIT = 10.5  # px per unit of the implicit heart curve at scale 1
HEART_CENTRE = 0.25  # the heart's rotation centre sits this many units above the curve's origin
RENDER_VERSION = 1  # bump on any change of the drawing: it renames (invalidates) the cache


def _inside(shape: int, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Whether points (u right, v up, px from the centre, in the sprite's own frame) are in the shape."""
    if shape == 0:
        return np.maximum(np.abs(u), np.abs(v)) <= SQUARE_HALF_SIDE * scale
    if shape == 1:
        a, b = ELLIPSE_SEMI_AXES
        return (u / (a * scale)) ** 2 + (v / (b * scale)) ** 2 <= 1.0
    x = u / (HEART_UNIT * scale)
    y = v / (HEART_UNIT * scale) + HEART_CENTRE
    return (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0


def draw_sprites(shape: int, scale: float, angles: np.ndarray) -> np.ndarray:
    """Patches (len(angles), 32, 32) uint8 {0, 1} of one shape at one scale, rotated by each angle."""
    offsets = (np.arange(PATCH * SUPERSAMPLE) + 0.5) / SUPERSAMPLE - PATCH / 2
    x = offsets[None, None, :]  # right
    y = -offsets[None, :, None]  # up (rows grow downwards)
    cos = np.cos(angles)[:, None, None]
    sin = np.sin(angles)[:, None, None]
    inside = _inside(shape, x * cos + y * sin, -x * sin + y * cos, scale)
    coverage = inside.reshape(len(angles), PATCH, SUPERSAMPLE, PATCH, SUPERSAMPLE).mean(axis=(2, 4))
    return (coverage >= 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def sprite_patches() -> np.ndarray:
    """All 720 base sprites, (3, 6, 40, 32, 32) uint8 {0, 1}, computed once per process."""
    patches = np.stack(
        [
            np.stack([draw_sprites(shape, scale, FACTOR_VALUES[2]) for scale in FACTOR_VALUES[1]])
            for shape in range(len(SHAPES))
        ]
    )
    patches.setflags(write=False)
    return patches


def render_dsprites(classes: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Render any (N, 5) factor classes -> (N, 64, 64) uint8 images with values {0, 1}."""
    classes = check_classes(classes)
    n = len(classes)
    patches = sprite_patches()[classes[:, 0], classes[:, 1], classes[:, 2]]
    span = np.arange(PATCH)
    rows = classes[:, 4, None, None] + span[None, :, None]
    cols = classes[:, 3, None, None] + span[None, None, :]
    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    images[np.arange(n)[:, None, None], rows, cols] = patches
    return images


def render_positions(patch: np.ndarray) -> np.ndarray:
    """One sprite at all 32 x 32 positions, (1024, 64, 64) in index order (posX slow, posY fast)."""
    reach = IMAGE_SIZE - PATCH  # 32 shifts per axis: 0..31
    padded = np.zeros((IMAGE_SIZE + reach - 1,) * 2, dtype=np.uint8)
    padded[reach - 1 : reach - 1 + PATCH, reach - 1 : reach - 1 + PATCH] = patch
    windows = np.lib.stride_tricks.sliding_window_view(padded, (IMAGE_SIZE, IMAGE_SIZE))
    # windows[a, b] shows the patch shifted down by reach-1-a rows and right by reach-1-b columns.
    by_row_col = windows[::-1, ::-1]  # [row shift (posY), column shift (posX)]
    return by_row_col.transpose(1, 0, 2, 3).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)


# --------------------------------------------------------------------------- the packed cache

PACKED_SHAPE = (IMAGE_SIZE, IMAGE_SIZE // 8)
FORMAT_VERSION = 1  # the layout of the cache file


def procedural_cache_path(directory: Path) -> Path:
    return directory / f"dsprites-procedural-r{RENDER_VERSION}-f{FORMAT_VERSION}-packed.npy"


def official_cache_path(npz: Path, directory: Path) -> Path:
    """A cache name keyed by the npz's name, size and modification time."""
    stat = npz.stat()
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", npz.stem)
    return directory / f"dsprites-npz-{stem}-{stat.st_size}-{stat.st_mtime_ns}-f{FORMAT_VERSION}-packed.npy"


def open_packed(path: Path, rows: int) -> np.ndarray | None:
    """The cache memory-mapped read-only, or None if it is missing or not what it should be."""
    if not path.is_file():
        return None
    try:
        packed = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        warnings.warn(f"{path}: unreadable dSprites cache ({err}); rebuilding it", stacklevel=2)
        return None
    if packed.dtype != np.uint8 or packed.shape != (rows, *PACKED_SHAPE):
        warnings.warn(
            f"{path}: dSprites cache has {packed.dtype} {packed.shape}; rebuilding it", stacklevel=2
        )
        return None
    return packed


def write_packed(path: Path, rows: int, fill: Callable[[np.ndarray], None]) -> None:
    """Create ``path`` as a packed-bit ``.npy`` that ``fill`` writes; atomic via a temp file."""
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(rows, *PACKED_SHAPE))
        # Reserve the file's blocks now: a memory map of a sparse file on a full disk would die
        # with SIGBUS at the first page it cannot place; this fails with ENOSPC instead.
        with open(tmp, "r+b") as file:
            try:
                os.posix_fallocate(file.fileno(), 0, tmp.stat().st_size)
            except OSError as err:
                if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it: go on
                    raise
        fill(out)
        out.flush()
        del out


def fill_procedural(out: np.ndarray) -> None:
    """Write every dSprites image, packed, one base sprite (1024 images) at a time."""
    per_sprite = FACTOR_SIZES[3] * FACTOR_SIZES[4]
    for sprite, patch in enumerate(sprite_patches().reshape(-1, PATCH, PATCH)):
        out[sprite * per_sprite : (sprite + 1) * per_sprite] = np.packbits(render_positions(patch), axis=-1)


def build_procedural_cache(directory: Path) -> Path:
    """Generate the procedural cache under ``directory`` unless a valid one exists; returns its path."""
    path = procedural_cache_path(directory)
    if open_packed(path, NUM_IMAGES) is None:
        write_packed(path, NUM_IMAGES, fill_procedural)
    return path


# --------------------------------------------------------------------------- the official npz

OFFICIAL_ARRAYS = ("imgs", "latents_values", "latents_classes")


def _expected_npz() -> str:
    return (
        f"the official dSprites file ({OFFICIAL_FILE}) with arrays imgs ({NUM_IMAGES}, 64, 64), "
        f"latents_values ({NUM_IMAGES}, 6) and latents_classes ({NUM_IMAGES}, 6)"
    )


@contextlib.contextmanager
def reading_npz(npz: Path) -> Iterator[None]:
    """Any failure to read the archive within the block is a DataError naming it. A damaged zip
    fails in many ways (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError for another
    compression, ValueError or SyntaxError from an .npy header, ...): all of them are the file's."""
    try:
        yield
    except DataError:
        raise
    except Exception as err:  # see above: any exception while reading is the file's fault
        raise DataError(
            f"{npz}: not a readable .npz file ({type(err).__name__}: {err}); expected {_expected_npz()}"
        ) from None


def _npz_members(npz: Path) -> set[str]:
    if not npz.is_file():
        raise DataError(f"data.path = '{npz}' is not a file; expected {_expected_npz()}")
    with reading_npz(npz), zipfile.ZipFile(npz) as archive:
        members = set(archive.namelist())
    missing = [name for name in OFFICIAL_ARRAYS if f"{name}.npy" not in members]
    if missing:
        raise DataError(
            f"{npz}: has no array {', '.join(repr(m) for m in missing)}; expected {_expected_npz()}"
        )
    return members


def iter_npz_rows(npz: Path, key: str, chunk: int) -> Iterator[np.ndarray]:
    """Stream an array of an npz in chunks of rows, without loading it whole."""
    with reading_npz(npz), zipfile.ZipFile(npz) as archive, archive.open(f"{key}.npy") as stream:
        shape, dtype = parse_npy_header(stream, f"{npz}: array '{key}'")
        if not shape:
            raise DataError(f"{npz}: array '{key}' is a scalar; expected rows")
        row_shape = shape[1:]
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
        for start in range(0, shape[0], chunk):
            n = min(chunk, shape[0] - start)
            data = stream.read(n * row_bytes)
            if len(data) != n * row_bytes:
                raise DataError(f"{npz}: array '{key}' is truncated at row {start}; expected {shape[0]} rows")
            yield np.frombuffer(data, dtype=dtype).reshape(n, *row_shape)


def npz_header(npz: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of an array in an npz, from its header alone."""
    with reading_npz(npz), zipfile.ZipFile(npz) as archive, archive.open(f"{key}.npy") as stream:
        return parse_npy_header(stream, f"{npz}: array '{key}'")


def npz_shape(npz: Path, key: str) -> tuple[int, ...]:
    return npz_header(npz, key)[0]


def is_numeric(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)


def read_official_latents(npz: Path) -> tuple[np.ndarray, np.ndarray]:
    """Validate an official npz and return its (classes, values), each (N, 5) without ``color``."""
    _npz_members(npz)
    shape, dtype = npz_header(npz, "imgs")
    if shape != (NUM_IMAGES, IMAGE_SIZE, IMAGE_SIZE) or not is_numeric(dtype):
        raise DataError(f"{npz}: imgs has shape {shape} and dtype {dtype}; expected {_expected_npz()}")
    for key in ("latents_classes", "latents_values"):
        shape, dtype = npz_header(npz, key)
        if shape != (NUM_IMAGES, 6) or not is_numeric(dtype):
            raise DataError(f"{npz}: {key} has shape {shape} and dtype {dtype}; expected {_expected_npz()}")
    with reading_npz(npz), np.load(npz, allow_pickle=False) as arrays:
        classes, values = arrays["latents_classes"], arrays["latents_values"]
    for key, array in (("latents_classes", classes), ("latents_values", values)):
        if array.shape != (NUM_IMAGES, 6):
            raise DataError(f"{npz}: {key} has shape {array.shape}; expected {_expected_npz()}")
    classes = classes[:, 1:].astype(np.int64)
    if not np.array_equal(classes, index_to_classes(np.arange(NUM_IMAGES))):
        raise DataError(
            f"{npz}: latents_classes are not in the dSprites grid order "
            f"(C order over {FACTOR_NAMES} with sizes {FACTOR_SIZES})"
        )
    return classes, values[:, 1:].astype(np.float32)


def build_official_cache(npz: Path, directory: Path) -> Path:
    """Convert the npz's ``imgs`` into the packed cache unless already done; returns the cache path."""
    path = official_cache_path(npz, directory)
    if open_packed(path, NUM_IMAGES) is not None:
        return path

    def fill(out: np.ndarray) -> None:
        start = 0
        for rows in iter_npz_rows(npz, "imgs", chunk=16384):
            out[start : start + len(rows)] = np.packbits(rows != 0, axis=-1)
            start += len(rows)

    write_packed(path, NUM_IMAGES, fill)
    return path


# --------------------------------------------------------------------------- images and factors


class DSpritesSource:
    """The full grid: images in the packed cache and the factors of every image."""

    def __init__(
        self, cache: Path, classes: np.ndarray | None = None, values: np.ndarray | None = None
    ) -> None:
        self.cache = Path(cache)
        self._classes = classes  # None: the procedural grid, computed from the index
        self._values = values
        self._packed: np.ndarray | None = None
        self._reader: RowReader | None = None

    def __getstate__(self) -> dict:
        # Workers re-open the memmap and the file instead of pickling them.
        return {**self.__dict__, "_packed": None, "_reader": None}

    @property
    def num_images(self) -> int:
        return NUM_IMAGES

    def packed(self) -> np.ndarray:
        if self._packed is None:
            self._packed = open_packed(self.cache, NUM_IMAGES)
            if self._packed is None:
                raise DataError(f"{self.cache}: the dSprites cache is missing or damaged; run prepare_data()")
        return self._packed

    def binary_images(self, indices: np.ndarray) -> np.ndarray:
        """(N, 64, 64) uint8 {0, 1}: positional reads of the packed rows and one unpack for the batch.

        Reads go through the page cache, not a memory map, so RSS does not grow with the share of
        the 377 MB file a run has touched (the full grid and a subset cost the same).
        """
        if self._reader is None:
            self.packed()  # validates the cache
            self._reader = RowReader(self.cache)
        return np.unpackbits(self._reader.read(indices), axis=-1)

    def classes(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        return index_to_classes(indices) if self._classes is None else self._classes[indices]

    def values(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if self._values is None:
            return factor_values(index_to_classes(indices)).astype(np.float32)
        return self._values[indices]


def binary_to_tensor(
    images: np.ndarray, image_size: int, normalize: str, channels: int = 1, flip: bool = False
) -> torch.Tensor:
    """(N, 64, 64) uint8 {0, 1} -> float (N, channels, size, size) in the range of ``normalize``.

    ``flip`` mirrors images at random while they are still uint8; then one float conversion.
    """
    tensor = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 64, 64) uint8
    if flip:
        tensor = random_hflip_batch(tensor)
    tensor = resize_binary(tensor.float(), image_size)
    if channels != 1:
        tensor = tensor.expand(-1, channels, -1, -1).contiguous()
    return scale_unit(tensor, normalize)


class DSpritesGroundTruth:
    """The factor interface for disentanglement metrics; indices are flat indices of the full grid."""

    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES

    def __init__(
        self,
        source: DSpritesSource | None = None,
        image_size: int = 64,
        normalize: str = "unit",
        channels: int = 1,
    ) -> None:
        self.source = source  # None: images are rendered on demand
        self.image_size = image_size
        self.normalize = normalize
        self.channels = channels

    def factor_classes(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """(N, 5) int64 factor classes of flat grid indices."""
        return self.source.classes(indices) if self.source else index_to_classes(np.asarray(indices))

    def factor_values(self, classes: np.ndarray) -> np.ndarray:
        return factor_values(classes)

    def sample_factors(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` factor class tuples drawn uniformly and independently per factor, (n, 5) int64."""
        rng = np.random.default_rng(rng)
        return rng.integers(0, FACTOR_SIZES, size=(n, len(FACTOR_SIZES)), dtype=np.int64)

    def images_from_factors(self, classes: np.ndarray) -> torch.Tensor:
        """Images of (N, 5) factor classes, float (N, C, size, size), as the dataset returns them."""
        if self.source is not None:
            images = self.source.binary_images(classes_to_index(classes))
        else:
            images = render_dsprites(classes)
        return binary_to_tensor(images, self.image_size, self.normalize, self.channels)


class DSpritesDataset(SplitDataset):
    """A subset of the grid: ``(image, label)`` with label = the 5 factor values (float32)."""

    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES

    def __init__(self, ground_truth: DSpritesGroundTruth, indices: np.ndarray, flip: bool = False) -> None:
        if ground_truth.source is None:
            raise DataError("a DSpritesDataset needs a ground truth backed by the packed cache")
        self.ground_truth = ground_truth
        self.indices = np.asarray(indices, dtype=np.int64)
        self.flip = flip

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, size, size) and labels (N, 5) of dataset positions, read in one go."""
        gt = self.ground_truth
        source = gt.source
        assert source is not None  # checked in __init__
        indices = self.indices[np.asarray(positions, dtype=np.int64)]
        binary = source.binary_images(indices)
        images = binary_to_tensor(binary, gt.image_size, gt.normalize, gt.channels, self.flip)
        return images, torch.from_numpy(np.ascontiguousarray(source.values(indices), dtype=np.float32))

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        return Batch(*self.batch(positions))

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.batch([position])
        return images[0], labels[0]

    def factor_classes(self, positions: Sequence[int]) -> np.ndarray:
        """(N, 5) factor classes of dataset positions (not grid indices)."""
        return self.ground_truth.factor_classes(self.indices[np.asarray(positions, dtype=np.int64)])

    def sample_factors(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        return self.ground_truth.sample_factors(n, rng)

    def images_from_factors(self, classes: np.ndarray) -> torch.Tensor:
        return self.ground_truth.images_from_factors(classes)

    def without_augmentation(self) -> DSpritesDataset:
        return DSpritesDataset(self.ground_truth, self.indices, flip=False)


# --------------------------------------------------------------------------- the builder


def open_source(config: DataConfig) -> DSpritesSource:
    """The packed images (built into the cache on first use) plus factors: official npz or procedural."""
    directory = cache_dir(config)
    if config.path is None:
        return DSpritesSource(build_procedural_cache(directory))
    npz = require_path(config, _expected_npz())
    classes, values = read_official_latents(npz)
    return DSpritesSource(build_official_cache(npz, directory), classes, values)


def build_dsprites(config: DataConfig) -> DataSplits:
    """Train/val splits of dSprites (no official split: test = val); no flip unless ``data.flip``."""
    channels = config.channels or 1
    ground_truth = DSpritesGroundTruth(open_source(config), config.image_size, config.normalize, channels)
    train, val = split_indices(config, NUM_IMAGES, "dSprites")
    val_set = DSpritesDataset(ground_truth, val)
    return DataSplits(
        train=DSpritesDataset(ground_truth, train, flip=bool(config.flip)),
        val=val_set,
        test=val_set,
        channels=channels,
        label_shape=(len(FACTOR_NAMES),),
        ground_truth=ground_truth,
    )
