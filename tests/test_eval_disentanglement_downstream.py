"""Downstream-task accuracy and the fairness score: known answers on synthetic ground truths whose
"images" are the factors themselves (as in test_eval_disentanglement.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaezoo.cli import DISENTANGLEMENT_CHOICES, build_parser
from vaezoo.evaluation.disentanglement import (
    DISENTANGLEMENT_METRICS,
    TableGroundTruth,
    compute_disentanglement,
    downstream_from_codes,
    downstream_task,
    fairness,
    fairness_summary,
    inter_group_fairness,
)

SIZES = (3, 4, 5)
NEW = ("downstream_logreg", "downstream_gbt", "fairness")


class Grid:
    """Every combination of SIZES, independent uniform factors; the observation is the factors."""

    factor_names = ("a", "b", "c")
    factor_sizes = SIZES

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, SIZES, size=(n, len(SIZES)))

    def images_from_factors(self, classes: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(classes, dtype=torch.float32)


class Copied(Grid):
    """Two factors of K = 4 classes that are always equal in the data, yet any combination renders
    (so an intervention can pull them apart): the target is a copy of the sensitive factor."""

    factor_names, factor_sizes = ("a", "b"), (4, 4)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        a = rng.integers(0, 4, size=n)
        return np.stack([a, a], axis=1)


def _codes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    factors = np.random.default_rng(seed).integers(0, SIZES, size=(n, len(SIZES)))
    return factors.astype(np.float64), factors


@pytest.mark.parametrize("predictor", ["logreg", "gbt"])
def test_identity_codes_predict_every_factor_and_noise_is_at_chance(predictor):
    (x_train, y_train), (x_test, y_test) = _codes(300, 0), _codes(1000, 1)
    exact = downstream_from_codes(x_train, y_train, x_test, y_test, predictor=predictor)
    prefix = f"downstream_{predictor}_300"
    assert exact[f"{prefix}_min_test_accuracy"] == 1.0 and exact[f"{prefix}_mean_train_accuracy"] == 1.0
    noise = np.random.default_rng(2).normal(size=(1300, 3))
    chance = np.mean([1 / size for size in SIZES])  # (1/3 + 1/4 + 1/5) / 3 = 0.261
    scores = downstream_from_codes(noise[:300], y_train, noise[300:], y_test, predictor=predictor)
    assert abs(scores[f"{prefix}_mean_test_accuracy"] - chance) < 0.05, scores
    if predictor == "gbt":  # the trees memorise the noise: train accuracy far above chance
        assert scores[f"{prefix}_mean_train_accuracy"] > 0.8


def test_downstream_task_reports_each_training_size_and_a_constant_factor():
    scores = downstream_task(Grid(), lambda x: x, num_train=(10, 200), num_test=300)
    sizes_and_keys = {key.split("_")[2] for key in scores}
    assert sizes_and_keys == {"10", "200"} and len(scores) == 8
    assert scores["downstream_logreg_200_min_test_accuracy"] == 1.0
    # A factor seen with one class only is predicted as that class, as scikit-learn cannot fit it.
    x, y = _codes(50, 3)
    y[:, 0] = 2
    one = downstream_from_codes(x, y, x, y)
    assert one["downstream_logreg_50_min_train_accuracy"] == 1.0


def test_inter_group_fairness_is_the_total_variation_to_the_overall_predictions():
    assert inter_group_fairness(np.array([[5, 5], [3, 3]])) == (0.0, 0.0)  # same mix in each group
    assert inter_group_fairness(np.array([[2, 0], [0, 2]])) == (0.5, 0.5)
    # Groups of 4 and 2 points; overall (4/6, 2/6); TV 1/12 and 1/6; weighted mean 1/9.
    mean, worst = inter_group_fairness(np.array([[3, 1], [1, 1]]))
    assert mean == pytest.approx(1 / 9) and worst == pytest.approx(1 / 6)


def test_fairness_summary_reduces_off_the_diagonal():
    matrix = np.array([[9.0, 0.1, 0.3], [0.2, 9.0, 0.6], [0.4, 0.5, 9.0]])  # rows: target, cols: sensitive
    scores = fairness_summary(matrix, "mean_fairness")
    assert len(scores) == 8
    assert scores["mean_fairness_mean_pred_mean_sens"] == pytest.approx(2.1 / 6)
    assert scores["mean_fairness_mean_pred_max_sens"] == pytest.approx((0.3 + 0.6 + 0.5) / 3)
    assert scores["mean_fairness_max_pred_mean_sens"] == pytest.approx(0.45)  # target 2: (0.4 + 0.5) / 2
    assert scores["mean_fairness_max_sens_max_pred"] == pytest.approx(0.6)
    assert scores["mean_fairness_mean_sens_max_pred"] == pytest.approx((0.4 + 0.5 + 0.6) / 3)
    assert scores["mean_fairness_max_sens_mean_pred"] == pytest.approx(0.45)  # sensitive 2: (0.3 + 0.6) / 2


def test_fairness_is_zero_when_the_predictor_cannot_see_the_sensitive_factor():
    # Each factor has its own code dimension, so a predictor of one never reads another: 0 exactly.
    scores = fairness(Grid(), lambda x: x, num_train=200, num_test_points_per_class=20)
    assert len(scores) == 16 and max(scores.values()) == 0.0


def test_fairness_on_a_table_intervenes_when_it_can_and_else_conditions():
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in (3, 4)], indexing="ij"), axis=-1).reshape(-1, 2)
    full = TableGroundTruth(torch.as_tensor(grid, dtype=torch.float32), grid)
    options = {"num_train": 100, "num_test_points_per_class": 10}
    assert fairness(full, lambda x: x, **options)["mean_fairness_max_pred_max_sens"] == 0.0
    holed = TableGroundTruth(torch.as_tensor(grid[1:], dtype=torch.float32), grid[1:])  # no (0, 0)
    scores = fairness(holed, lambda x: x, **options)  # fresh rows per class: only sampling noise
    assert all(0.0 <= value < 0.6 for value in scores.values())


def test_fairness_is_large_when_the_target_is_a_copy_of_the_sensitive_factor():
    # The codes keep only b; a predictor of a learns "a = b", so do(b = c) moves its predictions to c:
    # TV to the overall uniform predictions (K - 1) / K = 0.75 for every c. Predicting b from b
    # ignores a (0), so the mean over (target, sensitive) pairs is 0.375.
    scores = fairness(Copied(), lambda x: x[:, 1:], num_train=200, num_test_points_per_class=20)
    assert scores["mean_fairness_mean_pred_mean_sens"] == pytest.approx(0.375)
    assert scores["mean_fairness_max_pred_max_sens"] == pytest.approx(0.75)
    assert scores["max_fairness_max_pred_max_sens"] == pytest.approx(0.75)


def test_the_metrics_are_registered_and_run_through_compute_disentanglement():
    assert set(NEW) <= set(DISENTANGLEMENT_METRICS) and set(NEW) <= set(DISENTANGLEMENT_CHOICES)
    args = build_parser().parse_args(["evaluate", "run", "--disentanglement-metrics", *NEW])
    assert args.disentanglement_metrics == list(NEW)
    result = compute_disentanglement(Grid(), lambda x: x, list(NEW), num_train=200, num_eval=100)
    assert result["downstream_logreg_200_mean_test_accuracy"] == 1.0
    assert result["downstream_gbt_200_mean_test_accuracy"] == 1.0
    assert result["mean_fairness_mean_pred_mean_sens"] == 0.0
