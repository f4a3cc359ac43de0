"""Mutual Information Gap (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs", Eq. 5).

For every factor, the gap between the two code dimensions that carry the most information about it,
normalised by the factor's entropy, averaged over factors. As disentanglement_lib: codes are cut
into 20 equal-width bins and the mutual information is the plug-in estimate on 10,000 points.
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


def mig_from_codes(codes: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> dict[str, float]:
    """MIG of codes (N, D) against factor classes (N, F); factors that never vary are left out."""
    info = mutual_info_matrix(histogram_discretize(codes, num_bins), factors)  # (D, F)
    entropy = factor_entropy(factors)  # (F,)
    varying = entropy > 0
    if not varying.any():
        raise ValueError("MIG needs at least one factor that takes more than one value in the sample")
    top = -np.sort(-info, axis=0)  # (D, F), largest first
    second = top[1] if len(top) > 1 else np.zeros(info.shape[1])
    gaps = (top[0] - second)[varying] / entropy[varying]
    return {"mig": float(gaps.mean())}


def mig(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    num_train: int = 10_000,
    num_bins: int = 20,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """``{"mig"}`` on ``num_train`` random observations of ``ground_truth`` (disentanglement_lib defaults)."""
    codes, factors = seeded_batch(ground_truth, representation_fn, num_train, random_state, encode_batch_size)
    return mig_from_codes(codes, factors, num_bins)
