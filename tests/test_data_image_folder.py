"""Image folders: discovery, class labels, deterministic split, channels, crops and broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaezoo.config import DataConfig
from vaezoo.data import DataError, VAEDataModule


def save_image(path: Path, size: tuple[int, int] = (40, 30), value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    pixels[:, : size[0] // 2, 0] = 255  # a red left half
    Image.fromarray(pixels).save(path)
    return path


def make_module(path: Path, **overrides) -> VAEDataModule:
    module = VAEDataModule(DataConfig(name="image_folder", path=str(path), **overrides), batch_size=4)
    module.setup()
    return module


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    root = tmp_path / "flat"
    for i in range(10):
        save_image(root / f"img{i:02d}.{['png', 'jpg', 'JPEG', 'bmp', 'webp'][i % 5]}", value=20 * i)
    (root / "notes.txt").write_text("not an image")
    return root


def test_flat_folder_labels_zero_and_split(flat: Path):
    module = make_module(flat, val_fraction=0.2)
    assert (module.num_train, module.num_val) == (8, 2)
    assert module.label_shape == () and module.channels == 3
    files = module.splits.train.files + module.splits.val.files
    assert sorted(p.name for p in files) == sorted(p.name for p in flat.iterdir() if p.suffix != ".txt")
    image, label = module.splits.val[0]
    assert image.shape == (3, 64, 64) and label.dtype == torch.int64 and label.item() == 0


def test_split_is_deterministic_and_seeded(flat: Path):
    def val_files(seed: int) -> list[str]:
        return [p.name for p in make_module(flat, val_fraction=0.3, split_seed=seed).splits.val.files]

    assert val_files(1) == val_files(1)
    assert any(val_files(1) != val_files(seed) for seed in range(2, 6))


def test_class_subfolders_give_labels(tmp_path: Path):
    root = tmp_path / "classes"
    for name in ("b/one.png", "b/deep/two.png", "a/three.png", "c/four.jpg"):
        save_image(root / name)
    module = make_module(root, val_fraction=0.0)
    dataset = module.splits.train
    labels = {p.relative_to(root).as_posix(): int(dataset.labels[i]) for i, p in enumerate(dataset.files)}
    assert labels == {"a/three.png": 0, "b/deep/two.png": 1, "b/one.png": 1, "c/four.jpg": 2}
    assert dataset.label_names == ["a", "b", "c"]
    assert module.num_val == 0


def test_channels_crop_and_size(tmp_path: Path):
    root = tmp_path / "wide"
    save_image(root / "x.png", size=(60, 20))
    save_image(root / "y.png", size=(60, 20))
    grey = make_module(root, channels=1, image_size=16, val_fraction=0.0)
    image, _ = grey.splits.train[0]
    assert image.shape == (1, 16, 16) and grey.channels == 1
    colour = make_module(root, image_size=16, flip=False, val_fraction=0.0)
    image, _ = colour.splits.train[0]
    assert image.shape == (3, 16, 16)
    # The default crop is the central 20x20 square: the red half (columns < 30) covers its left half.
    assert image[0, :, :7].min() == 1.0 and image[0, :, 9:].max() < 0.5
    cropped = make_module(root, image_size=8, crop=10, flip=False, val_fraction=0.0)
    assert cropped.splits.train[0][0].shape == (3, 8, 8)


def test_empty_folder_names_folder_and_extensions(tmp_path: Path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"empty: no image files found \(looked recursively for \.png, \.jpg"):
        make_module(empty)


def test_corrupt_file_is_named_at_setup(flat: Path):
    bad = flat / "zz_broken.png"
    bad.write_bytes(b"\x00garbage bytes, not a PNG" * 10)
    with pytest.raises(DataError, match=r"zz_broken\.png: not a readable image"):
        make_module(flat)


def test_truncated_file_is_named_when_decoded(tmp_path: Path):
    root = tmp_path / "trunc"
    path = root / "big.png"
    root.mkdir()
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[:2000])  # the header survives, the pixels do not
    save_image(root / "ok.png")
    with pytest.raises(DataError, match=r"big\.png: cannot decode the image"):
        make_module(root, val_fraction=0.0)  # decoded into the cache at setup


def test_not_a_folder(tmp_path: Path):
    file = save_image(tmp_path / "single.png")
    with pytest.raises(DataError, match="is not a folder"):
        make_module(file)
