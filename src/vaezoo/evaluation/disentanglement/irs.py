"""IRS, the Interventional Robustness Score (Suter, Miladinović, Schölkopf & Bauer 2019, "Robustly
Disentangled Causal Mechanisms: Validating Deep Representations for Interventional Robustness", ICML).

How far a code dimension moves when every factor but its parent is changed: for dimension d and
factor k, the mean over the values v of k of the ``diff_quantile`` quantile of
``|z_d - E[z_d | g_k = v]|``, divided by the largest deviation ``max |z_d - E[z_d]|``. One minus that
is ``IRS[d, k]``; each dimension scores its best factor and the score is their average weighted by
the largest deviations. As disentanglement_lib: 10,000 points, the 0.99 quantile (1.0 is the paper's
maximum), the factors cut into its 20-bin histogram, and constant code dimensions dropped (no
active dimension scores 0). disentanglement_lib encodes 16 observations at a time; here
``encode_batch_size`` changes speed only.
"""

from __future__ import annotations

import numpy as np

from vaezoo.evaluation.disentanglement.common import (
    ENCODE_BATCH_SIZE,
    RepresentationFn,
    histogram_discretize,
    seeded_batch,
)
from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth


def irs_matrix(codes: np.ndarray, factors: np.ndarray, diff_quantile: float = 0.99) -> np.ndarray:
    """``IRS[d, k]`` (D, F) of active (non-constant) codes (N, D) against discrete factors (N, F)."""
    deviation = np.abs(codes - codes.mean(axis=0)).max(axis=0)  # (D,)
    spread = np.zeros((codes.shape[1], factors.shape[1]))
    for k in range(factors.shape[1]):
        values = np.unique(factors[:, k])
        for value in values:
            group = codes[factors[:, k] == value]
            spread[:, k] += np.quantile(np.abs(group - group.mean(axis=0)), diff_quantile, axis=0)
        spread[:, k] /= len(values)
    return 1.0 - spread / deviation[:, None]


def irs_from_codes(
    codes: np.ndarray, factors: np.ndarray, diff_quantile: float = 0.99, num_bins: int = 20
) -> dict[str, float]:
    """``{"irs", "irs_num_active_dims"}`` of codes (N, D) against factor classes (N, F)."""
    active = codes[:, codes.var(axis=0) > 0]
    if active.shape[1] == 0:
        return {"irs": 0.0, "irs_num_active_dims": 0.0}
    scores = irs_matrix(active, histogram_discretize(factors, num_bins), diff_quantile)
    weights = np.abs(active - active.mean(axis=0)).max(axis=0)
    return {
        "irs": float(np.average(scores.max(axis=1), weights=weights)),
        "irs_num_active_dims": float(active.shape[1]),
    }


def irs(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    num_train: int = 10_000,
    diff_quantile: float = 0.99,
    num_bins: int = 20,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """``{"irs", "irs_num_active_dims"}`` on ``num_train`` random observations (disentanglement_lib defaults)."""
    codes, factors = seeded_batch(ground_truth, representation_fn, num_train, random_state, encode_batch_size)
    return irs_from_codes(codes, factors, diff_quantile, num_bins)
