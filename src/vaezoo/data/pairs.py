"""Pairs of observations that share all factors of variation but k, for weak supervision.

Locatello et al. (2020), "Weakly-Supervised Disentanglement Without Compromises" (ICML), Sec. 5:
draw factors z from the data, then change k of them (``k`` fixed, or ``"random"``: uniform in
1 .. F'-1 per pair as disentanglement_lib's ``k = -1``, so at least one factor is shared). Here a
changed factor always takes a *different* class, so exactly k factors differ; factors with a single
class (dSprites' colour) cannot change and always count as shared.

A batch of B pairs is laid out as (2B, ...): rows i and B+i form pair i, for the images and for
the (2B, F) factor classes alike, so image grids and the trainer take it as any batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaezoo.data.common import Batch, SplitDataset
from vaezoo.evaluation.disentanglement.ground_truth import check_ground_truth

RANDOM_K = "random"


def check_k(k: Any, factor_sizes: tuple[int, ...] | list[int]) -> int | str:
    """``k`` if it is a valid number of changed factors for these factor sizes, else a ValueError."""
    variable = sum(int(size) > 1 for size in factor_sizes)
    if variable < 2:
        raise ValueError(
            f"pairs need at least two factors with more than one class, got factor_sizes {factor_sizes}"
        )
    if k == RANDOM_K:
        return k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < variable:
        raise ValueError(
            f"data.pairs_k={k!r}: expected 'random' or an integer 1 <= k <= {variable - 1} "
            f"(the {variable} factors with more than one class, minus one that stays shared)"
        )
    return k


def change_factors(
    factors: np.ndarray, factor_sizes: np.ndarray, k: int | str, rng: np.random.Generator
) -> np.ndarray:
    """A copy of (B, F) ``factors`` in which k factors of each row take another class."""
    variable = np.flatnonzero(factor_sizes > 1)
    out = factors.copy()
    for row in out:
        count = int(rng.integers(1, len(variable))) if k == RANDOM_K else int(k)
        for f in rng.choice(variable, size=count, replace=False):
            shift = rng.integers(1, factor_sizes[f])  # 1 .. size-1: never the old class
            row[f] = (row[f] + shift) % factor_sizes[f]
    return out


def sample_pairs(
    ground_truth: Any, num_pairs: int, k: int | str, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """``num_pairs`` pairs: images (2B, C, H, W) and factor classes (2B, F), rows i and B+i paired."""
    sizes = np.asarray(ground_truth.factor_sizes, dtype=np.int64)
    k = check_k(k, list(sizes))
    first = ground_truth.sample_factors(num_pairs, rng).astype(np.int64)  # (B, F)
    second = change_factors(first, sizes, k, rng)
    factors = np.concatenate([first, second])  # (2B, F)
    return ground_truth.images_from_factors(factors), torch.from_numpy(factors)


class PairedSplit(SplitDataset):
    """A split of ``length`` positions whose batches of B positions are B pairs, (2B, ...).

    The pairs of a batch are drawn from the ground truth with a generator seeded by ``seed`` and
    the batch's positions, so an epoch's order (the loaders' EpochSampler) fixes its pairs and a
    resumed run sees the same ones. Labels are the (2B, F) factor classes, int64.

    The pairs come from the whole ground truth, not from one split (Locatello et al. 2020 train and
    score on the whole grid): a paired validation split gives the paired objective on fresh pairs.
    Evaluation reads the held-out split's single images (``VAEDataModule.fixed_batch``).
    """

    def __init__(self, ground_truth: Any, length: int, k: int | str, seed: int = 0, source: str = "") -> None:
        self.ground_truth = check_ground_truth(ground_truth, source or None)
        self.k = check_k(k, list(self.ground_truth.factor_sizes))
        self.length = length
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitems__(self, positions: Sequence[int]) -> Batch:
        rng = np.random.default_rng([self.seed, *map(int, positions)])
        return Batch(*sample_pairs(self.ground_truth, len(positions), self.k, rng))

    def without_augmentation(self) -> PairedSplit:
        return self
