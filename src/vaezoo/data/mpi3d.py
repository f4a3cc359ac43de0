"""MPI3D (Gondal et al. 2019, "On the Transfer of Inductive Bias from Simulation to the Real World:
a New Disentanglement Dataset"): ``mpi3d``.

``data.path`` is one of the published files ``mpi3d_toy.npz``, ``mpi3d_realistic.npz`` or
``mpi3d_real.npz``, each with one array ``images`` (1036800, 64, 64, 3) uint8: every combination
of object_color 6, object_shape 6, object_size 2, camera_height 3, background_color 3,
horizontal_axis 40 and vertical_axis 40, once, in row-major order (the dataset's README:
``images.reshape([6, 6, 2, 3, 3, 40, 40, 64, 64, 3])``). An optional array ``factor_sizes`` (7,)
declares a smaller grid in the same order (a subset you cut yourself, or a test file); either way
the sizes must multiply to the number of images.

An ``images`` member stored without compression (``np.savez``) is read inside the archive,
never copied; a compressed one (``np.savez_compressed``) is converted once into a uint8 cache. Labels are the factor classes (float32 vectors).
"""

from __future__ import annotations

import math
import struct
import zipfile
from pathlib import Path

import numpy as np

from vaezoo.config import DataConfig
from vaezoo.data.cache import parse_npy_header
from vaezoo.data.common import DataSplits, require_path
from vaezoo.data.errors import DataError
from vaezoo.data.grids import (
    FileRows,
    block_rows,
    cached_rows,
    check_file,
    grid_ground_truth,
    grid_splits,
    image_source,
    npz_blocks,
    reading_zip,
)

FACTOR_NAMES: tuple[str, ...] = (
    "object_color",
    "object_shape",
    "object_size",
    "camera_height",
    "background_color",
    "horizontal_axis",
    "vertical_axis",
)
FACTOR_SIZES: tuple[int, ...] = (6, 6, 2, 3, 3, 40, 40)
NUM_IMAGES = 1_036_800
EXPECTED = (
    f"mpi3d_toy.npz, mpi3d_realistic.npz or mpi3d_real.npz with an array 'images' ({NUM_IMAGES}, 64, 64, 3) "
    "uint8, and optionally 'factor_sizes' (7,) for a smaller grid"
)
LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local file header (APPNOTE 4.3.7)


def read_sizes(path: Path, members: list[str]) -> tuple[int, ...]:
    """The declared ``factor_sizes``, else the published ones."""
    if "factor_sizes.npy" not in members:
        return FACTOR_SIZES
    with reading_zip(path, EXPECTED), np.load(path, allow_pickle=False) as archive:
        sizes = archive["factor_sizes"]
    if sizes.dtype.kind not in "iu" or sizes.shape != (len(FACTOR_NAMES),) or (sizes < 1).any():
        raise DataError(
            f"{path}: array 'factor_sizes' is {sizes.dtype} {sizes.shape} {sizes.tolist()}; expected "
            f"({len(FACTOR_NAMES)},) positive ints, the classes of {', '.join(FACTOR_NAMES)}"
        )
    return tuple(int(s) for s in sizes.tolist())


def stored_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where the values of an uncompressed ``.npy`` member start in the archive file."""
    with open(path, "rb") as file:
        file.seek(info.header_offset)
        header = file.read(LOCAL_HEADER.size)
        if len(header) != LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise DataError(f"{path}: the zip entry of 'images' is damaged; expected {EXPECTED}")
        fields = LOCAL_HEADER.unpack(header)
        file.seek(info.header_offset + LOCAL_HEADER.size + fields[-2] + fields[-1])  # name, extra
        parse_npy_header(file, f"{path}: array 'images'")
        return file.tell()


def build_mpi3d(config: DataConfig) -> DataSplits:
    """Seeded train/val splits of MPI3D (no official split: test = val)."""
    path = check_file(require_path(config, EXPECTED), EXPECTED)
    with reading_zip(path, EXPECTED), zipfile.ZipFile(path) as archive:
        members = archive.namelist()
        if "images.npy" not in members:
            found = ", ".join(repr(m.removesuffix(".npy")) for m in members) or "no arrays"
            raise DataError(f"{path}: has no array 'images' (found {found}); expected {EXPECTED}")
        info = archive.getinfo("images.npy")
        with archive.open(info) as stream:
            shape, dtype = parse_npy_header(stream, f"{path}: array 'images'")
    if len(shape) != 4 or shape[3] != 3 or dtype != np.uint8 or shape[0] == 0:
        raise DataError(f"{path}: array 'images' is {dtype} {shape}; expected {EXPECTED}")
    sizes = read_sizes(path, members)
    count = math.prod(sizes)
    if count != shape[0]:
        raise DataError(
            f"{path}: array 'images' holds {shape[0]} images, but the factor grid "
            f"{' x '.join(map(str, sizes))} has {count} combinations; expected one image per combination "
            f"in row-major order ({', '.join(FACTOR_NAMES)}; declare a smaller grid with an array "
            "'factor_sizes')"
        )
    what = "array 'images'"
    if info.compress_type == zipfile.ZIP_STORED:
        rows = FileRows(path, stored_offset(path, info), shape, dtype, what)
    else:
        step = block_rows(int(np.prod(shape[1:])))
        rows = cached_rows(
            config, [path], shape, lambda: npz_blocks(path, "images", step, EXPECTED), f"{path}: {what}"
        )
    source = image_source(rows, "NHWC", config, config.channels or 3)
    ground_truth = grid_ground_truth(source, FACTOR_NAMES, sizes)
    return grid_splits(config, source, ground_truth.factors, ground_truth, str(path))
