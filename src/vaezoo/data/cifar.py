"""CIFAR-10 and CIFAR-100, binary version: ``cifar10`` and ``cifar100`` (never downloaded).

``data.path`` is the folder the binary archive extracts to, or the folder holding it:
``cifar-10-batches-bin`` (``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin``; records of
1 label byte + 3072 pixel bytes) or ``cifar-100-binary`` (``train.bin``, ``test.bin``; records of 2
label bytes, coarse then fine, + 3072; the fine label is used). The pixels of a record are the red,
green and blue 32x32 planes, row by row. Train = the train batches, val = test = the test batch
(``data.subset`` shrinks both in proportion). Labels are class indices (int64); images are RGB
(``data.channels: 1`` makes them grey), centre-cropped by ``data.crop`` if set and resized to
``data.image_size``; training images are flipped unless ``data.flip: false``.

The pickled "python version" (``cifar-10-batches-py``, ``cifar-100-python``) is refused: unpickling
a file can run arbitrary code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaezoo.config import DataConfig
from vaezoo.data.arrays import ArrayDataset, ArrayImages
from vaezoo.data.common import DataSplits, proportional_subsets, require_path
from vaezoo.data.errors import DataError

PIXEL_BYTES = 3 * 32 * 32
DOWNLOADS = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarSpec:
    """The files of one binary CIFAR release."""

    title: str
    folder: str  # what the binary archive extracts to
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_names: tuple[str, ...]  # the label bytes of a record, in order; the last one is used
    label_counts: tuple[int, ...]  # how many classes each label byte has
    archive: str
    python_folder: str  # what the pickled "python version" extracts to
    python_files: tuple[str, ...]

    @property
    def record_bytes(self) -> int:
        return len(self.label_names) + PIXEL_BYTES

    @property
    def num_classes(self) -> int:
        return self.label_counts[-1]

    def layout(self) -> str:
        labels = " + ".join(f"1 {name} byte" for name in self.label_names)
        return (
            f"the {self.title} binary version: a folder {self.folder} holding "
            f"{', '.join(self.train + self.test)} (records of {labels} + {PIXEL_BYTES} pixel bytes)"
        )


SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-bin",
        train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        test=("test_batch.bin",),
        label_names=("label",),
        label_counts=(10,),
        archive="cifar-10-binary.tar.gz",
        python_folder="cifar-10-batches-py",
        python_files=("data_batch_1", "test_batch", "batches.meta"),
    ),
    "cifar100": CifarSpec(
        title="CIFAR-100",
        folder="cifar-100-binary",
        train=("train.bin",),
        test=("test.bin",),
        label_names=("coarse label", "fine label"),
        label_counts=(20, 100),
        archive="cifar-100-binary.tar.gz",
        python_folder="cifar-100-python",
        python_files=("train", "test", "meta"),
    ),
}


def python_version_error(where: Path, spec: CifarSpec) -> DataError:
    return DataError(
        f'{where}: this is the {spec.title} "python version" (pickled batches); vaezoo does not read '
        "it, because unpickling a file can run arbitrary code. Download the binary version instead "
        f'({spec.archive}, "{spec.title} binary version (suitable for C programs)" on {DOWNLOADS}), '
        f"extract it and point data.path at its {spec.folder} folder"
    )


def is_python_version(path: Path, spec: CifarSpec) -> bool:
    """Whether ``path`` is (or holds) the pickled release: its folder, or one of its batch files."""
    if path.is_file():
        return path.name in spec.python_files
    if path.name == spec.python_folder or (path / spec.python_folder).is_dir():
        return True
    return any((path / name).is_file() for name in spec.python_files)


def find_folder(config: DataConfig, spec: CifarSpec) -> Path:
    """The folder holding the binary batches: ``data.path`` or its ``spec.folder`` subfolder."""
    path = require_path(config, spec.layout())
    if is_python_version(path, spec) and path.is_file():
        raise python_version_error(path, spec)
    if path.is_file():
        extract = (
            f"; extract it first (tar xzf {path.name})" if path.name.endswith((".tar.gz", ".tgz")) else ""
        )
        raise DataError(f"data.path = '{path}' is a file{extract}; expected {spec.layout()}")
    for folder in (path, path / spec.folder):
        if (folder / spec.train[0]).is_file():
            for name in spec.train + spec.test:
                if not (folder / name).is_file():
                    raise DataError(f"{folder / name}: file is missing; expected {spec.layout()}")
            return folder
    if is_python_version(path, spec):
        raise python_version_error(path, spec)
    folder = path / spec.folder if (path / spec.folder).is_dir() else path
    for name, other in SPECS.items():
        if other is not spec and (folder / other.train[0]).is_file():
            raise DataError(
                f"{folder}: holds {other.title} ({other.train[0]}), not {spec.title}; "
                f"use data.name {name}, or point data.path at {spec.layout()}"
            )
    raise DataError(f"{folder / spec.train[0]}: file is missing; expected {spec.layout()}")


def read_batch(path: Path, spec: CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) of one binary batch file."""
    record = spec.record_bytes
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({type(err).__name__}: {err})") from None
    if len(data) == 0 or len(data) % record:
        others = [
            o for o in SPECS.values() if o is not spec and len(data) and len(data) % o.record_bytes == 0
        ]
        hint = f" (its size fits {others[0].title}'s {others[0].record_bytes}-byte records)" if others else ""
        raise DataError(
            f"{path}: {len(data)} bytes is not a whole number of {spec.title} records of {record} bytes"
            f"{hint}; the file is truncated or not a {spec.title} binary batch; expected {spec.layout()}"
        )
    records = data.reshape(-1, record)
    for column, (name, count) in enumerate(zip(spec.label_names, spec.label_counts, strict=True)):
        bad = np.flatnonzero(records[:, column] >= count)
        if len(bad):
            raise DataError(
                f"{path}: record {bad[0]} has {name} {records[bad[0], column]}; {spec.title} {name}s are "
                f"0..{count - 1} (not a {spec.title} binary batch?)"
            )
    labels = records[:, len(spec.label_names) - 1].astype(np.int64)
    return records[:, len(spec.label_names) :].reshape(-1, 3, 32, 32), labels


def read_split(folder: Path, names: tuple[str, ...], spec: CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_batch(folder / name, spec) for name in names]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def build_cifar(config: DataConfig) -> DataSplits:
    """Train on the train batches, validate and test on the test batch (``data.name`` picks the release)."""
    spec = SPECS[config.name]
    folder = find_folder(config, spec)
    train_images, train_labels = read_split(folder, spec.train, spec)
    test_images, test_labels = read_split(folder, spec.test, spec)
    keep_train, keep_test = proportional_subsets(config, [len(train_images), len(test_images)], str(folder))
    channels = config.channels or 3
    flip = True if config.flip is None else config.flip

    def dataset(images: np.ndarray, labels: np.ndarray, keep: np.ndarray, train: bool) -> ArrayDataset:
        # The kept records only, contiguous: the file's buffer is freed (data.subset keeps memory small).
        source = ArrayImages(
            np.ascontiguousarray(images[keep]), "NCHW", 255.0, config.image_size, channels, config.crop,
            config.normalize,
        )  # fmt: skip
        rows = np.arange(len(keep))
        return ArrayDataset(source, rows, torch.from_numpy(labels[keep]), flip=flip and train)

    test = dataset(test_images, test_labels, keep_test, False)
    train = dataset(train_images, train_labels, keep_train, True)
    return DataSplits(train, test, test, channels, (), num_classes=spec.num_classes)
