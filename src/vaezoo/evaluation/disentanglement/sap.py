"""SAP, the Separated Attribute Predictability score (Kumar et al. 2018, "Variational Inference of
Disentangled Latent Concepts from Unlabeled Observations", Sec. 3).

``S[d, k]`` is how well code dimension d alone predicts factor k: for discrete factors, the test
accuracy of a linear SVM (``LinearSVC(C=0.01, class_weight="balanced")``, as disentanglement_lib)
trained on that one dimension. The score is the mean over factors of the gap between the two best
dimensions. Defaults: 10,000 training and 5,000 test points.
"""

from __future__ import annotations

import numpy as np
from sklearn.svm import LinearSVC

from vaezoo.evaluation.disentanglement.common import (
    ENCODE_BATCH_SIZE,
    RepresentationFn,
    train_test_batches,
)
from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth


def sap_score_matrix(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    random_state: int = 0,
) -> np.ndarray:
    """Test accuracy (D, F) of a one-dimensional linear SVM per (code dimension, factor)."""
    scores = np.zeros((codes_train.shape[1], factors_train.shape[1]))
    for d in range(codes_train.shape[1]):
        for k in range(factors_train.shape[1]):
            if len(np.unique(factors_train[:, k])) < 2:
                continue  # a factor that never varies: nothing to predict
            svm = LinearSVC(C=0.01, class_weight="balanced", random_state=random_state)
            svm.fit(codes_train[:, d : d + 1], factors_train[:, k])
            scores[d, k] = np.mean(svm.predict(codes_test[:, d : d + 1]) == factors_test[:, k])
    return scores


def sap_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    random_state: int = 0,
) -> dict[str, float]:
    """SAP of codes (N, D) against factor classes (N, F); needs at least two code dimensions."""
    if codes_train.shape[1] < 2:
        raise ValueError(f"SAP compares the two best code dimensions; got {codes_train.shape[1]} dimension")
    scores = np.sort(
        sap_score_matrix(codes_train, factors_train, codes_test, factors_test, random_state), axis=0
    )
    return {"sap": float(np.mean(scores[-1] - scores[-2]))}


def sap_score(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    num_train: int = 10_000,
    num_test: int = 5_000,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """``{"sap"}`` on random observations of ``ground_truth`` (disentanglement_lib defaults)."""
    train, test = train_test_batches(
        ground_truth, representation_fn, num_train, num_test, random_state, encode_batch_size
    )
    return sap_from_codes(*train, *test, random_state=random_state)
