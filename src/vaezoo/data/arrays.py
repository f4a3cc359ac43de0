"""Images the user brings as a numpy file: ``arrays`` (``data.path`` = a ``.npz`` or ``.npy``).

A ``.npy`` holds the images only. A ``.npz`` holds ``images`` (or any single array), and optionally
``labels``, ``factors``, ``factor_sizes`` and ``factor_names``; other arrays are ignored (a warning
names them). Files are read with ``allow_pickle=False``: object arrays and pickles are refused.

Images: (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4 (channels last is read first; a
shape that fits both readings, such as (N, 3, 4, 4), is refused). uint8 is 0..255; other integers
must lie in 0..255; bool is 0/1; floats must lie in [0, 1] or in [0, 255] -- which one is detected
from the values and said (a warning), anything else is refused naming the range found. Alpha is
dropped; ``data.channels`` converts (RGB -> grey with PIL's ITU-R 601-2 luma weights). Non-square
images are centre-cropped (``data.crop``, default the shorter side), then resized (bilinear,
antialiased) to ``data.image_size``; no flip unless ``data.flip``.

Labels (``labels``): int class indices (N,), or vectors (N, K) (float32). Without them, ``factors``
as float32 vectors if given, else class 0 for every image (as a flat image folder).

Factors: ``factors`` (N, F) int classes with ``factor_sizes`` (F,) and optional ``factor_names``
(F,) strings. When every combination of the factor grid has an image, ``VAEDataModule.ground_truth``
is an ``ArrayGroundTruth`` (what the disentanglement metrics sample from); otherwise a warning says
which combinations are missing, and there is none.

A ``.npy`` is memory-mapped (``mmap_mode="r"``; DataLoader workers map it again instead of copying
it); a ``.npz`` member cannot be mapped and is loaded whole. Pixels are converted per batch from the
array itself, with no uint8 cache: nothing needs decoding (``vaezoo.data.cache`` keeps the decoded
image files of CelebA and image folders, keyed by the files). The train/val split is ``split_indices``'s
(``data.subset``, ``data.val_fraction``, ``data.split_seed``); test = val.
"""

from __future__ import annotations

import math
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vaezoo.config import DataConfig
from vaezoo.data.common import Batch, DataSplits, SplitDataset, require_path, split_indices
from vaezoo.data.errors import DataError
from vaezoo.data.transforms import random_hflip_batch, scale_unit, uint8_to_float

NPZ_KEYS = ("images", "labels", "factors", "factor_sizes", "factor_names")
CHANNELS = (1, 3, 4)  # grey, RGB, RGBA
LUMA = (0.299, 0.587, 0.114)  # PIL's convert("L") (ITU-R 601-2)
SCAN_BYTES = 64 << 20  # the value-range scan reads a float array in chunks of about this size
IMAGE_SHAPES = "(N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4"
EXPECTED = (
    f"a .npy of images {IMAGE_SHAPES}, or a .npz with arrays 'images' and optionally 'labels', "
    "'factors', 'factor_sizes', 'factor_names'"
)
PICKLE_REFUSED = (
    "vaezoo loads arrays with allow_pickle=False, because unpickling a file can run arbitrary code; "
    "save plain numeric arrays (np.save / np.savez of uint8 or float arrays, strings as a numpy "
    "str array)"
)


# --------------------------------------------------------------------------- reading the file


@dataclass
class ArrayFile:
    """The arrays of a ``.npz`` / ``.npy`` file (None: not in the file)."""

    path: Path
    images: np.ndarray
    mapped: bool  # images is a memory map of a .npy
    labels: np.ndarray | None = None
    factors: np.ndarray | None = None
    factor_sizes: np.ndarray | None = None
    factor_names: np.ndarray | None = None


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def file_head(path: Path) -> bytes:
    """The first 6 bytes of ``path`` (enough for the .npy and zip magic numbers); a DataError if unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(len(NPY_MAGIC))
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({type(err).__name__}: {err})") from None


def file_kind(path: Path) -> str:
    """ "npy" or "npz", from the file's first bytes (whatever its suffix); anything else is refused."""
    head = file_head(path)
    if head == NPY_MAGIC:
        return "npy"
    if head.startswith(ZIP_MAGIC):
        return "npz"
    if head[:1] == b"\x80":  # the protocol opcode that starts a pickle (protocol 2 or later)
        raise DataError(f"{path}: is a Python pickle, not a .npy or .npz file; {PICKLE_REFUSED}")
    empty = " (the file is empty)" if not head else ""
    raise DataError(f"{path}: not a .npy or .npz file{empty}; expected {EXPECTED}")


