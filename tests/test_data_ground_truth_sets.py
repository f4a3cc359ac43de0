"""``shapes3d``, ``mpi3d``, ``smallnorb`` and ``cars3d``: small files of each published format, written
by the tests, whose every image shows its own factor classes (so the factor <-> image mapping can be
read back), through the data module, the ground truth of the metrics, and each error message.

Shapes3D needs h5py (``pip install 'vaezoo[shapes3d]'``, part of the ``test`` extra): without it
its tests skip saying so, and fail under ``CI=true``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import require_package
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vaezoo.config import DataConfig
from vaezoo.data import DataError, VAEDataModule
from vaezoo.data.grids import FileRows
from vaezoo.evaluation.disentanglement import compute_disentanglement

SIDE = 8  # the images of every test file are 8x8
STEP = 30  # pixel row k of an image shows factor k as STEP * class


def grid(sizes: tuple[int, ...]) -> np.ndarray:
    """Every combination of ``sizes`` in row-major order, (prod, F) int64."""
    return np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=-1).astype(np.int64)


def factor_pixels(classes: np.ndarray, channels: int = 3) -> np.ndarray:
    """uint8 (N, 8, 8, C) images whose pixel row k is STEP * classes[:, k] (C = 0: (N, 8, 8))."""
    images = np.zeros((len(classes), SIDE, SIDE), dtype=np.uint8)
    images[:, : classes.shape[1], :] = (STEP * classes)[:, :, None]
    return images if channels == 0 else np.repeat(images[..., None], channels, axis=-1)


def read_back(images: torch.Tensor, count: int) -> np.ndarray:
    """The factor classes an image of ``factor_pixels`` shows, from float images in [0, 1]."""
    return (images[:, 0, :count, 0].numpy() * 255 / STEP).round().astype(np.int64)


def module(name: str, path: Path, **overrides: Any) -> VAEDataModule:
    config = DataConfig(name=name, path=str(path), **{"image_size": SIDE, "val_fraction": 0.25, **overrides})
    datamodule = VAEDataModule(config, batch_size=4)
    datamodule.setup()
    return datamodule


def whole(datamodule: VAEDataModule, split: str = "train") -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(rows, images, labels) of a whole split."""
    dataset = getattr(datamodule.splits, split).without_augmentation()
    images, labels = dataset.__getitems__(list(range(len(dataset))))
    return dataset.rows, images, labels


def check_ground_truth(datamodule: VAEDataModule, names: tuple[str, ...], sizes: tuple[int, ...]) -> None:
    """The factor interface: names, sizes, sampling, and images that show the factors asked for."""
    gt = datamodule.ground_truth
    assert tuple(gt.factor_names) == names and tuple(gt.factor_sizes) == sizes
    sampled = gt.sample_factors(300, np.random.default_rng(0))
    assert sampled.shape == (300, len(sizes)) and sampled.dtype == np.int64
    assert (sampled.min(axis=0) == 0).all() and (sampled.max(axis=0) == np.array(sizes) - 1).all()
    images = gt.images_from_factors(sampled)
    assert images.shape == (300, datamodule.channels, SIDE, SIDE)
    return images, sampled


