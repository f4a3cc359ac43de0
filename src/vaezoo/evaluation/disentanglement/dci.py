"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018, "A Framework for
the Quantitative Evaluation of Disentangled Representations", Sec. 2).

A gradient-boosted-trees classifier predicts each factor from the codes; ``R[d, k]`` is how important
code dimension d is to factor k. Disentanglement weights ``1 - H_F(R[d, :] / sum)`` (entropy in base
F) by each dimension's share of the total importance; completeness is the same over dimensions for
each factor (base D); informativeness is the classifiers' accuracy. As disentanglement_lib: sklearn's
default ``GradientBoostingClassifier`` per factor, 10,000 training and 5,000 test points.
"""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed
from scipy.stats import entropy
from sklearn.ensemble import GradientBoostingClassifier

from vaezoo.evaluation.disentanglement.common import (
    ENCODE_BATCH_SIZE,
    RepresentationFn,
    train_test_batches,
)
from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth

EPS = 1e-11  # added to the importances before the entropies, as disentanglement_lib


def _fit_factor(
    codes_train: np.ndarray,
    y_train: np.ndarray,
    codes_test: np.ndarray,
    y_test: np.ndarray,
    random_state: int,
) -> tuple[np.ndarray, float, float]:
    model = GradientBoostingClassifier(random_state=random_state).fit(codes_train, y_train)
    return (
        np.abs(model.feature_importances_),
        float(np.mean(model.predict(codes_train) == y_train)),
        float(np.mean(model.predict(codes_test) == y_test)),
    )


def importance_matrix(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    random_state: int = 0,
    n_jobs: int | None = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Importances (D, F) and per-factor train / test accuracies (F,), one boosted classifier per factor.

    ``n_jobs`` fits factors in parallel (threads: the tree builder releases the GIL); the result
    does not depend on it, as each factor's classifier is seeded alike. A classifier fits one tree
    per class and round, so factors go out most classes first (longest-processing-time order keeps
    both cores busy to the end: dSprites' 40-class orientation is a third of the trees).
    """
    num_factors = factors_train.shape[1]
    classes = [len(np.unique(factors_train[:, k])) for k in range(num_factors)]
    order = sorted(range(num_factors), key=lambda k: -classes[k])
    fits = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(_fit_factor)(codes_train, factors_train[:, k], codes_test, factors_test[:, k], random_state)
        for k in order
    )
    by_factor = dict(zip(order, fits))
    importances, train_acc, test_acc = zip(*(by_factor[k] for k in range(num_factors)))
    return np.stack(importances, axis=1), np.array(train_acc), np.array(test_acc)


def weighted_specificity(importances: np.ndarray, axis: int) -> float:
    """Importance-weighted mean of ``1 - entropy`` (base K) of the importance shares along ``axis``,
    one value per row of the other axis: 1 when each puts all its weight on one partner."""
    shares = importances if axis == 0 else importances.T  # (K, M): distributions down the columns
    specificity = 1.0 - entropy(shares + EPS, base=shares.shape[0])  # (M,)
    weights = shares if shares.sum() > 0 else np.ones_like(shares)
    return float((specificity * weights.sum(axis=0) / weights.sum()).sum())


def disentanglement(importances: np.ndarray) -> float:
    """Importance-weighted mean over code dimensions of ``1 - entropy`` of its factor shares."""
    return weighted_specificity(importances, axis=1)


def completeness(importances: np.ndarray) -> float:
    """Importance-weighted mean over factors of ``1 - entropy`` of its code-dimension shares."""
    return weighted_specificity(importances, axis=0)


def dci_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    random_state: int = 0,
    n_jobs: int | None = 1,
) -> dict[str, float]:
    """DCI of codes (N, D) against factor classes (N, F), from a train and a test sample."""
    importances, train_acc, test_acc = importance_matrix(
        codes_train, factors_train, codes_test, factors_test, random_state, n_jobs
    )
    return {
        "dci_disentanglement": disentanglement(importances),
        "dci_completeness": completeness(importances),
        "dci_informativeness_train": float(train_acc.mean()),
        "dci_informativeness_test": float(test_acc.mean()),
    }


def dci(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    num_train: int = 10_000,
    num_test: int = 5_000,
    random_state: int = 0,
    n_jobs: int | None = 1,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """``{"dci_disentanglement", "dci_completeness", "dci_informativeness_train", "..._test"}``.

    The slow metric: on dSprites (factors of 3, 6, 40, 32 and 32 classes) it fits 11,300 trees on
    10,000 points; ``n_jobs=2`` fits two factors at a time.
    """
    train, test = train_test_batches(
        ground_truth, representation_fn, num_train, num_test, random_state, encode_batch_size
    )
    return dci_from_codes(*train, *test, random_state=random_state, n_jobs=n_jobs)
