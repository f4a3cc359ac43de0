"""Images handed over in Python (``vaezoo.fit``): a tensor, a numpy array, a torch Dataset or a
DataLoader, with or without labels; ``data.name: in_memory`` in the run's config. An (N, D) array
(or items of shape (D,)) is read as vectors instead, as ``data.name: vectors`` reads a .npy.

Whatever the form, the images are gathered once into one array and read as ``arrays`` reads a
``.npy`` (:mod:`vaezoo.data.arrays`): the same layouts ((N, H, W), (N, H, W, C), (N, C, H, W)), value
ranges (uint8, or floats in [0, 1] or [0, 255]), channel conversion, crop and resize to
``data.image_size``, the same seeded train/val split and the same errors. Items of a Dataset (and
batches of a DataLoader) are an image alone or a tuple / list whose first two entries are the image
and its label; labels are class indices or vectors, as in ``arrays``. A DataLoader is read once, in
its own order (it may be a stream); its batch size is not used: ``train.batch_size`` is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from vaezoo.config import DataConfig
from vaezoo.data.arrays import array_images, array_splits, read_labels
from vaezoo.data.common import DataSplits
from vaezoo.data.errors import DataError
from vaezoo.data.vectors import vector_splits

NAME = "in_memory"
WHERE = "the images given to vaezoo.fit"
ACCEPTED = "a tensor or numpy array of images, a torch Dataset, or a DataLoader"


def as_array(value: Any, where: str) -> np.ndarray:
    """A tensor, an array or a PIL image as a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except Exception as err:  # an object numpy cannot read as numbers
        raise DataError(f"{where}: cannot read {type(value).__name__} as an array ({err})") from None
    if array.dtype == object:
        raise DataError(f"{where}: a {type(value).__name__} that is not numeric; expected {ACCEPTED}")
    return array


def split_item(item: Any) -> tuple[Any, Any]:
    """(image, label or None) of one Dataset item or DataLoader batch."""
    if isinstance(item, (tuple, list)):
        if not item:
            raise DataError(f"{WHERE}: an empty item; expected an image or (image, label)")
        return item[0], item[1] if len(item) > 1 else None
    if isinstance(item, dict):
        raise DataError(
            f"{WHERE}: items are dicts (keys {sorted(item)[:5]}); expected an image or (image, label): "
            "wrap the dataset so that it returns those"
        )
    return item, None


def gather(parts: Iterable[Any], batched: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The images and labels of Dataset items (``batched=False``) or DataLoader batches, stacked."""
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for index, item in enumerate(parts):
        where = f"{WHERE}, {'batch' if batched else 'item'} {index}"
        image, label = split_item(item)
        images.append(as_array(image, where))
        if label is not None:
            labels.append(as_array(label, where))
        elif labels:
            raise DataError(f"{where} has no label, but earlier ones have")
        if labels and len(labels) != len(images):
            raise DataError(f"{where} has a label, but earlier ones have none")
        if images[-1].shape[batched:] != images[0].shape[batched:]:
            raise DataError(
                f"{where}: an image of shape {images[-1].shape[batched:]}, but the first is "
                f"{images[0].shape[batched:]}; all images must have one shape"
            )
    if not images:
        raise DataError(f"{WHERE}: no images (the dataset or loader is empty)")
    join = np.concatenate if batched else np.stack
    return join(images), join(labels) if labels else None


def collect(data: Any, labels: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, labels) of whatever ``vaezoo.fit`` was given."""
    if isinstance(data, DataLoader):
        if labels is not None:
            raise DataError("labels= goes with a tensor or an array; a DataLoader's batches carry their own")
        return gather(data, batched=True)
    if isinstance(data, IterableDataset):
        raise DataError(
            f"{WHERE}: an IterableDataset has no length or index; pass it in a DataLoader "
            "(read once, in its order) or pass a map-style Dataset"
        )
    if isinstance(data, Dataset) and not isinstance(data, (torch.Tensor, np.ndarray)):
        if labels is not None:
            raise DataError("labels= goes with a tensor or an array; a Dataset's items carry their own")
        if not hasattr(data, "__len__"):
            raise DataError(f"{WHERE}: the Dataset has no __len__; expected {ACCEPTED}")
        return gather((data[i] for i in range(len(data))), batched=False)
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return as_array(data, WHERE), None if labels is None else as_array(
            labels, "labels given to vaezoo.fit"
        )
    raise DataError(f"{WHERE}: a {type(data).__name__}; expected {ACCEPTED}")


def in_memory_splits(config: DataConfig, images: np.ndarray, labels: np.ndarray | None) -> DataSplits:
    """Train/val splits (test = val) of an array of images, as ``arrays`` makes them of a file; of
    an (N, D) array of vectors, as ``vectors`` makes them of a .npy."""
    if images.ndim == 2:
        return vector_splits_of(config, images, labels)
    source = array_images(config, images, WHERE)
    return array_splits(config, source, given_labels(labels, len(source)), WHERE)


def given_labels(labels: np.ndarray | None, count: int) -> tuple[torch.Tensor, tuple[int, ...], int | None]:
    """(labels, label_shape, num_classes) of the labels given, as ``arrays`` reads them; class 0 without."""
    if labels is None:
        return torch.zeros(count, dtype=torch.int64), (), 1
    if labels.ndim == 2 and labels.shape[1] == 1 and labels.dtype.kind in "iu":
        labels = labels[:, 0]  # a column of class indices
    return read_labels(labels, count, "vaezoo.fit")


def vector_splits_of(config: DataConfig, values: np.ndarray, labels: np.ndarray | None) -> DataSplits:
    """An (N, D) array of numbers as vectors (models with ``architecture: mlp``)."""
    where = f"{WHERE} (vectors, shape {values.shape})"
    if values.dtype.kind not in "biuf":
        raise DataError(f"{where}: dtype {values.dtype}; expected numbers")
    finite = np.isfinite(values)
    if not finite.all():
        row, column = (int(i[0]) for i in np.nonzero(~finite))
        raise DataError(
            f"{where}: the value at [{row}, {column}] is {values[row, column]}; expected finite numbers"
        )
    return vector_splits(config, values.astype(np.float64), given_labels(labels, len(values)), where)


def build_in_memory(config: DataConfig) -> DataSplits:
    """What ``data.name: in_memory`` says when the images are not at hand: where they came from."""
    raise DataError(
        f"data.name = '{NAME}': this run was trained on images given to vaezoo.fit in Python, which are "
        "not saved with it; give the data again: vaezoo.fit(..., resume=RUN_DIR) to continue it, or "
        "--data DIR / --data.name NAME --data.path PATH to evaluate or reconstruct it"
    )
