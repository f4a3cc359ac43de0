"""The paired ground-truth sampler (Locatello et al. 2020): pairs share exactly all factors but k."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaezoo.config import DataConfig
from vaezoo.data.datamodule import VAEDataModule
from vaezoo.data.dsprites import DSpritesGroundTruth
from vaezoo.data.errors import DataError
from vaezoo.data.pairs import PairedSplit, change_factors, check_k, sample_pairs
from vaezoo.evaluation.disentanglement.ground_truth import TableGroundTruth


def grid_ground_truth(sizes: tuple[int, ...] = (3, 1, 4, 5)) -> TableGroundTruth:
    """Every combination of ``sizes`` once; image of a row = its factors written in the pixels."""
    factors = np.stack(np.meshgrid(*map(np.arange, sizes), indexing="ij"), -1).reshape(-1, len(sizes))
    images = torch.zeros(len(factors), 1, 2, 2)
    images.view(len(factors), -1)[:, : len(sizes)] = torch.from_numpy(factors).float()
    return TableGroundTruth(images, factors)


def changed_counts(factors: torch.Tensor) -> np.ndarray:
    half = len(factors) // 2
    return (factors[:half] != factors[half:]).sum(1).numpy()


@pytest.mark.parametrize("k", [1, 2])
def test_fixed_k_changes_exactly_k_factors(k: int) -> None:
    truth = grid_ground_truth()
    images, factors = sample_pairs(truth, 200, k, np.random.default_rng(0))
    assert images.shape == (400, 1, 2, 2) and factors.shape == (400, 4)
    assert (changed_counts(factors) == k).all()
    assert (factors[:, 1] == 0).all()  # a factor of one class never changes
    # the images are those of the factors: pair rows i and B+i show their own factors
    torch.testing.assert_close(images.view(400, -1)[:, :4], factors.float())


def test_random_k_is_uniform_between_one_and_all_but_one() -> None:
    truth = grid_ground_truth()  # 3 factors with more than one class -> k in {1, 2}
    _, factors = sample_pairs(truth, 2000, "random", np.random.default_rng(1))
    counts = np.bincount(changed_counts(factors), minlength=4)
    assert counts[0] == 0 and counts[3] == 0
    assert abs(counts[1] - counts[2]) < 200  # about 1000 each


def test_dsprites_pairs_share_the_right_factors() -> None:
    truth = DSpritesGroundTruth(image_size=16)
    images, factors = sample_pairs(truth, 16, 1, np.random.default_rng(2))
    assert (changed_counts(factors) == 1).all()
    torch.testing.assert_close(images, truth.images_from_factors(factors.numpy()))


def test_change_factors_never_keeps_the_old_class() -> None:
    sizes = np.array([2, 2, 2])
    first = np.zeros((50, 3), dtype=np.int64)
    second = change_factors(first, sizes, 2, np.random.default_rng(3))
    assert ((second != first).sum(1) == 2).all()


@pytest.mark.parametrize("k", [0, 3, 1.5, "some", True])
def test_bad_k_is_named(k: object) -> None:
    with pytest.raises(ValueError, match=r"data.pairs_k"):
        check_k(k, (3, 1, 4, 5))


def test_paired_split_is_reproducible_from_the_positions() -> None:
    split = PairedSplit(grid_ground_truth(), 100, 1, seed=4)
    first, again = split.__getitems__([5, 6, 7]), split.__getitems__([5, 6, 7])
    assert first.images.shape[0] == 6
    torch.testing.assert_close(first.labels, again.labels)


def test_datamodule_batches_hold_pairs() -> None:
    config = DataConfig(name="dsprites", subset=64, image_size=16, pairs_k=1)
    datamodule = VAEDataModule(config, batch_size=4)
    datamodule.setup()
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (8, 1, 16, 16) and labels.shape == (8, 5)
    assert (changed_counts(labels) == 1).all()


def test_pairs_on_a_dataset_without_factors_is_an_error() -> None:
    with pytest.raises(
        DataError, match=r"data.pairs_k = 1 needs a dataset with ground-truth factors.*'mnist'"
    ):
        VAEDataModule(DataConfig(name="mnist", path="/nonexistent", pairs_k=1))
