"""Cars3D (Reed, Zhang, Zhang & Lee 2015, "Deep Visual Analogy-Making"): ``cars3d``.

``data.path`` is the folder of the published MATLAB files ``car_*_mesh.mat`` (183 of them), each
with a variable ``im`` of shape (128, 128, 3, 24, 4) uint8: one car rendered at 24 azimuths x 4
elevations. As disentanglement_lib, the factors are elevation 4, azimuth 24 and object (one class
per file, in the order of the sorted file names). The files are read with ``scipy.io.loadmat`` and
converted once into a uint8 cache (a file at a time). Labels are the factor classes (float32).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vaezoo.config import DataConfig
from vaezoo.data.arrays import ArrayGroundTruth, Factors, grid_rows
from vaezoo.data.common import DataSplits, require_path
from vaezoo.data.errors import DataError
from vaezoo.data.grids import cached_rows, grid_splits, image_source

PATTERN = "car_*_mesh.mat"
FACTOR_NAMES: tuple[str, ...] = ("elevation", "azimuth", "object")
AZIMUTHS, ELEVATIONS = 24, 4
NUM_OBJECTS = 183
LAYOUT = (
    f"a folder of the Cars3D files {PATTERN} ({NUM_OBJECTS} as published), each with a variable 'im' "
    f"(128, 128, 3, {AZIMUTHS}, {ELEVATIONS}) uint8"
)


def mat_error(path: Path, err: Exception) -> DataError:
    return DataError(f"{path}: not a readable MATLAB file ({type(err).__name__}: {err}); expected {LAYOUT}")


def image_shape(path: Path) -> tuple[int, ...]:
    """The shape of ``im`` from the file's variable headers (nothing is decompressed)."""
    from scipy.io import whosmat

    try:
        variables = {name: (tuple(shape), kind) for name, shape, kind in whosmat(path)}
    except Exception as err:  # scipy raises ValueError, MatReadError, TypeError, ... for a bad file
        raise mat_error(path, err) from None
    if "im" not in variables:
        found = ", ".join(repr(n) for n in variables) or "no variables"
        raise DataError(f"{path}: has no variable 'im' (found {found}); expected {LAYOUT}")
    shape, kind = variables["im"]
    if len(shape) != 5 or shape[2:] != (3, AZIMUTHS, ELEVATIONS) or kind != "uint8" or 0 in shape:
        raise DataError(f"{path}: variable 'im' is {kind} {shape}; expected {LAYOUT}")
    return shape


def read_car(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """One car's (96, H, W, 3) images, row e * 24 + a for elevation e and azimuth a."""
    from scipy.io import loadmat

    try:
        image = loadmat(path, variable_names=["im"])["im"]
    except Exception as err:  # see image_shape
        raise mat_error(path, err) from None
    if image.shape != shape or image.dtype != np.uint8:
        raise DataError(f"{path}: variable 'im' is {image.dtype} {image.shape}; expected uint8 {shape}")
    # (H, W, 3, azimuth, elevation) -> (elevation, azimuth, H, W, 3)
    return np.moveaxis(image, (4, 3), (0, 1)).reshape(ELEVATIONS * AZIMUTHS, *shape[:3])


def build_cars3d(config: DataConfig) -> DataSplits:
    """Seeded train/val splits of Cars3D (no official split: test = val)."""
    folder = require_path(config, LAYOUT)
    if not folder.is_dir():
        raise DataError(f"data.path = '{folder}' is not a folder; expected {LAYOUT}")
    files = sorted(folder.glob(PATTERN))
    if not files:
        raise DataError(f"{folder}: no {PATTERN} files found; expected {LAYOUT}")
    shapes = {path: image_shape(path) for path in files}
    if len(set(shapes.values())) != 1:
        first, other = files[0], next(p for p in files if shapes[p] != shapes[files[0]])
        raise DataError(
            f"{other}: variable 'im' is {shapes[other]}, but {shapes[first]} in {first.name}; expected "
            "every car's images of one size"
        )
    shape = shapes[files[0]]
    per_car = ELEVATIONS * AZIMUTHS

    def blocks() -> Iterator[np.ndarray]:
        for path in files:
            yield read_car(path, shape)

    rows = cached_rows(config, files, (len(files) * per_car, *shape[:3]), blocks, f"{folder}: {PATTERN}")
    row = np.arange(len(rows))  # row = object * 96 + elevation * 24 + azimuth
    classes = np.stack([row % per_car // AZIMUTHS, row % AZIMUTHS, row // per_car], axis=1)
    factors = Factors(classes, (ELEVATIONS, AZIMUTHS, len(files)), FACTOR_NAMES)
    cells = grid_rows(factors, str(folder))
    assert not isinstance(cells, str)  # every combination, by construction
    source = image_source(rows, "NHWC", config, config.channels or 3)
    return grid_splits(config, source, classes, ArrayGroundTruth(source, factors, cells), str(folder))
