"""Modularity and explicitness (Ridgeway & Mozer 2018, "Learning Deep Disentangled Embeddings With
the F-Statistic Loss", Sec. 3).

Modularity: a dimension is modular if it carries information about one factor only; with ``m`` its
mutual information with each factor (20 histogram bins) and ``theta`` the largest, the score is
``1 - sum_{k != max} m_k^2 / (theta^2 (F - 1))``, averaged over dimensions (0 for a dimension with
no information). Explicitness: a logistic regression from the standardised codes to each factor;
the mean one-vs-rest ROC AUC over classes and factors. Defaults: 10,000 training and 5,000 test points.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from vaezoo.evaluation.disentanglement.common import (
    ENCODE_BATCH_SIZE,
    RepresentationFn,
    histogram_discretize,
    mutual_info_matrix,
    train_test_batches,
)
from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth


def modularity(mutual_info: np.ndarray) -> float:
    """Mean modularity of the dimensions from their mutual information with the factors, (D, F)."""
    squared = mutual_info**2
    peak = squared.max(axis=1)  # (D,)
    if squared.shape[1] < 2:
        return float(np.mean(peak > 0))  # with one factor every informative dimension is modular
    deviation = (squared.sum(axis=1) - peak) / np.where(peak > 0, peak * (squared.shape[1] - 1), 1.0)
    return float(np.mean(np.where(peak > 0, 1.0 - deviation, 0.0)))


def _macro_auc(labels: np.ndarray, probabilities: np.ndarray, classes: np.ndarray) -> float:
    """Mean one-vs-rest ROC AUC over the classes that occur in ``labels`` but not alone."""
    onehot = labels[:, None] == classes[None, :]  # (N, K)
    usable = onehot.any(axis=0) & ~onehot.all(axis=0)
    return float(roc_auc_score(onehot[:, usable], probabilities[:, usable], average="macro"))


def explicitness(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    random_state: int = 0,
) -> tuple[float, float]:
    """Mean over factors of the one-vs-rest ROC AUC of a logistic regression on standardised codes."""
    mean, std = codes_train.mean(axis=0), codes_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x_train, x_test = (codes_train - mean) / std, (codes_test - mean) / std
    train, test = [], []
    for k in range(factors_train.shape[1]):
        if len(np.unique(factors_train[:, k])) < 2:
            continue  # a factor that never varies: nothing to predict
        model = LogisticRegression(max_iter=1000, random_state=random_state).fit(x_train, factors_train[:, k])
        train.append(_macro_auc(factors_train[:, k], model.predict_proba(x_train), model.classes_))
        test.append(_macro_auc(factors_test[:, k], model.predict_proba(x_test), model.classes_))
    return float(np.mean(train)), float(np.mean(test))


def modularity_explicitness_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    num_bins: int = 20,
    random_state: int = 0,
) -> dict[str, float]:
    """Modularity (from the training sample) and explicitness of codes (N, D) against factors (N, F)."""
    info = mutual_info_matrix(histogram_discretize(codes_train, num_bins), factors_train)  # (D, F)
    train, test = explicitness(codes_train, factors_train, codes_test, factors_test, random_state)
    return {"modularity": modularity(info), "explicitness_train": train, "explicitness_test": test}


def modularity_explicitness(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    num_train: int = 10_000,
    num_test: int = 5_000,
    num_bins: int = 20,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """``{"modularity", "explicitness_train", "explicitness_test"}`` (disentanglement_lib defaults)."""
    train, test = train_test_batches(
        ground_truth, representation_fn, num_train, num_test, random_state, encode_batch_size
    )
    return modularity_explicitness_from_codes(*train, *test, num_bins=num_bins, random_state=random_state)
