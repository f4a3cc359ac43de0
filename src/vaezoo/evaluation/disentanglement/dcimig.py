"""DCIMIG (Sepliarskaia, Kiseleva & de Rijke 2019, "Evaluating Disentangled Representations",
arXiv:1910.05587, later "How to Not Measure Disentanglement").

MIG turned around: every code dimension takes the gap between the mutual information of its two
most related factors and gives it to the first of them; each factor keeps the largest gap it was
given (0 if none) and the score is the sum of those gaps over the sum of the factors' entropies.
So a factor coded by two dimensions, or a dimension coding two factors, loses score. The estimate is
MIG's, as disentanglement_lib: codes cut into 20 equal-width bins, plug-in mutual information on
10,000 points.
"""

from __future__ import annotations

import numpy as np

from vaezoo.evaluation.disentanglement.common import (
    ENCODE_BATCH_SIZE,
    RepresentationFn,
    factor_entropy,
    histogram_discretize,
    mutual_info_matrix,
    seeded_batch,
)
from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth


def dcimig_from_info(info: np.ndarray, entropy: np.ndarray) -> float:
    """DCIMIG of a mutual information matrix (D, F) in nats and the factor entropies (F,)."""
    total = float(entropy.sum())
    if total <= 0:
        raise ValueError("DCIMIG needs at least one factor that takes more than one value in the sample")
    top = -np.sort(-info, axis=1)  # (D, F), each dimension's factors, most informative first
    gaps = top[:, 0] - (top[:, 1] if info.shape[1] > 1 else 0.0)  # (D,)
    best = np.zeros(info.shape[1])
    np.maximum.at(best, info.argmax(axis=1), gaps)  # each factor keeps its largest gap
    return float(best.sum() / total)


def dcimig_from_codes(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> dict[str, float]:
    """``{"dcimig"}`` of codes (N, D) against factor classes (N, F)."""
    info = mutual_info_matrix(histogram_discretize(codes, num_bins), factors)
    return {"dcimig": dcimig_from_info(info, factor_entropy(factors))}


def dcimig(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    num_train: int = 10_000,
    num_bins: int = 20,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """``{"dcimig"}`` on ``num_train`` random observations of ``ground_truth`` (MIG's defaults)."""
    codes, factors = seeded_batch(ground_truth, representation_fn, num_train, random_state, encode_batch_size)
    return dcimig_from_codes(codes, factors, num_bins)
