"""The data package: datasets, transforms and the Lightning data module.

``VAEDataModule(config.data, batch_size)`` picks the dataset named by ``data.name`` (one of
``DATASETS``). Labels: dSprites -> float32 (5,) factor values; CelebA -> float32 (40,) attributes
in {0, 1}; image_folder / mnist / fashion_mnist -> int64 class index.
"""

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
from vaezoo.data.errors import DataError

__all__ = [
    "DATASETS",
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "FACTOR_VALUES",
    "NUM_IMAGES",
    "DSpritesDataset",
    "DSpritesGroundTruth",
    "DataError",
    "VAEDataModule",
    "classes_to_index",
    "factor_values",
    "index_to_classes",
    "render_dsprites",
]
