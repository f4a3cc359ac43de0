"""The data package: datasets, transforms and the Lightning data module.

``VAEDataModule(config.data, batch_size)`` picks the dataset named by ``data.name`` (one of
``DATASETS``). Labels: dSprites -> float32 (5,) factor values; CelebA -> float32 (40,) attributes
in {0, 1}; image_folder / mnist / fashion_mnist / cifar10 / cifar100 (fine label) -> int64 class
index; arrays (a user's .npz / .npy) -> its ``labels`` (int64 class index or float32 vectors),
else its ``factors`` as float32 vectors, else class 0; shapes3d -> float32 (6,) factor values;
mpi3d (7,), smallnorb (5,: category, instance, elevation, azimuth, lighting), cars3d (3,) ->
float32 factor classes; vectors (a user's .npy / .csv of (N, D) numbers, batches (N, D)) ->
``data.label_column`` as class indices or float32 (N, 1), else class 0. Ground-truth factors
(``VAEDataModule.ground_truth``): dSprites (``DSpritesGroundTruth``), arrays whose factors form a
complete grid (``ArrayGroundTruth``), and the published grids Shapes3D, MPI3D, Cars3D
(``ArrayGroundTruth``) and SmallNORB (category, elevation, azimuth, lighting; the instance drawn at
random, as disentanglement_lib).

Every bad file, path or setting raises a ``DataError`` naming it (also from inside a DataLoader
worker: the worker's traceback is dropped, its message kept). An unreadable image file (CelebA,
image folders) is a ``BadImageFile``; with ``data.bad_files: skip`` it is left out instead, warned
about once, and counted in ``VAEDataModule.skipped_files``. docs/errors.md lists every case.
"""

from vaezoo.data.arrays import ArrayDataset, ArrayGroundTruth
from vaezoo.data.datamodule import DATASETS, VAEDataModule
from vaezoo.data.dsprites import (
    FACTOR_NAMES,
    FACTOR_SIZES,
    FACTOR_VALUES,
    NUM_IMAGES,
    DSpritesDataset,
    DSpritesGroundTruth,
    classes_to_index,
    factor_values,
    index_to_classes,
    render_dsprites,
)
from vaezoo.data.errors import BadImageFile, DataError, SkippedFileWarning

__all__ = [
    "DATASETS",
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "FACTOR_VALUES",
    "NUM_IMAGES",
    "ArrayDataset",
    "ArrayGroundTruth",
    "BadImageFile",
    "DSpritesDataset",
    "DSpritesGroundTruth",
    "DataError",
    "SkippedFileWarning",
    "VAEDataModule",
    "classes_to_index",
    "factor_values",
    "index_to_classes",
    "render_dsprites",
]