def cut(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


# --------------------------------------------------------------------------- Shapes3D

SHAPES_SIZES = (2, 3, 2, 2, 2, 3)  # a 144-image grid in the published order
SHAPES_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")


def require_h5py(env: Mapping[str, str] = os.environ) -> Any:
    """h5py, or a skip (a failure under ``CI=true``) saying how to install it."""
    return require_package("h5py", "shapes3d", env)


def shapes_values(classes: np.ndarray) -> np.ndarray:
    """Float labels as the published file's: hues in [0, 1), scale 0.75.., shape 0.., orientation -30.."""
    offsets = np.array([0.0, 0.0, 0.0, 0.75, 0.0, -30.0])
    steps = np.array([0.1, 0.1, 0.1, 1 / 14, 1.0, 60 / 14])
    return offsets + steps * classes


def write_shapes3d(path: Path, sizes: tuple[int, ...] = SHAPES_SIZES, chunked: bool = False, **extra) -> Path:
    h5py = require_h5py()
    classes = grid(sizes)
    arrays = {"images": factor_pixels(classes), "labels": shapes_values(classes), **extra}
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            if value is not None:
                options = (
                    {"chunks": (5, SIDE, SIDE, 3), "compression": "gzip"}
                    if chunked and key == "images"
                    else {}
                )
                file.create_dataset(key, data=value, **options)
    return path


@pytest.mark.parametrize("chunked", [False, True])
def test_shapes3d_grid_labels_and_ground_truth(tmp_path: Path, chunked: bool):
    path = write_shapes3d(tmp_path / "3dshapes.h5", chunked=chunked)
    dm = module("shapes3d", tmp_path, cache_dir=str(tmp_path / "cache"))  # the folder holding the file
    assert (dm.num_train + dm.num_val, dm.channels, dm.label_shape) == (144, 3, (6,))
    rows, images, labels = whole(dm)
    classes = grid(SHAPES_SIZES)
    assert np.array_equal(read_back(images, 6), classes[rows])
    assert torch.allclose(labels, torch.from_numpy(shapes_values(classes[rows])).float())
    images, sampled = check_ground_truth(dm, SHAPES_NAMES, SHAPES_SIZES)
    assert np.array_equal(read_back(images, 6), sampled)
    assert np.array_equal(dm.ground_truth.factor_classes(rows), classes[rows])
    # A contiguous dataset is read where it lies; a chunked, compressed one goes to the cache.
    source = dm.splits.train.source.array
    assert isinstance(source, FileRows) and (source.path == path) != chunked
    assert (tmp_path / "cache").is_dir() == chunked


def test_shapes3d_errors_name_the_file(tmp_path: Path, monkeypatch):
    require_h5py()
    path = tmp_path / "3dshapes.h5"
    write_shapes3d(path, labels=None)
    with pytest.raises(
        DataError, match=r"3dshapes\.h5: has no dataset 'labels' \(found 'images'\); expected 3dshapes\.h5"
    ):
        module("shapes3d", path)
    write_shapes3d(path, images=np.zeros((144, 8, 8), np.uint8))
    with pytest.raises(
        DataError, match=r"dataset 'images' is uint8 \(144, 8, 8\); expected 3dshapes\.h5, an HDF5 file"
    ):
        module("shapes3d", path)
    labels = shapes_values(grid(SHAPES_SIZES))
    swapped = labels.copy()
    swapped[[0, 1]] = labels[[1, 0]]
    write_shapes3d(path, labels=swapped)
    with pytest.raises(
        DataError,
        match=r"labels are not in row-major grid order \(floor_hue, .*, orientation, the last fastest\): "
        r"orientation is -30 at image 3, -25\.7143 in the grid",
    ):
        module("shapes3d", path)
    extra_value = labels.copy()
    extra_value[5, 0] = 0.55
    write_shapes3d(path, labels=extra_value)
    with pytest.raises(
        DataError,
        match=r"its labels take 3, 3, 2, 2, 2, 3 distinct values per factor \(3 x 3 x 2 x 2 x 2 x 3 = 216 "
        r"combinations\) for 144 images; expected every combination once \(the published file: 10 x 10",
    ):
        module("shapes3d", path)
    write_shapes3d(path, sizes=(2, 3, 2, 2, 2, 3), labels=labels[:, :5])
    with pytest.raises(DataError, match=r"dataset 'labels' is float64 \(144, 5\) for 144 images"):
        module("shapes3d", path)
    write_shapes3d(path)
    cut(path, 4000)
    with pytest.raises(
        DataError, match=r"3dshapes\.h5: not a readable HDF5 file \(.*truncated file: eof = 4000"
    ):
        module("shapes3d", path)
    path.write_text("not an HDF5 file")
    with pytest.raises(
        DataError, match=r"3dshapes\.h5: not a readable HDF5 file \(.*\); expected 3dshapes\.h5"
    ):
        module("shapes3d", path)
    with pytest.raises(DataError, match=r"nowhere/3dshapes\.h5: file is missing"):
        (tmp_path / "nowhere").mkdir()
        module("shapes3d", tmp_path / "nowhere")
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if not installed
    with pytest.raises(
        DataError, match=r"with h5py, which is not installed: pip install 'vaezoo\[shapes3d\]'"
    ):
        module("shapes3d", path)


def test_missing_h5py_skips_or_fails_on_ci(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(pytest.skip.Exception, match=r"pip install 'vaezoo\[shapes3d\]'"):
        require_h5py({})
    with pytest.raises(pytest.fail.Exception, match=r"h5py is not installed"):
        require_h5py({"CI": "true"})


# --------------------------------------------------------------------------- MPI3D

MPI_SIZES = (2, 2, 2, 2, 2, 2, 3)  # 192 images
MPI_NAMES = (
    "object_color", "object_shape", "object_size", "camera_height", "background_color",
    "horizontal_axis", "vertical_axis",
)  # fmt: skip


def write_mpi3d(path: Path, sizes: tuple[int, ...] = MPI_SIZES, compressed: bool = False, **extra) -> Path:
    arrays = {"images": factor_pixels(grid(sizes)), "factor_sizes": np.array(sizes), **extra}
    save = np.savez_compressed if compressed else np.savez
    save(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_mpi3d_grid_and_ground_truth(tmp_path: Path, compressed: bool):
    path = write_mpi3d(tmp_path / "mpi3d_toy.npz", compressed=compressed)
    dm = module("mpi3d", path, cache_dir=str(tmp_path / "cache"))
    assert (dm.num_train + dm.num_val, dm.channels, dm.label_shape) == (192, 3, (7,))
    rows, images, labels = whole(dm, "val")
    classes = grid(MPI_SIZES)
    assert np.array_equal(read_back(images, 7), classes[rows])
    assert torch.equal(labels, torch.from_numpy(classes[rows]).float())  # the labels are the classes
    images, sampled = check_ground_truth(dm, MPI_NAMES, MPI_SIZES)
    assert np.array_equal(read_back(images, 7), sampled)
    source = dm.splits.train.source.array  # stored: read inside the archive; compressed: cached
    assert (source.path == path) != compressed and (tmp_path / "cache").is_dir() == compressed


def test_mpi3d_is_read_by_dataloader_workers(tmp_path: Path):
    dm = module("mpi3d", write_mpi3d(tmp_path / "mpi3d_real.npz"), num_workers=1, channels=1)
    batches = list(dm.val_dataloader())
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert images.shape[1] == 1 and np.array_equal(read_back(images, 7), labels.numpy().astype(np.int64))


def test_mpi3d_errors_name_the_file(tmp_path: Path):
    path = tmp_path / "mpi3d_toy.npz"
    write_mpi3d(path, factor_sizes=None)
    with pytest.raises(
        DataError,
        match=r"mpi3d_toy\.npz: array 'images' holds 192 images, but the factor grid 6 x 6 x 2 x 3 x 3 x 40 x 40 "
        r"has 1036800 combinations; expected one image per combination in row-major order",
    ):
        module("mpi3d", path)
    np.savez(path, imgs=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(
        DataError, match=r"mpi3d_toy\.npz: has no array 'images' \(found 'imgs'\); expected mpi3d_toy"
    ):
        module("mpi3d", path)
    write_mpi3d(path, images=np.zeros((192, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"array 'images' is uint8 \(192, 8, 8\); expected mpi3d_toy\.npz"):
        module("mpi3d", path)
    write_mpi3d(path, factor_sizes=np.array([2, 2, 2, 2, 2, 2]))
    with pytest.raises(
        DataError, match=r"array 'factor_sizes' is int64 \(6,\) \[2, 2, 2, 2, 2, 2\]; expected \(7,\)"
    ):
        module("mpi3d", path)
    write_mpi3d(path)
    cut(path, 2000)
    with pytest.raises(DataError, match=r"mpi3d_toy\.npz: not a readable \.npz file \(BadZipFile"):
        module("mpi3d", path)
    with pytest.raises(DataError, match=r"data\.path = '.*' is not a file; expected mpi3d_toy\.npz"):
        module("mpi3d", tmp_path)


def test_mpi3d_member_cut_inside_the_archive_is_named(tmp_path: Path):
    """A stored member whose bytes run past the end of the file (a damaged archive whose directory
    survived) is refused before it is read."""
    path = write_mpi3d(tmp_path / "mpi3d_toy.npz")
    rows = FileRows(path, 0, (10, 8, 8, 3), np.dtype(np.uint8), "array 'images'")
    assert len(rows) == 10
    with pytest.raises(
        DataError,
        match=r"truncated: array 'images' uint8 \(1000, 8, 8, 3\) needs 192000 bytes, the file has 37442",
    ):
        FileRows(path, 0, (1000, 8, 8, 3), np.dtype(np.uint8), "array 'images'")


# --------------------------------------------------------------------------- SmallNORB

NORB_SPLITS = ("5x46789x9x18x6x2x96x96-training", "5x01235x9x18x6x2x96x96-testing")
NORB_MAGIC = {np.uint8: 0x1E3D4C55, np.int32: 0x1E3D4C54}
NORB_SIZES = (2, 2, 2, 3, 2)  # category, instance (one per file), elevation, azimuth, lighting: 48


def norb_matrix(values: np.ndarray) -> bytes:
    """The SmallNORB binary matrix of ``values``: magic, ndim, max(3, ndim) sizes, the values."""
    dims = list(values.shape) + [1] * (3 - values.ndim)
    head = struct.pack(f"<ii{len(dims)}i", NORB_MAGIC[values.dtype.type], values.ndim, *dims)
    return head + values.astype(values.dtype.newbyteorder("<")).tobytes()


def write_smallnorb(folder: Path, gz: bool = False) -> np.ndarray:
    """Both files of a 48-image grid, shuffled; the second view is white. Returns the classes
    (category, instance, elevation, azimuth, lighting) in file order, training then testing."""
    folder.mkdir(parents=True, exist_ok=True)
    everything = grid(NORB_SIZES)
    parts = []
    for split, instance in zip(NORB_SPLITS, (1, 0), strict=True):  # instances split by file
        classes = everything[everything[:, 1] == instance]
        classes = classes[np.random.default_rng(instance).permutation(len(classes))]
        views = np.stack(
            [factor_pixels(classes, channels=0), np.full((len(classes), SIDE, SIDE), 255, np.uint8)], 1
        )
        info = np.column_stack([classes[:, 1], classes[:, 2], 2 * classes[:, 3], classes[:, 4]])
        for kind, values in (("dat", views), ("cat", classes[:, 0]), ("info", info)):
            data = norb_matrix(values.astype(np.uint8 if kind == "dat" else np.int32))
            name = folder / f"smallnorb-{split}-{kind}.mat"
            if gz:
                name.with_name(name.name + ".gz").write_bytes(gzip.compress(data))
            else:
                name.write_bytes(data)
        parts.append(classes)
    return np.concatenate(parts)


@pytest.mark.parametrize("gz", [False, True])
def test_smallnorb_both_files_first_view_and_random_instance(tmp_path: Path, gz: bool):
    classes = write_smallnorb(tmp_path / "norb", gz=gz)
    dm = module("smallnorb", tmp_path / "norb")
    assert (dm.num_train + dm.num_val, dm.channels, dm.label_shape) == (48, 1, (5,))
    rows, images, labels = whole(dm)
    assert np.array_equal(read_back(images, 5), classes[rows])  # the first view, azimuth halved
    assert torch.equal(labels, torch.from_numpy(classes[rows]).float())
    names = ("category", "elevation", "azimuth", "lighting")
    images, sampled = check_ground_truth(dm, names, (2, 2, 3, 2))
    shown = read_back(images, 5)
    assert np.array_equal(shown[:, [0, 2, 3, 4]], sampled)
    assert set(shown[:, 1]) == {0, 1}  # the instance is drawn at random
    fixed = dm.ground_truth.sample_factors_matching(2, np.full(50, 1), np.random.default_rng(0))
    assert (fixed[:, 2] == 1).all() and len(np.unique(fixed, axis=0)) > 1  # (also: no memoized codes)
    assert np.array_equal(dm.ground_truth.factor_classes(rows), classes[rows][:, [0, 2, 3, 4]])


def test_smallnorb_errors_name_the_file(tmp_path: Path):
    folder = tmp_path / "norb"
    write_smallnorb(folder)
    dat = folder / f"smallnorb-{NORB_SPLITS[1]}-dat.mat"
    good = dat.read_bytes()
    cut(dat, len(good) - 100)
    with pytest.raises(
        DataError,
        match=r"testing-dat\.mat: truncated: image pairs 0\.\.23 needs 3072 bytes, the file has 2972 left",
    ):
        module("smallnorb", folder)
    dat.write_bytes(good + b"\0")
    with pytest.raises(
        DataError, match=r"testing-dat\.mat: holds more bytes than its header \(24, 2, 8, 8\) says"
    ):
        module("smallnorb", folder)
    dat.write_bytes(struct.pack("<i", 0x0803) + good[4:])
    with pytest.raises(
        DataError, match=r"testing-dat\.mat: bad magic number 0x00000803; expected a SmallNORB binary matrix"
    ):
        module("smallnorb", folder)
    dat.write_bytes(norb_matrix(np.zeros((24, 8, 8), np.uint8)))
    with pytest.raises(
        DataError, match=r"testing-dat\.mat: holds uint8 \(24, 8, 8\); expected uint8 \(N, 2, H, W\)"
    ):
        module("smallnorb", folder)
    dat.write_bytes(good)
    info = folder / f"smallnorb-{NORB_SPLITS[0]}-info.mat"
    info.write_bytes(norb_matrix(np.zeros((20, 4), np.int32)))
    with pytest.raises(
        DataError,
        match=r"the 5x46789x9x18x6x2x96x96-training files hold 24 image pairs, 24 categories and 20 info rows",
    ):
        module("smallnorb", folder)
    info.write_bytes(norb_matrix(np.zeros((24, 4), np.int32)))
    with pytest.raises(
        DataError,
        match=r"norb: 48 images for the 24 combinations of the 2 x 1 x 2 x 3 x 2 grid .*: some combinations repeat",
    ):
        module("smallnorb", folder)
    info.write_bytes(norb_matrix(np.column_stack([np.ones(24), np.zeros((24, 3))]).astype(np.int32)))
    with pytest.raises(
        DataError,
        match=r"norb: the 48 images cover 26 of the 48 combinations of the 2 x 2 x 2 x 3 x 2 grid .*: 22 have no image",
    ):
        module("smallnorb", folder)
    info.unlink()
    with pytest.raises(
        DataError, match=r"training-info\.mat: file is missing \(also looked for \.gz\); expected a folder"
    ):
        module("smallnorb", folder)
    write_smallnorb(tmp_path / "gz", gz=True)
    cut(tmp_path / "gz" / f"smallnorb-{NORB_SPLITS[0]}-cat.mat.gz", 30)
    with pytest.raises(DataError, match=r"training-cat\.mat\.gz: cannot read the file \(EOFError"):
        module("smallnorb", tmp_path / "gz")


# --------------------------------------------------------------------------- Cars3D


def write_cars3d(folder: Path, count: int = 3, **variables) -> None:
    """``count`` files of 8x8 cars; channel 0 shows the elevation, 1 the azimuth, 2 the object."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    elevation, azimuth = np.meshgrid(np.arange(4), np.arange(24))  # (24, 4) each, [azimuth, elevation]
    for car in range(count):
        im = np.zeros((SIDE, SIDE, 3, 24, 4), dtype=np.uint8)
        im[:, :, 0] = 60 * elevation
        im[:, :, 1] = 10 * azimuth
        im[:, :, 2] = 80 * car
        savemat(folder / f"car_{car + 1:03d}_mesh.mat", {"im": im, **variables})


def test_cars3d_factors_and_ground_truth(tmp_path: Path):
    write_cars3d(tmp_path / "cars")
    (tmp_path / "cars" / "notes.txt").write_text("other files are ignored")
    dm = module("cars3d", tmp_path / "cars", cache_dir=str(tmp_path / "cache"))
    assert (dm.num_train + dm.num_val, dm.channels, dm.label_shape) == (288, 3, (3,))

    def shown(images: torch.Tensor) -> np.ndarray:
        return (images[:, :, 0, 0].numpy() * 255 / np.array([60, 10, 80])).round().astype(np.int64)

    rows, images, labels = whole(dm)
    assert np.array_equal(shown(images), labels.numpy().astype(np.int64))
    assert np.array_equal(dm.ground_truth.factor_classes(rows), labels.numpy().astype(np.int64))
    images, sampled = check_ground_truth(dm, ("elevation", "azimuth", "object"), (4, 24, 3))
    assert np.array_equal(shown(images), sampled)
    (cache,) = (tmp_path / "cache").glob("*.npy")
    stamp = cache.stat().st_mtime_ns
    module("cars3d", tmp_path / "cars", cache_dir=str(tmp_path / "cache"))  # the cache is used again
    assert cache.stat().st_mtime_ns == stamp
    expected = whole(dm)[1]
    cut(cache, 5000)  # cut short while in use: a DataError when read, never a crash
    with pytest.raises(DataError, match=r"u8\.npy: truncated at row \d+; expected 288 rows"):
        whole(dm)
    again = module("cars3d", tmp_path / "cars", cache_dir=str(tmp_path / "cache"))  # built again
    assert torch.equal(whole(again)[1], expected) and cache.stat().st_size > 5000
    (tmp_path / "a_file").write_text("")
    with pytest.raises(
        DataError, match=r"a_file/cache: cannot write the uint8 cache of .* there .*set data\.cache_dir"
    ):
        module("cars3d", tmp_path / "cars", cache_dir=str(tmp_path / "a_file" / "cache"))


def test_cars3d_errors_name_the_file(tmp_path: Path):
    from scipy.io import savemat

    folder = tmp_path / "cars"
    folder.mkdir()
    with pytest.raises(
        DataError, match=r"cars: no car_\*_mesh\.mat files found; expected a folder of the Cars3D files"
    ):
        module("cars3d", folder)
    write_cars3d(folder, count=2)
    savemat(folder / "car_003_mesh.mat", {"images": np.zeros((2, 2), np.uint8)})
    with pytest.raises(DataError, match=r"car_003_mesh\.mat: has no variable 'im' \(found 'images'\)"):
        module("cars3d", folder)
    savemat(folder / "car_003_mesh.mat", {"im": np.zeros((8, 8, 3, 24, 2), np.uint8)})
    with pytest.raises(
        DataError, match=r"car_003_mesh\.mat: variable 'im' is uint8 \(8, 8, 3, 24, 2\); expected"
    ):
        module("cars3d", folder)
    savemat(folder / "car_003_mesh.mat", {"im": np.zeros((4, 4, 3, 24, 4), np.uint8)})
    with pytest.raises(
        DataError,
        match=r"car_003_mesh\.mat: variable 'im' is \(4, 4, 3, 24, 4\), but \(8, 8, 3, 24, 4\) in car_001",
    ):
        module("cars3d", folder)
    write_cars3d(folder, count=3)
    cut(folder / "car_002_mesh.mat", 300)
    with pytest.raises(DataError, match=r"car_002_mesh\.mat: not a readable MATLAB file \("):
        module("cars3d", folder, cache_dir=str(tmp_path / "cache"))
    assert not list((tmp_path / "cache").glob("*.npy")) and not list((tmp_path / "cache").glob(".*.tmp"))


# --------------------------------------------------------------------------- the metrics apply


@pytest.mark.parametrize("name", ["mpi3d", "smallnorb", "cars3d"])
def test_the_disentanglement_metrics_apply(tmp_path: Path, name: str):
    if name == "mpi3d":
        dm, count = module("mpi3d", write_mpi3d(tmp_path / "mpi3d_toy.npz")), 7
    elif name == "smallnorb":
        write_smallnorb(tmp_path / "norb")
        dm, count = module("smallnorb", tmp_path / "norb"), 5
    else:
        write_cars3d(tmp_path / "cars")
        dm, count = module("cars3d", tmp_path / "cars"), 0
    keep = [k for k, size in enumerate(dm.ground_truth.factor_sizes) if size > 1]

    def code(images: torch.Tensor) -> np.ndarray:  # a perfectly disentangled code of the factors shown
        pixels = images[:, 0, :count, 0] if count else images[:, :, 0, 0]
        if name == "smallnorb":
            pixels = pixels[:, [0, 2, 3, 4]]
        noise = np.random.default_rng(0).normal(0, 1e-3, pixels.shape)
        return pixels.double().numpy() + noise

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = compute_disentanglement(dm.ground_truth, code, ["mig"], num_train=300, num_eval=100)
    assert scores["mig"] > 0.8, (scores, keep)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_and_evaluate_on_mpi3d(tmp_path: Path, monkeypatch):
    from helpers import TINY_RUN

    from vaezoo.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    data = write_mpi3d(tmp_path / "mpi3d_toy.npz", sizes=(2, 2, 2, 2, 2, 3, 5))  # 480 images
    run = tmp_path / "run"
    argv = ["train", "-c", "configs/vae.yaml", *TINY_RUN, "--data.name", "mpi3d", "--data.path", str(data)]
    assert main([*argv, "--data.cache_dir", str(tmp_path / "cache"), "--run-dir", str(run)]) == 0
    report = tmp_path / "report"
    evaluate = ["evaluate", str(run), "-o", str(report), "--metrics", "disentanglement", "--no-progress"]
    assert main([*evaluate, "--disentanglement-metrics", "mig", "--disentanglement-points", "200"]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert 0 <= metrics["metrics"]["disentanglement"]["mig"] <= 1 and not metrics["not_applicable"], metrics


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=80), kind=st.sampled_from(["dat", "cat", "info"]))
@example(data=struct.pack("<iii", 0x1E3D4C54, 1, 2**31 - 1), kind="cat")  # a size no file holds
@example(data=struct.pack("<ii", 0x1E3D4C55, -3), kind="dat")
def test_random_bytes_in_a_smallnorb_file_are_a_data_error(data: bytes, kind: str):
    from vaezoo.data.smallnorb import dat_shape, first_views, read_matrix

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"smallnorb-x-{kind}.mat"
        path.write_bytes(data)
        with pytest.raises(DataError, match=re.escape(str(path))):
            if kind == "dat":
                dat_shape(path)
                list(first_views(path))
            else:
                read_matrix(path, kind)


def test_the_published_grids_multiply_to_the_published_counts():
    from vaezoo.data import cars3d, mpi3d, shapes3d

    assert np.prod(shapes3d.FACTOR_SIZES) == shapes3d.NUM_IMAGES == 480_000
    assert np.prod(mpi3d.FACTOR_SIZES) == mpi3d.NUM_IMAGES == 1_036_800
    assert cars3d.ELEVATIONS * cars3d.AZIMUTHS * cars3d.NUM_OBJECTS == 17_568
    assert 5 * 10 * 9 * 18 * 6 == 2 * 24_300  # SmallNORB: both files, every combination once
