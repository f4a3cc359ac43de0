"""CelebA from a tiny fake folder: layout, official split, crop/resize, labels, flips and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaezoo.config import DataConfig
from vaezoo.data import DataError, VAEDataModule
from vaezoo.data.celeba import ATTR_FILE, PARTITION_FILE

NAMES = [f"{i:06d}.jpg" for i in range(1, 7)]
PARTS = [0, 0, 0, 1, 1, 2]  # 3 train, 2 valid, 1 test
ATTRS = ["5_o_Clock_Shadow", "Arched_Eyebrows"] + [f"Attr_{i}" for i in range(38)]


def attribute_signs(row: int) -> list[int]:
    return [1 if (row + col) % 3 == 0 else -1 for col in range(40)]


def make_celeba(root: Path) -> Path:
    """Six 178x218 JPEGs whose left half is dark and right half bright, plus the two list files."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    pixels = np.zeros((218, 178, 3), dtype=np.uint8)
    pixels[:, 89:] = 230
    for name in NAMES:
        Image.fromarray(pixels).save(images / name, quality=95)
    (root / PARTITION_FILE).write_text("".join(f"{n} {p}\n" for n, p in zip(NAMES, PARTS, strict=True)))
    rows = [f"{n}  " + " ".join(f"{s:2d}" for s in attribute_signs(i)) for i, n in enumerate(NAMES)]
    (root / ATTR_FILE).write_text("\n".join([str(len(NAMES)), " ".join(ATTRS), *rows]) + "\n")
    return root


@pytest.fixture
def celeba(tmp_path: Path) -> Path:
    return make_celeba(tmp_path / "celeba")


def setup_module_for(path: Path, **overrides) -> VAEDataModule:
    module = VAEDataModule(DataConfig(name="celeba", path=str(path), **overrides), batch_size=2)
    module.prepare_data()
    module.setup()
    return module


def left_minus_right(image: torch.Tensor) -> float:
    half = image.shape[-1] // 2
    return (image[..., :half].mean() - image[..., half:].mean()).item()


def test_official_split_shapes_and_labels(celeba: Path):
    module = setup_module_for(celeba)
    splits = module.splits
    assert (module.num_train, module.num_val, len(splits.test)) == (3, 2, 1)
    assert (module.channels, module.label_shape) == (3, (40,))
    image, label = splits.val[0]
    assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
    assert label.dtype == torch.float32
    assert label.tolist() == [float(s > 0) for s in attribute_signs(3)]  # 000004.jpg is the first valid image
    assert splits.train.label_names == ATTRS
    assert [p.name for p in splits.test.files] == ["000006.jpg"]


def test_parent_folder_crop_resize_and_symmetric_range(celeba: Path):
    module = setup_module_for(celeba.parent, image_size=32, crop=100, normalize="symmetric")
    image, _ = module.splits.test[0]
    assert image.shape == (3, 32, 32)
    assert image.min() >= -1 and image.max() <= 1 and image.min() < -0.9


def test_flip_only_on_train(celeba: Path):
    module = setup_module_for(celeba)
    torch.manual_seed(0)
    train_signs = {np.sign(left_minus_right(module.splits.train[i % 3][0])) for i in range(30)}
    assert train_signs == {-1.0, 1.0}  # dark on the left, or flipped to the right
    for dataset in (module.splits.val, module.splits.test):
        assert all(left_minus_right(dataset[i][0]) < 0 for i in range(len(dataset)) for _ in range(5))
    unflipped = setup_module_for(celeba, flip=False)
    assert all(left_minus_right(unflipped.splits.train[i % 3][0]) < 0 for i in range(15))


def test_channels_one(celeba: Path):
    module = setup_module_for(celeba, channels=1)
    assert module.splits.train[0][0].shape == (1, 64, 64)


def test_missing_attribute_file_is_named(celeba: Path):
    (celeba / ATTR_FILE).unlink()
    with pytest.raises(
        DataError, match=r"list_attr_celeba\.txt: file is missing; expected a folder holding img_align_celeba"
    ):
        setup_module_for(celeba)


def test_missing_image_folder_and_images(celeba: Path, tmp_path: Path):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    with pytest.raises(DataError, match="no img_align_celeba/ folder"):
        setup_module_for(empty)
    (celeba / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DataError, match="1 listed images are missing.*000002.jpg"):
        setup_module_for(celeba)


def test_malformed_lists_name_file_and_line(celeba: Path):
    attr = celeba / ATTR_FILE
    lines = attr.read_text().splitlines()
    lines[3] = lines[3].replace("-1", "0", 1)
    attr.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"list_attr_celeba\.txt, line 4: expected"):
        setup_module_for(celeba)
    (celeba / PARTITION_FILE).write_text("000001.jpg 7\n")
    with pytest.raises(DataError, match=r"list_eval_partition\.txt, line 1"):
        setup_module_for(celeba)


def test_crop_larger_than_the_image_names_the_file(celeba: Path):
    with pytest.raises(DataError, match=r"000001\.jpg: crop size 300 does not fit an image of 178x218"):
        setup_module_for(celeba, crop=300)  # prepare_data decodes every image into the cache
