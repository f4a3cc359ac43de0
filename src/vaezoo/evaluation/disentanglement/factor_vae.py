"""FactorVAE score (Kim & Mnih 2018, "Disentangling by Factorising", Sec. 4).

One vote: pick a factor k, draw ``batch_size`` observations that all share one class of k, divide
each code dimension's variance in that batch by its variance over the whole data and take the
dimension with the smallest ratio. A majority-vote classifier maps each dimension to the factor
that chose it most often; the score is its accuracy on held-out votes. As disentanglement_lib:
64 observations per vote, 10,000 training and 5,000 evaluation votes, global variances from
10,000 observations, and dimensions whose global standard deviation is below 0.05 (collapsed to
the prior) are left out of the argmin. A vote is counted at the chosen dimension itself
(disentanglement_lib counts it at its position among the active dimensions: the same score, a
shifted vote matrix), and ``factor_vae_active_dims`` counts the active dimensions.
"""

from __future__ import annotations

import numpy as np

from vaezoo.evaluation.disentanglement.common import (
    ENCODE_BATCH_SIZE,
    RepresentationFn,
    encode_factors,
    generate_batch,
    make_rng,
    sample_factors,
)
from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth, check_ground_truth


def factor_vae_votes(
    codes: np.ndarray,
    labels: np.ndarray,
    global_variances: np.ndarray,
    active: np.ndarray,
    num_factors: int,
) -> np.ndarray:
    """Vote counts (F, D) from vote batches ``codes`` (V, B, D) whose fixed factors are ``labels`` (V,)."""
    local = codes[:, :, active].var(axis=1, ddof=1) / global_variances[active]  # (V, D_active)
    chosen = np.flatnonzero(active)[local.argmin(axis=1)]  # (V,) as dimensions of the full code
    votes = np.zeros((num_factors, codes.shape[2]), dtype=np.int64)
    np.add.at(votes, (labels, chosen), 1)
    return votes


def factor_vae_from_votes(train_votes: np.ndarray, eval_votes: np.ndarray) -> dict[str, float]:
    """Majority-vote classifier (each dimension -> its most frequent factor) fit on training votes."""
    classifier = train_votes.argmax(axis=0)  # (D,)
    dims = np.arange(train_votes.shape[1])
    return {
        "factor_vae_score": float(eval_votes[classifier, dims].sum() / max(eval_votes.sum(), 1)),
        "factor_vae_train_accuracy": float(train_votes[classifier, dims].sum() / max(train_votes.sum(), 1)),
    }


def _vote_batch(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    num_votes: int,
    batch_size: int,
    rng: np.random.Generator,
    encode_batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Codes (V, B, D) of vote batches sharing one class of a random factor, and the factors (V,)."""
    labels = rng.integers(len(ground_truth.factor_sizes), size=num_votes)  # (V,)
    anchors = sample_factors(ground_truth, num_votes, rng)  # the shared class comes from a random point
    values = anchors[np.arange(num_votes), labels]
    factors = sample_factors(
        ground_truth,
        num_votes * batch_size,
        rng,
        np.repeat(labels, batch_size),
        np.repeat(values, batch_size),
    )
    codes = encode_factors(ground_truth, representation_fn, factors, rng, encode_batch_size)
    return codes.reshape(num_votes, batch_size, -1), labels


def factor_vae_score(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    prune_threshold: float = 0.05,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """``{"factor_vae_score", "factor_vae_train_accuracy", "factor_vae_active_dims"}``.

    ``prune_threshold`` applies to the standard deviation, as disentanglement_lib's ``prune_dims``.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 to estimate a variance, got {batch_size}")
    check_ground_truth(ground_truth)
    rng = make_rng(random_state)
    codes, _ = generate_batch(ground_truth, representation_fn, num_variance_estimate, rng, encode_batch_size)
    global_variances = codes.var(axis=0, ddof=1)  # (D,)
    active = np.sqrt(global_variances) >= prune_threshold
    if not active.any():
        return {"factor_vae_score": 0.0, "factor_vae_train_accuracy": 0.0, "factor_vae_active_dims": 0.0}
    num_factors = len(ground_truth.factor_sizes)
    votes = []
    for num_votes in (num_train, num_eval):
        batch = _vote_batch(ground_truth, representation_fn, num_votes, batch_size, rng, encode_batch_size)
        votes.append(factor_vae_votes(*batch, global_variances, active, num_factors))
    return {**factor_vae_from_votes(*votes), "factor_vae_active_dims": float(active.sum())}
