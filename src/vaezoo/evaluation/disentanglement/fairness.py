"""Unfairness of a downstream classifier (Locatello, Abbati, Rainforth, Bauer, Schölkopf & Bachem
2019, "On the Fairness of Disentangled Representations", NeurIPS, Sec. 4, Eq. 2).

A classifier predicts a target factor i from the codes. For a sensitive factor j != i, test points
are drawn once and factor j is set to each of its values c in turn (an intervention: the other
factors stay put); the unfairness is the total variation distance between the distribution of
predictions under ``do(j = c)`` and their distribution over all c, weighted by the points per c
(``mean``) or at its worst c (``max``). As disentanglement_lib's ``fairness``: sklearn's default
``GradientBoostingClassifier`` trained on 10,000 points, 100 test points per sensitive class, and
the (i, j) matrices summarised by a mean or max over targets ("pred") and sensitive factors
("sens"). The paper's score is ``mean_fairness_mean_pred_mean_sens``.

Keys: disentanglement_lib's summary keys with ``_`` for ``:``, ``{mean,max}_fairness_`` followed
by ``{mean,max}_pred_{mean,max}_sens`` (over sensitive factors first, then targets) and
``{mean,max}_sens_{mean,max}_pred``; the per-pair and per-factor keys are dropped. A table of
observations that lacks some of the intervened combinations cannot hold the other factors fixed:
there, ``do(j = c)`` draws rows with factor j equal to c (conditioning, not intervening), and the
scores include the sampling noise of the test points.
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
from vaezoo.evaluation.disentanglement.downstream import fit_predictor
from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth, check_ground_truth


def inter_group_fairness(counts: np.ndarray) -> tuple[float, float]:
    """Mean (weighted by the points per sensitive class) and max total variation distance between
    each sensitive class's prediction distribution and the overall one; ``counts`` is
    (predicted classes, sensitive classes)."""
    counts = np.asarray(counts, dtype=np.float64)
    per_class = counts.sum(axis=0)  # points per sensitive class
    overall = counts.sum(axis=1) / counts.sum()
    distances = 0.5 * np.abs(counts / per_class - overall[:, None]).sum(axis=0)
    return float((distances * per_class).sum() / per_class.sum()), float(distances.max())


def fairness_summary(matrix: np.ndarray, prefix: str) -> dict[str, float]:
    """disentanglement_lib's eight mean / max summaries of an (target, sensitive) matrix, off the
    diagonal: ``<prefix>_mean_pred_max_sens`` is the mean over targets of the max over sensitive
    factors, ``<prefix>_max_sens_mean_pred`` the max over sensitive factors of the mean over targets."""
    off = ~np.eye(len(matrix), dtype=bool)
    values = np.where(off, matrix, np.nan)
    per_pred = {"mean": np.nanmean(values, axis=1), "max": np.nanmax(values, axis=1)}  # over sens
    per_sens = {"mean": np.nanmean(values, axis=0), "max": np.nanmax(values, axis=0)}  # over preds
    scores = {}
    for outer, reduce in (("mean", np.mean), ("max", np.max)):
        for inner in ("mean", "max"):
            scores[f"{prefix}_{outer}_pred_{inner}_sens"] = float(reduce(per_pred[inner]))
            scores[f"{prefix}_{outer}_sens_{inner}_pred"] = float(reduce(per_sens[inner]))
    return scores


def interventions(
    ground_truth: GroundTruth, n: int, factor: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Factors (n, F) under ``do(factor = c)`` for each class c: ``n`` points drawn once with only
    ``factor`` changed. A table lacking some of these combinations gets, for every c, ``n`` rows
    drawn with ``factor`` equal to c instead (conditioning)."""
    original = sample_factors(ground_truth, n, rng)
    cases = []
    for c in range(int(ground_truth.factor_sizes[factor])):
        intervened = original.copy()
        intervened[:, factor] = c
        cases.append(intervened)
    if not hasattr(ground_truth, "sample_factors_matching"):
        return cases  # a full grid renders every combination
    try:
        for intervened in cases:
            ground_truth.rows_of(intervened)  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no way to look rows up, or an absent combination
        return [sample_factors(ground_truth, n, rng, factor, np.full(n, c)) for c in range(len(cases))]
    return cases


def fairness_matrices(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    rng: np.random.Generator,
    num_test_points_per_class: int = 100,
    predictor: str = "gbt",
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max unfairness (F, F) of a predictor of target i (rows) under interventions on the
    sensitive factor j (columns); the diagonal is 0."""
    sizes = [int(size) for size in ground_truth.factor_sizes]
    num_factors, n = len(sizes), num_test_points_per_class
    mean, worst = np.zeros((num_factors, num_factors)), np.zeros((num_factors, num_factors))
    for i in range(num_factors):
        model = fit_predictor(predictor, codes_train, factors_train[:, i], random_state)
        for j in range(num_factors):
            if i == j:
                continue
            counts = np.zeros((sizes[i], sizes[j]), dtype=np.int64)
            for c, intervened in enumerate(interventions(ground_truth, n, j, rng)):
                codes = encode_factors(ground_truth, representation_fn, intervened, rng, encode_batch_size)
                counts[:, c] = np.bincount(model.predict(codes), minlength=sizes[i])[: sizes[i]]
            mean[i, j], worst[i, j] = inter_group_fairness(counts)
    return mean, worst


def fairness(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    num_train: int = 10_000,
    num_test_points_per_class: int = 100,
    predictor: str = "gbt",
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """The sixteen summary unfairness scores (``mean_fairness_*``, ``max_fairness_*``); see the module."""
    check_ground_truth(ground_truth)
    if len(ground_truth.factor_sizes) < 2:
        raise ValueError("fairness needs a target and a sensitive factor: at least two factors")
    rng = make_rng(random_state)
    codes_train, factors_train = generate_batch(
        ground_truth, representation_fn, num_train, rng, encode_batch_size
    )
    mean, worst = fairness_matrices(
        ground_truth,
        representation_fn,
        codes_train,
        factors_train,
        rng,
        num_test_points_per_class,
        predictor,
        random_state,
        encode_batch_size,
    )
    return fairness_summary(mean, "mean_fairness") | fairness_summary(worst, "max_fairness")
