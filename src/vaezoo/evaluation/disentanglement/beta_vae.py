"""BetaVAE score (Higgins et al. 2017, "beta-VAE: Learning Basic Visual Concepts...", Sec. 3).

One vote: pick a factor k, draw ``batch_size`` pairs of observations that share factor k (all other
factors independent) and average the absolute code difference over the pairs; the dimension coding
k should differ least. A linear classifier (logistic regression, as disentanglement_lib's
``beta_vae_sklearn``) predicts k from that feature; the score is its accuracy on held-out votes.
Defaults: 64 pairs per vote, 10,000 training and 5,000 evaluation votes.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from vaezoo.evaluation.disentanglement.common import (
    ENCODE_BATCH_SIZE,
    RepresentationFn,
    encode_factors,
    make_rng,
    sample_factors,
)
from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth, check_ground_truth


def beta_vae_votes(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    num_votes: int,
    batch_size: int,
    rng: np.random.Generator,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_votes`` (feature (D,), fixed factor) pairs: features (V, D) float64 and labels (V,) int64."""
    if num_votes < 1 or batch_size < 1:
        raise ValueError(f"num_votes and batch_size must be positive, got {num_votes} and {batch_size}")
    n = num_votes * batch_size
    labels = rng.integers(len(ground_truth.factor_sizes), size=num_votes)  # (V,)
    fixed = np.repeat(labels, batch_size)  # (V * B,)
    first = sample_factors(ground_truth, n, rng)
    second = sample_factors(ground_truth, n, rng, fixed, first[np.arange(n), fixed])
    codes_a = encode_factors(ground_truth, representation_fn, first, rng, encode_batch_size)  # (V * B, D)
    codes_b = encode_factors(ground_truth, representation_fn, second, rng, encode_batch_size)
    features = np.abs(codes_a - codes_b).reshape(num_votes, batch_size, -1).mean(axis=1)  # (V, D)
    return features, labels


def beta_vae_from_features(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    random_state: int = 0,
) -> dict[str, float]:
    """Fit the logistic regression on training votes; ``beta_vae_score`` is the evaluation accuracy.

    sklearn's default LogisticRegression (multinomial, L2, C=1) with more iterations so it converges
    on unscaled codes; disentanglement_lib ran sklearn 0.20, whose default was one-vs-rest liblinear.
    """
    model = LogisticRegression(max_iter=1000, random_state=random_state)
    model.fit(train_features, train_labels)
    return {
        "beta_vae_score": float(model.score(eval_features, eval_labels)),
        "beta_vae_train_accuracy": float(model.score(train_features, train_labels)),
    }


def beta_vae_score(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """``{"beta_vae_score", "beta_vae_train_accuracy"}``; ``batch_size`` pairs per vote.

    Costs ``2 * batch_size * (num_train + num_eval)`` encoded observations (1.92 million by default).
    """
    check_ground_truth(ground_truth)
    rng = make_rng(random_state)
    train = beta_vae_votes(ground_truth, representation_fn, num_train, batch_size, rng, encode_batch_size)
    evaluation = beta_vae_votes(ground_truth, representation_fn, num_eval, batch_size, rng, encode_batch_size)
    return beta_vae_from_features(*train, *evaluation, random_state=random_state)