def load_error(where: str, err: Exception) -> DataError:
    """The DataError of an array numpy cannot load: a pickled (object) array says why it is refused."""
    text = str(err)
    if "pickle" in text or "bject" in text:  # "Object arrays cannot be loaded", "Python objects in dtype"
        return DataError(f"{where} holds Python objects (dtype object or a pickle); {PICKLE_REFUSED}")
    return DataError(f"{where}: not a readable array ({type(err).__name__}: {text})")


def map_npy(path: Path) -> np.ndarray:
    """A ``.npy`` file as a read-only memory map (``allow_pickle=False``)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # numpy's parser raises ValueError, OSError, SyntaxError, ...
        raise load_error(str(path), err) from None


def read_npz(path: Path) -> ArrayFile:
    """The known arrays of a ``.npz`` (each loaded whole); unknown ones are named in a warning."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if "images" in names:
                image_key = "images"
            elif len(names) == 1:
                image_key = names[0]
            else:
                found = ", ".join(repr(n) for n in names) or "no arrays"
                raise DataError(f"{path}: has no array 'images' (found {found}); expected {EXPECTED}")
            arrays: dict[str, np.ndarray] = {}
            for key in [image_key, *(k for k in NPZ_KEYS[1:] if k in names)]:
                try:
                    arrays[key] = archive[key]
                except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
                    raise load_error(f"{path}: array '{key}'", err) from None
    except DataError:
        raise
    except Exception as err:  # a damaged zip fails in many ways (BadZipFile, zlib.error, EOFError, ...)
        raise DataError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    ignored = [n for n in names if n not in arrays]
    if ignored:
        warnings.warn(
            f"{path}: ignoring array(s) {', '.join(repr(n) for n in ignored)}; the arrays read are "
            f"{', '.join(repr(k) for k in NPZ_KEYS)}",
            stacklevel=3,
        )
    images = arrays.pop(image_key)
    return ArrayFile(path, images, False, **arrays)


def read_file(path: Path) -> ArrayFile:
    """The arrays of ``data.path``: a ``.npy`` memory-mapped, a ``.npz``'s known arrays loaded."""
    if not path.is_file():
        raise DataError(f"data.path = '{path}' is not a file; expected {EXPECTED}")
    if file_kind(path) == "npz":
        return read_npz(path)
    return ArrayFile(path, map_npy(path), True)


# --------------------------------------------------------------------------- images


def image_layout(shape: tuple[int, ...], where: str) -> str:
    """ "NHW", "NHWC" or "NCHW" of an image array's shape; any other shape is refused."""
    if len(shape) == 3:
        layout = "NHW"
    elif len(shape) == 4:
        last, second = shape[3] in CHANNELS, shape[1] in CHANNELS
        if last and second:
            raise DataError(
                f"{where}: images shaped {shape} read as channels last ({shape[1]}x{shape[2]} pixels, "
                f"{shape[3]} channels) or channels first ({shape[2]}x{shape[3]} pixels, {shape[1]} "
                "channels); save them as (N, H, W, C), e.g. np.moveaxis(images, 1, -1) if they are "
                "(N, C, H, W)"
            )
        if not (last or second):
            raise DataError(
                f"{where}: images shaped {shape} have no channel axis of 1, 3 or 4 (last or second); "
                f"expected {IMAGE_SHAPES}"
            )
        layout = "NHWC" if last else "NCHW"
    else:
        raise DataError(f"{where}: images shaped {shape}; expected {IMAGE_SHAPES}")
    if shape[0] == 0 or 0 in shape:
        raise DataError(f"{where}: images shaped {shape} hold no pixels; expected {IMAGE_SHAPES}")
    return layout


