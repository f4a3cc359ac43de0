"""Downstream-task accuracy (Locatello et al. 2019, "Challenging Common Assumptions in the
Unsupervised Learning of Disentangled Representations", Sec. 5, "downstream task").

One classifier per factor predicts that factor's class from the codes; the scores are its train and
test accuracies, averaged (``mean``) and at their worst (``min``) over factors, for each training
size. As disentanglement_lib's ``downstream_task``: training sizes 10, 100, 1,000 and 10,000, 5,000
test points, a fresh train and test sample per size from one seeded generator, and either
``LogisticRegressionCV(Cs=10, cv=KFold(5))`` on the raw codes ("logreg") or sklearn's default
``GradientBoostingClassifier`` ("gbt"). Keys are disentanglement_lib's with the predictor and size in
front, e.g. ``downstream_logreg_10000_mean_test_accuracy``; the per-factor accuracies are dropped.
Cost: the boosted trees fit one tree per class and round (dSprites' 40 orientations: 4,000 trees
per classifier at any size), so ``downstream_gbt`` at 10,000 points costs about as much as DCI (the
same classifiers) and the smaller sizes a little more; an int ``num_train`` (``vaezoo evaluate
--disentanglement-points N``) runs one size only.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import KFold

from vaezoo.evaluation.disentanglement.common import (
    ENCODE_BATCH_SIZE,
    RepresentationFn,
    generate_batch,
    make_rng,
)
from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth, check_ground_truth

DLIB_TRAIN_SIZES = (10, 100, 1_000, 10_000)


def logistic_regression_cv(random_state: int = 0) -> ClassifierMixin:
    """disentanglement_lib's ``logistic_regression_cv``: 10 strengths, 5 unshuffled folds."""
    del random_state  # lbfgs and unshuffled folds are deterministic
    return LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5), **_LOGREG_CURRENT_DEFAULTS)


# The old defaults (an L2 penalty, accuracy to pick the strength), spelled out where scikit-learn
# warns that it will change them (1.8 on); older versions do not know these arguments.
_LOGREG_CURRENT_DEFAULTS = {
    key: value
    for key, value in {"l1_ratios": (0.0,), "scoring": "accuracy", "use_legacy_attributes": False}.items()
    if inspect.signature(LogisticRegressionCV).parameters.get(key, None) is not None
    and inspect.signature(LogisticRegressionCV).parameters[key].default == "warn"
}


def gradient_boosting_classifier(random_state: int = 0) -> ClassifierMixin:
    """disentanglement_lib's ``gradient_boosting_classifier``: sklearn's defaults (seeded here)."""
    return GradientBoostingClassifier(random_state=random_state)


PREDICTORS: dict[str, Callable[[int], ClassifierMixin]] = {
    "logreg": logistic_regression_cv,
    "gbt": gradient_boosting_classifier,
}


class _Constant:
    """The prediction of a factor seen with one class only (sklearn's classifiers refuse to fit it)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def predict(self, codes: np.ndarray) -> np.ndarray:
        return np.full(len(codes), self.value, dtype=np.int64)


def fit_predictor(
    predictor: str, codes: np.ndarray, classes: np.ndarray, random_state: int = 0
) -> ClassifierMixin | _Constant:
    """The named predictor fitted on codes (N, D) -> classes (N,); convergence warnings silenced."""
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; valid names: {', '.join(PREDICTORS)}")
    seen = np.unique(classes)
    if len(seen) < 2:
        return _Constant(int(seen[0]))
    model = PREDICTORS[predictor](random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # folds missing a class at tiny sizes
        return model.fit(codes, classes)


def downstream_accuracies(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    predictor: str = "logreg",
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test accuracy (F,) of one predictor per factor."""
    train, test = [], []
    for k in range(factors_train.shape[1]):
        model = fit_predictor(predictor, codes_train, factors_train[:, k], random_state)
        train.append(np.mean(model.predict(codes_train) == factors_train[:, k]))
        test.append(np.mean(model.predict(codes_test) == factors_test[:, k]))
    return np.array(train), np.array(test)


def downstream_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    predictor: str = "logreg",
    random_state: int = 0,
) -> dict[str, float]:
    """Mean and min train / test accuracy over factors, keyed ``downstream_<predictor>_<N>_...``
    with N the number of training codes."""
    train, test = downstream_accuracies(
        codes_train, factors_train, codes_test, factors_test, predictor, random_state
    )
    prefix = f"downstream_{predictor}_{len(codes_train)}"
    return {
        f"{prefix}_mean_train_accuracy": float(train.mean()),
        f"{prefix}_mean_test_accuracy": float(test.mean()),
        f"{prefix}_min_train_accuracy": float(train.min()),
        f"{prefix}_min_test_accuracy": float(test.min()),
    }


def downstream_task(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    predictor: str = "logreg",
    num_train: int | Sequence[int] = DLIB_TRAIN_SIZES,
    num_test: int = 5_000,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """The downstream accuracies at each training size (an int: one size), disentanglement_lib's
    sampling order: for each size a training sample, then a test sample."""
    check_ground_truth(ground_truth)
    sizes = (num_train,) if isinstance(num_train, int) else tuple(num_train)
    rng = make_rng(random_state)
    scores: dict[str, float] = {}
    for size in sizes:
        train = generate_batch(ground_truth, representation_fn, size, rng, encode_batch_size)
        test = generate_batch(ground_truth, representation_fn, num_test, rng, encode_batch_size)
        scores |= downstream_from_codes(*train, *test, predictor=predictor, random_state=random_state)
    return scores


def downstream_logreg(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    num_train: int | Sequence[int] = DLIB_TRAIN_SIZES,
    num_test: int = 5_000,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """``downstream_task`` with disentanglement_lib's cross-validated logistic regression."""
    return downstream_task(
        ground_truth,
        representation_fn,
        predictor="logreg",
        num_train=num_train,
        num_test=num_test,
        random_state=random_state,
        encode_batch_size=encode_batch_size,
    )


def downstream_gbt(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    num_train: int | Sequence[int] = DLIB_TRAIN_SIZES,
    num_test: int = 5_000,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """``downstream_task`` with disentanglement_lib's gradient boosted trees."""
    return downstream_task(
        ground_truth,
        representation_fn,
        predictor="gbt",
        num_train=num_train,
        num_test=num_test,
        random_state=random_state,
        encode_batch_size=encode_batch_size,
    )
