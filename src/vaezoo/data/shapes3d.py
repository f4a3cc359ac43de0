"""Shapes3D (Burgess & Kim 2018, "3D Shapes Dataset"; used in Kim & Mnih 2018): ``shapes3d``.

``data.path`` is ``3dshapes.h5`` (or the folder holding it), an HDF5 file with datasets ``images``
(480000, 64, 64, 3) uint8 and ``labels`` (480000, 6) float: every combination of floor_hue 10,
wall_hue 10, object_hue 10, scale 8, shape 4 and orientation 15, once, in row-major order (the
last factor fastest), as the dataset's README describes. The factor sizes are read from the labels
(the number of distinct values of each column) and the order is checked: each label column must
equal its factor's value at every row of the grid. Reading it needs h5py (``pip install
'vaezoo[shapes3d]'``).

An ``images`` dataset stored contiguously and uncompressed is read where it lies, never copied; a
chunked or compressed one is converted once into a uint8 cache (a block of rows at a time). Labels are the factor values of the file (float32, as dSprites');
``VAEDataModule.ground_truth`` has the factor classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vaezoo.config import DataConfig
from vaezoo.data.common import DataSplits, require_path
from vaezoo.data.errors import DataError
from vaezoo.data.grids import (
    FileRows,
    block_rows,
    cached_rows,
    grid_classes,
    grid_ground_truth,
    grid_splits,
    image_source,
    row_blocks,
)

FILE_NAME = "3dshapes.h5"
FACTOR_NAMES: tuple[str, ...] = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES: tuple[int, ...] = (10, 10, 10, 8, 4, 15)
NUM_IMAGES = 480_000
EXPECTED = (
    f"{FILE_NAME}, an HDF5 file with datasets 'images' ({NUM_IMAGES}, 64, 64, 3) uint8 and 'labels' "
    f"({NUM_IMAGES}, 6) float"
)
INSTALL = "pip install 'vaezoo[shapes3d]' (or pip install h5py)"


def import_h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise DataError(
            f"data.name = 'shapes3d' reads the HDF5 file {FILE_NAME} with h5py, which is not installed: "
            f"{INSTALL}"
        ) from None
    return h5py


def find_file(config: DataConfig) -> Path:
    path = require_path(config, EXPECTED)
    if path.is_dir():
        if not (path / FILE_NAME).is_file():
            raise DataError(f"{path / FILE_NAME}: file is missing; expected {EXPECTED}")
        path = path / FILE_NAME
    return path


def check_labels(labels: np.ndarray, path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """(factor sizes, classes) of the label columns; labels off the row-major grid are refused."""
    sizes = tuple(len(np.unique(labels[:, k])) for k in range(labels.shape[1]))
    count = int(np.prod(sizes, dtype=np.int64))
    if count != len(labels):
        raise DataError(
            f"{path}: its labels take {', '.join(map(str, sizes))} distinct values per factor "
            f"({' x '.join(map(str, sizes))} = {count} combinations) for {len(labels)} images; expected "
            f"every combination once (the published file: {' x '.join(map(str, FACTOR_SIZES))} = {NUM_IMAGES})"
        )
    classes = grid_classes(sizes)
    strides = count // np.cumprod(sizes)  # the row of class c of factor k, every other factor at 0
    for k, name in enumerate(FACTOR_NAMES):
        values = labels[strides[k] * np.arange(sizes[k]), k]
        bad = np.flatnonzero(labels[:, k] != values[classes[:, k]])
        if len(bad):
            raise DataError(
                f"{path}: labels are not in row-major grid order ({', '.join(FACTOR_NAMES)}, the last "
                f"fastest): {name} is {labels[bad[0], k]:g} at image {bad[0]}, {values[classes[bad[0], k]]:g} "
                "in the grid"
            )
    return sizes, classes


def read_images(config: DataConfig, path: Path, dataset: Any) -> FileRows:
    """The images where they lie (contiguous, uncompressed), else converted into the uint8 cache."""
    shape = tuple(int(n) for n in dataset.shape)
    offset = dataset.id.get_offset() if dataset.chunks is None and not dataset.compression else None
    what = "dataset 'images'"
    if offset is not None:
        return FileRows(path, offset, shape, np.dtype(np.uint8), what)
    step = block_rows(int(np.prod(shape[1:])))

    def blocks():  # called while the file is open
        for start, stop in row_blocks(shape[0], step):
            yield dataset[start:stop]

    return cached_rows(config, [path], shape, blocks, f"{path}: {what}")


def build_shapes3d(config: DataConfig) -> DataSplits:
    """Seeded train/val splits of Shapes3D (no official split: test = val)."""
    h5py = import_h5py()
    path = find_file(config)
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err}); expected {EXPECTED}") from None
    with file:
        missing = [key for key in ("images", "labels") if not isinstance(file.get(key), h5py.Dataset)]
        if missing:
            found = ", ".join(repr(k) for k in file.keys()) or "nothing"
            raise DataError(
                f"{path}: has no dataset {' or '.join(repr(k) for k in missing)} (found {found}); "
                f"expected {EXPECTED}"
            )
        images, labels = file["images"], file["labels"]
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8 or images.shape[0] == 0:
            raise DataError(f"{path}: dataset 'images' is {images.dtype} {images.shape}; expected {EXPECTED}")
        if labels.shape != (images.shape[0], len(FACTOR_NAMES)) or labels.dtype.kind not in "fiu":
            raise DataError(
                f"{path}: dataset 'labels' is {labels.dtype} {labels.shape} for {images.shape[0]} images; "
                f"expected {EXPECTED}"
            )
        try:
            values = np.asarray(labels[()])
            rows = read_images(config, path, images)
        except OSError as err:
            raise DataError(f"{path}: cannot read the HDF5 file ({err}); expected {EXPECTED}") from None
    sizes, classes = check_labels(values, path)
    source = image_source(rows, "NHWC", config, config.channels or 3)
    ground_truth = grid_ground_truth(source, FACTOR_NAMES, sizes, classes)
    return grid_splits(config, source, values, ground_truth, str(path))