def chunks(array: np.ndarray) -> range:
    """Row starts of chunks of about SCAN_BYTES (a memory map is read a chunk at a time)."""
    row_bytes = max(1, math.prod(array.shape[1:]) * array.dtype.itemsize)
    return range(0, len(array), max(1, SCAN_BYTES // row_bytes))


def value_range(array: np.ndarray, where: str) -> tuple[float, float]:
    """(min, max) of the whole array, read in chunks; a NaN or infinity is refused naming the image."""
    step = chunks(array).step
    low, high = math.inf, -math.inf
    for start in chunks(array):
        block = np.asarray(array[start : start + step])
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            row = start + int(np.flatnonzero(~np.isfinite(block).reshape(len(block), -1).all(axis=1))[0])
            raise DataError(
                f"{where}: image {row} holds a non-finite value (NaN or infinity); "
                "expected float values in [0, 1] or [0, 255]"
            )
        low, high = min(low, float(block.min())), max(high, float(block.max()))
    return low, high


def pixel_scale(images: np.ndarray, where: str) -> float:
    """What the array's values are divided by to lie in [0, 1]: 255 for uint8 and other integers
    (checked to lie in 0..255) and for floats in [0, 255]; 1 for bool and floats in [0, 1].

    A float array's range is detected from its values and said in a warning; floats outside
    [0, 255], or mixed-sign ones, are refused naming the range found."""
    dtype = images.dtype
    if dtype == np.uint8:
        return 255.0
    if dtype.kind == "b":
        return 1.0
    if dtype.kind in "iu":
        low, high = value_range(images, where)
        if low < 0 or high > 255:
            raise DataError(
                f"{where}: {dtype} images hold values {low:g}..{high:g}; expected 0..255 "
                "(or store them as uint8, or as float in [0, 1])"
            )
        return 255.0
    if dtype.kind != "f":
        raise DataError(
            f"{where}: images of dtype {dtype}; expected uint8, another integer type, bool or float"
        )
    low, high = value_range(images, where)
    found = f"(min {low:g}, max {high:g})"
    if low < 0 or high > 255:
        hint = "; for data in [-1, 1] save (images + 1) / 2" if low >= -1 and high <= 1 else ""
        raise DataError(
            f"{where}: float images hold values in [{low:g}, {high:g}]; expected [0, 1] or [0, 255]{hint}"
        )
    if high <= 1:
        warnings.warn(f"{where}: float images {found}: assumed to be in [0, 1]", stacklevel=3)
        return 1.0
    warnings.warn(f"{where}: float images {found}: assumed to be in [0, 255] (divided by 255)", stacklevel=3)
    return 255.0


def check_crop(crop: int | None, height: int, width: int, where: str) -> int:
    """The side of the centre square taken from each image (``data.crop``, default the shorter side)."""
    side = min(height, width) if crop is None else crop
    if not 0 < side <= min(height, width):
        raise DataError(
            f"data.crop = {crop} does not fit the {height}x{width} images of {where}; "
            f"expected at most {min(height, width)} or null"
        )
    return side


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) float with C in 1, 3, 4 -> ``channels`` (1 or 3): alpha dropped, grey repeated,
    RGB to grey by PIL's luma weights."""
    if images.shape[1] == 4:
        images = images[:, :3]
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1)
    weights = torch.tensor(LUMA, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


class ArrayImages:
    """The images of an array, turned into batches: rows -> float (N, channels, size, size).

    ``array`` is indexed by row; ``layout`` says where its channels are ("NHW", "NHWC", "NCHW") and
    ``scale`` what its values are divided by to lie in [0, 1]. Each batch is one gather (sorted
    rows: a memory map is read in file order), a random flip while still uint8, one float conversion,
    the channels, the centre crop and the resize. ``path``: the ``.npy`` the array maps, mapped again
    after pickling (a DataLoader worker) instead of copied.
    """

    def __init__(
        self,
        array: np.ndarray,
        layout: str,
        scale: float,
        image_size: int,
        channels: int,
        crop: int | None = None,
        normalize: str = "unit",
        path: Path | None = None,
    ) -> None:
        self._array: np.ndarray | None = array
        self.layout = layout
        self.scale = scale
        self.image_size = image_size
        self.channels = channels
        self.normalize = normalize
        self.path = path
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        height, width = (self.shape[2], self.shape[3]) if layout == "NCHW" else self.shape[1:3]
        self.height, self.width = int(height), int(width)
        self.crop = check_crop(crop, self.height, self.width, str(path) if path else "the array")

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        if self.path is None:
            return dict(self.__dict__)
        return {**self.__dict__, "_array": None}  # a memory map pickles as a full copy: map it again

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            assert self.path is not None  # only a mapped array is dropped
            array = map_npy(self.path)
            if tuple(array.shape) != self.shape or array.dtype != self.dtype:
                raise DataError(
                    f"{self.path}: now holds {array.dtype} {tuple(array.shape)}, but {self.dtype} "
                    f"{self.shape} when the data were set up; the file changed while in use"
                )
            self._array = array
        return self._array

    def pixels(self, rows: np.ndarray) -> torch.Tensor:
        """(N, C, H, W) of ``rows`` as stored: uint8 and bool kept, anything else float32."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        block = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        block[order] = self.array[rows[order]]
        if block.dtype not in (np.uint8, np.bool_):
            block = block.astype(np.float32)  # also native byte order: torch takes no big-endian arrays
        pixels = torch.from_numpy(block)
        if self.layout == "NHW":
            return pixels.unsqueeze(1)
        return pixels.permute(0, 3, 1, 2) if self.layout == "NHWC" else pixels

    def images(self, rows: np.ndarray, flip: bool = False) -> torch.Tensor:
        """Float (N, channels, size, size) of ``rows`` in the range of ``normalize``."""
        pixels = self.pixels(rows)
        if flip:
            pixels = random_hflip_batch(pixels)
        if pixels.dtype == torch.uint8:
            images = uint8_to_float(pixels)
        else:
            images = pixels.float()
            if self.scale != 1:
                images = images.div_(self.scale)
        images = convert_channels(images, self.channels)
        top, left = (self.height - self.crop) // 2, (self.width - self.crop) // 2
        images = images[:, :, top : top + self.crop, left : left + self.crop]
        if self.crop != self.image_size:
            size = (self.image_size, self.image_size)
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
        return scale_unit(images.clamp(0.0, 1.0).contiguous(), self.normalize)


class ArrayDataset(SplitDataset):
    """Rows of an ``ArrayImages``: ``(image, label)``, built a whole batch at a time.

    ``labels`` has one entry per row of the array (int64 class indices or float32 vectors)."""

    def __init__(self, images: ArrayImages, rows: np.ndarray, labels: torch.Tensor, flip: bool = False):
        if len(labels) != len(images):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.source = images
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = labels
        self.flip = flip

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        return self.source.images(rows, self.flip), self.labels[torch.from_numpy(rows)]

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        return Batch(*self.batch(positions))

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.batch([position])
        return images[0], labels[0]

    def without_augmentation(self) -> ArrayDataset:
        return ArrayDataset(self.source, self.rows, self.labels, flip=False)


# --------------------------------------------------------------------------- labels


def read_labels(
    labels: np.ndarray, count: int, where: str
) -> tuple[torch.Tensor, tuple[int, ...], int | None]:
    """(labels, label_shape, num_classes) of a ``labels`` array: int (N,) class indices or (N, K)
    vectors (float32)."""
    where = f"{where}: array 'labels'"
    expected = "int class indices (N,) or float vectors (N, K)"
    if labels.dtype.kind not in "biuf" or labels.ndim not in (1, 2):
        raise DataError(f"{where} is {labels.dtype} {labels.shape}; expected {expected}")
    if len(labels) != count:
        raise DataError(f"{where} holds {len(labels)} labels for {count} images; expected one per image")
    if labels.ndim == 2:
        if labels.shape[1] == 0 or (labels.dtype.kind == "f" and not np.isfinite(labels).all()):
            raise DataError(
                f"{where} is {labels.dtype} {labels.shape}: empty or not finite; expected {expected}"
            )
        return torch.from_numpy(labels.astype(np.float32)), (labels.shape[1],), None
    if labels.dtype.kind == "f":
        raise DataError(
            f"{where} is float {labels.shape}; expected {expected}: save labels.astype(int) for class "
            "indices, or labels[:, None] for one value per image"
        )
    if count and labels.min() < 0:
        raise DataError(f"{where} holds class index {labels.min()}; expected indices 0, 1, 2, ...")
    num_classes = int(labels.max(initial=0)) + 1
    return torch.from_numpy(labels.astype(np.int64)), (), num_classes


# --------------------------------------------------------------------------- factors


@dataclass
class Factors:
    """Validated factor classes of every image, with the grid they lie on."""

    classes: np.ndarray  # (N, F) int64
    sizes: tuple[int, ...]
    names: tuple[str, ...]


def read_factors(file: ArrayFile, count: int) -> Factors | None:
    """The ``factors`` / ``factor_sizes`` / ``factor_names`` of a file, checked; None without any."""
    where = str(file.path)
    given = {
        key: value
        for key, value in (
            ("factors", file.factors),
            ("factor_sizes", file.factor_sizes),
            ("factor_names", file.factor_names),
        )
        if value is not None
    }
    if not given:
        return None
    if file.factors is None:
        raise DataError(
            f"{where}: has {' and '.join(repr(k) for k in given)} but no 'factors'; expected 'factors' "
            "(N, F) int classes of every image with them"
        )
    factors = file.factors
    if factors.dtype.kind not in "iu" or factors.ndim != 2 or factors.shape[1] == 0:
        raise DataError(
            f"{where}: array 'factors' is {factors.dtype} {factors.shape}; expected (N, F) int class indices"
        )
    if len(factors) != count:
        raise DataError(
            f"{where}: array 'factors' has {len(factors)} rows for {count} images; expected one per image"
        )
    num = factors.shape[1]
    if file.factor_sizes is None:
        largest = (factors.max(axis=0).astype(np.int64) + 1).tolist() if count else [0] * num
        raise DataError(
            f"{where}: has 'factors' but no 'factor_sizes'; expected 'factor_sizes' ({num},) ints, the "
            f"number of classes of each factor (here at least {largest})"
        )
    sizes = file.factor_sizes
    if sizes.dtype.kind not in "iu" or sizes.shape != (num,) or (sizes < 1).any():
        raise DataError(
            f"{where}: array 'factor_sizes' is {sizes.dtype} {sizes.shape} {sizes.tolist()}; expected "
            f"({num},) positive ints, one per column of 'factors'"
        )
    names = tuple(f"factor_{k}" for k in range(num))
    if file.factor_names is not None:
        raw = file.factor_names
        if raw.dtype.kind not in "US" or raw.shape != (num,):
            raise DataError(
                f"{where}: array 'factor_names' is {raw.dtype} {raw.shape}; expected ({num},) strings "
                "(a numpy str array, e.g. np.array(['shape', 'scale']))"
            )
        names = tuple(str(n.decode() if isinstance(n, bytes) else n) for n in raw.tolist())
        if len(set(names)) != num:
            raise DataError(
                f"{where}: array 'factor_names' {list(names)} repeats a name; expected {num} distinct names"
            )
    classes = factors.astype(np.int64)
    for column, (name, size) in enumerate(zip(names, sizes.tolist(), strict=True)):
        bad = (classes[:, column] < 0) | (classes[:, column] >= size)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where}: factor '{name}' (column {column}) is {classes[row, column]} at image {row}; "
                f"expected 0..{size - 1} (factor_sizes[{column}] = {size})"
            )
    return Factors(classes, tuple(int(s) for s in sizes.tolist()), names)


def grid_rows(factors: Factors, where: str) -> np.ndarray | str:
    """The first image of each combination of the factor grid (C order of ``sizes``), or why there
    is none: how many combinations have no image, and the first of them. Nothing grid-sized is
    allocated (factor_sizes may promise far more combinations than there are images)."""
    cells = math.prod(factors.sizes)
    grid = f"the {' x '.join(map(str, factors.sizes))} grid of factor_sizes {list(factors.sizes)}"
    if cells >= 2**62:  # beyond an int64 flat index: the images cannot cover it
        present = len(np.unique(factors.classes, axis=0))
        return f"{where}: the {len(factors.classes)} images cover {present} of the {cells} combinations of {grid}"
    flat = np.ravel_multi_index(tuple(factors.classes.T), factors.sizes)
    found, first = np.unique(flat, return_index=True)  # sorted flat indices, first row of each
    if len(found) == cells:
        return first.astype(np.int64)
    gaps = np.flatnonzero(found != np.arange(len(found)))
    missing = int(gaps[0]) if len(gaps) else len(found)  # the smallest flat index with no image
    example = dict(
        zip(factors.names, (int(c) for c in np.unravel_index(missing, factors.sizes)), strict=True)
    )
    return (
        f"{where}: the {len(factors.classes)} images cover {len(found)} of the {cells} combinations of "
        f"{grid}: {cells - len(found)} have no image, e.g. {example}"
    )


class ArrayGroundTruth:
    """The factor interface of an array whose factors form a complete grid (as ``DSpritesGroundTruth``):
    ``factor_names``, ``factor_sizes``, ``factor_classes``, ``sample_factors``, ``images_from_factors``.

    Indices are rows of the array; a combination held by several images shows the first of them.
    """

    def __init__(self, images: ArrayImages, factors: Factors, cell_rows: np.ndarray) -> None:
        self.images = images
        self.factors = factors.classes
        self.factor_names = factors.names
        self.factor_sizes = factors.sizes
        self.cell_rows = cell_rows  # grid cell (C order) -> row

    def factor_classes(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """(N, F) int64 factor classes of rows of the array."""
        return self.factors[np.asarray(indices, dtype=np.int64)]

    def sample_factors(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` factor class tuples drawn uniformly and independently per factor, (n, F) int64."""
        rng = np.random.default_rng(rng)
        return rng.integers(0, self.factor_sizes, size=(n, len(self.factor_sizes)), dtype=np.int64)

    def rows_of(self, classes: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """The row showing each of (N, F) factor classes."""
        array = np.asarray(classes)
        sizes = np.array(self.factor_sizes)
        if array.ndim != 2 or array.shape[1] != len(sizes) or not np.issubdtype(array.dtype, np.integer):
            raise DataError(
                f"factor classes must be an integer array shaped (N, {len(sizes)}) over "
                f"{self.factor_names}, got {array.dtype} {array.shape}"
            )
        bad = (array < 0) | (array >= sizes)
        if bad.any():
            row, column = (int(i[0]) for i in np.nonzero(bad))
            raise DataError(
                f"factor '{self.factor_names[column]}' class {array[row, column]} is outside "
                f"0..{sizes[column] - 1}"
            )
        return self.cell_rows[np.ravel_multi_index(tuple(array.T.astype(np.int64)), self.factor_sizes)]

    def images_from_factors(self, classes: np.ndarray) -> torch.Tensor:
        """Images of (N, F) factor classes, float (N, C, size, size), as the dataset returns them."""
        return self.images.images(self.rows_of(classes))


# --------------------------------------------------------------------------- the builder


def array_images(config: DataConfig, array: np.ndarray, where: str, path: Path | None = None) -> ArrayImages:
    """An image array as batches, its layout and value range checked: the channels are
    ``data.channels``, else grey for one stored channel and RGB otherwise. ``path``: the ``.npy``
    the array maps (see :class:`ArrayImages`)."""
    layout = image_layout(tuple(array.shape), where)
    scale = pixel_scale(array, where)
    stored = array.shape[1] if layout == "NCHW" else (array.shape[3] if layout == "NHWC" else 1)
    channels = config.channels or (1 if stored == 1 else 3)
    return ArrayImages(array, layout, scale, config.image_size, channels, config.crop, config.normalize, path)


def array_splits(
    config: DataConfig,
    images: ArrayImages,
    labels: tuple[torch.Tensor, tuple[int, ...], int | None],
    where: str,
    ground_truth: ArrayGroundTruth | None = None,
) -> DataSplits:
    """The seeded train/val splits (test = val) of ``images`` with their ``(labels, label_shape,
    num_classes)``; training images flipped with ``data.flip``."""
    label_tensor, label_shape, num_classes = labels
    train, val = split_indices(config, len(images), where)
    val_set = ArrayDataset(images, val, label_tensor)
    return DataSplits(
        ArrayDataset(images, train, label_tensor, flip=bool(config.flip)),
        val_set,
        val_set,
        images.channels,
        label_shape,
        ground_truth=ground_truth,
        num_classes=num_classes,
    )


def build_arrays(config: DataConfig) -> DataSplits:
    """Train/val splits of the images of a ``.npz`` / ``.npy`` file; test = val."""
    path = require_path(config, EXPECTED)
    file = read_file(path)
    where = str(path)
    images = array_images(config, file.images, where, path if file.mapped else None)
    count = len(images)
    factors = read_factors(file, count)
    if file.labels is not None:
        labels = read_labels(file.labels, count, where)
    elif factors is not None:
        labels = (torch.from_numpy(factors.classes.astype(np.float32)), (len(factors.sizes),), None)
    else:
        labels = (torch.zeros(count, dtype=torch.int64), (), 1)
    ground_truth = None
    if factors is not None:
        rows = grid_rows(factors, where)
        if isinstance(rows, str):
            warnings.warn(
                f"{rows}; the disentanglement metrics need an image of every combination, so this data "
                "has no ground truth (add the missing images, or make factor_sizes match the classes used)",
                stacklevel=2,
            )
        else:
            ground_truth = ArrayGroundTruth(images, factors, rows)
    return array_splits(config, images, labels, where, ground_truth)
