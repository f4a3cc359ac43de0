"""Whole batches: uint8 gather, flip on uint8, one float conversion; loaders get them ready-made."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from test_data_celeba import make_celeba
from test_data_idx import make_idx
from torch.utils.data import default_collate

from vaezoo.config import DataConfig
from vaezoo.data import DataError, VAEDataModule
from vaezoo.data.common import Batch, collate
from vaezoo.data.transforms import random_hflip_batch, uint8_to_float


def make_module(tmp_path: Path, kind: str, **overrides) -> VAEDataModule:
    """A set-up module of one dataset kind, on small fake data (dSprites: a 300-image subset)."""
    settings = {
        "dsprites": {"name": "dsprites", "subset": 300},
        "mnist": {"name": "mnist", "path": str(tmp_path / "mnist"), "image_size": 32},
        "celeba": {"name": "celeba", "path": str(tmp_path / "celeba")},
        "image_folder": {"name": "image_folder", "path": str(tmp_path / "celeba" / "img_align_celeba")},
    }[kind]
    if kind == "mnist":
        make_idx(tmp_path / "mnist", gz=False, n_train=20, n_test=8)
    elif kind != "dsprites":
        make_celeba(tmp_path / "celeba")
    module = VAEDataModule(DataConfig(**{**settings, **overrides}), batch_size=4)
    module.prepare_data()
    module.setup()
    return module


KINDS = ["dsprites", "mnist", "celeba", "image_folder"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("normalize", ["unit", "symmetric"])
def test_loader_batches_are_what_default_collate_made_of_items(tmp_path: Path, kind: str, normalize: str):
    module = make_module(tmp_path, kind, normalize=normalize, flip=False, val_fraction=0.5)
    batch = next(iter(module.val_dataloader()))
    n = min(4, module.num_val)
    expected = default_collate([module.splits.val[i] for i in range(n)])  # the loaders' batches until now
    assert type(batch) is type(expected) is list and len(batch) == 2
    for got, want in zip(batch, expected, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want)
    images, labels = batch
    assert images.dtype == torch.float32 and images.shape == (n, module.channels, *images.shape[2:])
    low, high = module.value_range
    assert low <= images.min() and images.max() <= high and images.min() < low + 0.5
    assert labels.shape == (n, *module.label_shape)
    assert labels.dtype == (torch.int64 if module.label_shape == () else torch.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_getitems_is_one_ready_batch(tmp_path: Path, kind: str):
    dataset = make_module(tmp_path, kind).splits.train
    ready = dataset.__getitems__([2, 0, 1])
    assert isinstance(ready, Batch) and ready.images.shape[0] == ready.labels.shape[0] == 3
    assert collate(ready) == [ready.images, ready.labels]


@pytest.mark.parametrize("kind", KINDS)
def test_training_flips_mirror_the_plain_images_reproducibly(tmp_path: Path, kind: str):
    train = make_module(tmp_path, kind, flip=True).splits.train
    positions = list(range(min(len(train), 12))) * 3
    plain, plain_labels = train.without_augmentation().batch(positions)
    L.seed_everything(3, verbose=False)
    flipped, labels = train.batch(positions)
    mirrored = torch.stack([(f == p.flip(-1)).all() for f, p in zip(flipped, plain, strict=True)])
    same = torch.stack([(f == p).all() for f, p in zip(flipped, plain, strict=True)])
    assert (mirrored | same).all() and torch.equal(labels, plain_labels)
    assert (mirrored & ~same).any() and (same & ~mirrored).any()  # some flipped, some not
    L.seed_everything(3, verbose=False)
    assert torch.equal(train.batch(positions)[0], flipped)


def test_flip_of_a_uint8_batch_against_a_reference():
    images = torch.randint(0, 256, (64, 3, 5, 7), dtype=torch.uint8)
    original = images.clone()
    generator = torch.Generator().manual_seed(0)
    flipped = random_hflip_batch(images, generator)
    coins = torch.rand(64, generator=torch.Generator().manual_seed(0)) < 0.5  # the draws it made
    reference = torch.stack([x.flip(-1) if coin else x for x, coin in zip(images, coins, strict=True)])
    assert flipped.dtype == torch.uint8 and torch.equal(flipped, reference)
    assert 0 < coins.sum() < 64
    assert torch.equal(images, original)  # the input is left alone


def test_uint8_to_float_ranges():
    pixels = torch.tensor([[[[0, 51, 255]]]], dtype=torch.uint8)
    unit = uint8_to_float(pixels)
    assert unit.dtype == torch.float32 and unit.flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert uint8_to_float(pixels, "symmetric").flatten().tolist() == pytest.approx([-1.0, -0.6, 1.0])
    with pytest.raises(DataError, match=r"expected a uint8 batch, got torch.float32 \(1, 1, 1, 3\)"):
        uint8_to_float(pixels.float())


def test_fixed_batch_is_unflipped_and_collated(tmp_path: Path):
    module = make_module(tmp_path, "celeba", flip=True)
    images, labels = module.fixed_batch(3, split="train")
    plain = module.splits.train.without_augmentation().batch([0, 1, 2])
    assert torch.equal(images, plain[0]) and torch.equal(labels, plain[1])
