"""CelebA from a local folder (never downloaded), with its official train/valid/test split.

Expected layout, at ``data.path`` or at ``data.path/celeba`` (PyTorch-VAE's ``Data/celeba``)::

    img_align_celeba/000001.jpg ...
    list_eval_partition.txt   lines "000001.jpg 0" (0 train, 1 valid, 2 test)
    list_attr_celeba.txt      line 1: the image count; line 2: 40 attribute names;
                              then "000001.jpg -1 1 ..." (40 values of -1 or 1)

Images are centre-cropped (``data.crop``, default 148) and resized to ``data.image_size``; training
images are flipped left-right at random (``data.flip``, default on). Labels are the 40 attributes as
float32 0/1. The images of all three splits are decoded once into one uint8 cache (under
``data.cache_dir``).

PyTorch-VAE reads the same files: its ``dataset.py`` opens torchvision's ``CelebA(data_path)``, whose
layout is ``data_path/celeba/img_align_celeba/*.jpg`` plus the list files, so its ``data_path`` is a
valid ``data.path`` as it stands (the identity, bounding-box and landmark lists torchvision also
reads are not needed here). Its transforms map one to one:

    RandomHorizontalFlip      data.flip: true (training images only; PyTorch-VAE flips its
                              validation images too). It flips before the crop, vaezoo after the
                              resize: with the crop's equal margins the pixels are the same
    CenterCrop(148)           data.crop: 148 (on the 178x218 aligned images: the same pixels)
    Resize(patch_size)        data.image_size: patch_size (PIL bilinear resize, as torchvision's on
                              PIL images)
    ToTensor                  data.normalize: unit, pixels in [0, 1] (its 2020 layout then applied
                              2x - 1: data.normalize: symmetric)

One difference remains: PyTorch-VAE validates on the official test split (2), vaezoo on the
official validation split (1); the test split is kept apart as ``splits.test``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vaezoo.config import DataConfig
from vaezoo.data.cache import image_source
from vaezoo.data.common import DataSplits, FileImageDataset, proportional_subsets, require_path
from vaezoo.data.errors import DataError
from vaezoo.data.transforms import ImagePipeline

IMAGE_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
ATTR_FILE = "list_attr_celeba.txt"
NUM_ATTRIBUTES = 40
DEFAULT_CROP = 148
LAYOUT = (
    f"a folder holding {IMAGE_DIR}/*.jpg, {PARTITION_FILE} and {ATTR_FILE} "
    "(data.path may also be its parent, containing celeba/)"
)


def find_root(path: Path) -> Path:
    """The CelebA folder: ``path`` itself or ``path/celeba``; the error names what is missing."""
    for root in (path, path / "celeba"):
        if (root / IMAGE_DIR).is_dir():
            break
    else:
        raise DataError(
            f"data.path = '{path}': no {IMAGE_DIR}/ folder in it or in {path / 'celeba'}; expected {LAYOUT}"
        )
    for name in (PARTITION_FILE, ATTR_FILE):
        if not (root / name).is_file():
            raise DataError(f"{root / name}: file is missing; expected {LAYOUT}")
    return root


def image_dir(root: Path) -> Path:
    """``img_align_celeba``, or the doubly nested copy some archives unpack to."""
    nested = root / IMAGE_DIR / IMAGE_DIR
    return nested if nested.is_dir() else root / IMAGE_DIR


def read_partition(path: Path) -> dict[str, int]:
    """``list_eval_partition.txt`` -> {file name: 0 train | 1 valid | 2 test}."""
    split: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataError(f"{path}, line {number}: expected '<image>.jpg <0|1|2>', got {line!r}")
        split[fields[0]] = int(fields[1])
    if not split:
        raise DataError(f"{path}: no images listed; expected lines '000001.jpg 0'")
    return split


def read_attributes(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """``list_attr_celeba.txt`` -> (40 attribute names, {file name: float32 0/1 vector})."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DataError(
            f"{path}: expected an image count on line 1 and {NUM_ATTRIBUTES} attribute names on line 2"
        )
    names = lines[1].split()
    if len(names) != NUM_ATTRIBUTES:
        raise DataError(f"{path}, line 2: expected {NUM_ATTRIBUTES} attribute names, got {len(names)}")
    attributes: dict[str, np.ndarray] = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        values = fields[1:]
        if len(values) != NUM_ATTRIBUTES or any(v not in ("1", "-1") for v in values):
            raise DataError(
                f"{path}, line {number}: expected '<image>.jpg' and {NUM_ATTRIBUTES} values of -1 or 1"
            )
        attributes[fields[0]] = (np.array(values, dtype=np.int8) > 0).astype(np.float32)
    if len(attributes) != int(lines[0]):
        raise DataError(f"{path}: line 1 announces {int(lines[0])} images but {len(attributes)} are listed")
    return names, attributes


def check_images(folder: Path, names: list[str]) -> None:
    """Every listed image must be in the folder; the error names a few missing ones."""
    present = set(os.listdir(folder))
    missing = [name for name in names if name not in present]
    if missing:
        raise DataError(
            f"{folder}: {len(missing)} listed images are missing, e.g. {missing[:3]}; expected {LAYOUT}"
        )


def build_celeba(config: DataConfig) -> DataSplits:
    """The official splits; ``data.subset`` shrinks train and val together, test in proportion."""
    root = find_root(require_path(config, LAYOUT))
    split = read_partition(root / PARTITION_FILE)
    attr_names, attributes = read_attributes(root / ATTR_FILE)
    unlabelled = [name for name in split if name not in attributes]
    if unlabelled:
        raise DataError(
            f"{root / ATTR_FILE}: no attributes for {len(unlabelled)} images, e.g. {unlabelled[:3]}"
        )
    folder = image_dir(root)
    check_images(folder, list(split))
    names = [sorted(name for name, s in split.items() if s == part) for part in (0, 1, 2)]
    keep = proportional_subsets(config, [len(n) for n in names], "CelebA")
    channels = config.channels or 3
    crop = DEFAULT_CROP if config.crop is None else config.crop
    flip = True if config.flip is None else config.flip

    chosen = [[names[part][i] for i in keep[part]] for part in (0, 1, 2)]
    files = [folder / name for part in chosen for name in part]  # train, valid, test: one cache
    source = image_source(config, files, ImagePipeline(config.image_size, channels, crop))
    starts = np.cumsum([0] + [len(part) for part in chosen])

    def dataset(part: int, train: bool) -> FileImageDataset:
        labels = np.array([attributes[n] for n in chosen[part]], dtype=np.float32).reshape(-1, NUM_ATTRIBUTES)
        pipeline = ImagePipeline(config.image_size, channels, crop, flip and train, config.normalize)
        rows = np.arange(starts[part], starts[part + 1])
        return FileImageDataset(
            files[starts[part] : starts[part + 1]],
            torch.from_numpy(labels),
            pipeline,
            attr_names,
            source,
            rows,
            config.bad_files,
        )

    return DataSplits(dataset(0, True), dataset(1, False), dataset(2, False), channels, (NUM_ATTRIBUTES,))
