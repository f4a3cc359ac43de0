"""IRS, DCIMIG and the unsupervised scores: known answers on constructed codes, one run on a grid.

Factors are independent classes of 3, 4, 5 and 6 values (each kept apart by the 20-bin histogram).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaezoo.cli import build_parser
from vaezoo.evaluation.disentanglement import (
    DISENTANGLEMENT_METRICS,
    compute_disentanglement,
    dcimig_from_codes,
    dcimig_from_info,
    gaussian_total_correlation,
    gaussian_wasserstein_correlation,
    irs_from_codes,
    mutual_info_score,
    unsupervised_from_codes,
)

SIZES = (3, 4, 5, 6)


def factors(n: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, SIZES, size=(n, len(SIZES)))


def test_irs_is_one_when_each_dimension_has_one_parent_and_drops_with_a_leak():
    f = factors()
    permuted = f[:, [2, 0, 3, 1]] * np.array([2.0, -0.5, 3.0, 0.25])
    assert irs_from_codes(f.astype(float), f) == {"irs": 1.0, "irs_num_active_dims": 4.0}
    assert irs_from_codes(permuted, f)["irs"] == pytest.approx(1.0)
    # z0 = f0 + f1 / 2: its largest deviation is 1.75; fixing f0 leaves |f1 - 1.5| / 2 <= 0.75, so
    # IRS[0] = 1 - 0.75 / 1.75 = 4/7 (fixing f1 leaves 1: 3/7). The other dimensions score 1 and the
    # average weights them by their largest deviations 1.5, 2, 2.5: (1 + 6) / 7.75.
    leak = f.astype(float)
    leak[:, 0] += 0.5 * f[:, 1]
    assert irs_from_codes(leak, f)["irs"] == pytest.approx(7 / 7.75, abs=0.01)
    noise = np.random.default_rng(1).normal(size=(2000, 4))
    assert irs_from_codes(noise, f)["irs"] < 0.4


def test_irs_drops_constant_dimensions_and_scores_zero_without_active_ones():
    f = factors(500)
    codes = np.c_[f[:, 0], np.zeros(500), f[:, 1]].astype(float)
    assert irs_from_codes(codes, f) == {"irs": 1.0, "irs_num_active_dims": 2.0}
    assert irs_from_codes(np.ones((500, 3)), f) == {"irs": 0.0, "irs_num_active_dims": 0.0}


def test_dcimig_on_identity_noise_and_mixture_codes():
    f = factors()
    rng = np.random.default_rng(1)
    entropy = [math.log(s) for s in SIZES]  # uniform factors: H = log(size), up to sampling
    identity = dcimig_from_codes(f.astype(float), f)["dcimig"]
    noise = dcimig_from_codes(rng.normal(size=(2000, 4)), f)["dcimig"]
    mixture = dcimig_from_codes(np.c_[f[:, :2], rng.normal(size=(2000, 2))], f)["dcimig"]
    assert identity == pytest.approx(1.0, abs=0.01)
    assert noise < 0.01
    assert mixture == pytest.approx(sum(entropy[:2]) / sum(entropy), abs=0.01)  # two factors of four
    assert identity > mixture > noise


def test_dcimig_keeps_each_factors_largest_gap_by_hand():
    # Rows are code dimensions. Dimension 0: gap 2 - 0.5 to factor 0; dimension 1: gap 1 - 0.5 to
    # factor 0 too (only the larger 1.5 counts); dimension 2: gap 0.75 - 0.25 to factor 1. Factor 2
    # gets nothing: (1.5 + 0.5) / (2 + 1 + 1).
    info = np.array([[2.0, 0.5, 0.0], [1.0, 0.5, 0.25], [0.0, 0.75, 0.25]])
    assert dcimig_from_info(info, np.array([2.0, 1.0, 1.0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one factor"):
        dcimig_from_info(info, np.zeros(3))


def test_gaussian_total_and_wasserstein_correlation_known_answers():
    assert gaussian_total_correlation(np.diag([1.0, 4.0, 0.5])) == pytest.approx(0.0, abs=1e-12)
    assert gaussian_wasserstein_correlation(np.diag([1.0, 4.0, 0.5])) == pytest.approx(0.0, abs=1e-12)
    rho = 0.6
    scale = np.sqrt([2.0, 0.5])  # the total correlation does not depend on the variances
    cov = scale[:, None] * np.array([[1.0, rho], [rho, 1.0]]) * scale[None, :]
    assert gaussian_total_correlation(cov) == pytest.approx(-0.5 * math.log(1 - rho**2))
    # Unit variances: W2^2 = 2 tr S - 2 tr S^1/2, and S^1/2 has eigenvalues sqrt(1 +- rho).
    unit = np.array([[1.0, rho], [rho, 1.0]])
    expected = 4 - 2 * (math.sqrt(1 + rho) + math.sqrt(1 - rho))
    assert gaussian_wasserstein_correlation(unit) == pytest.approx(expected)


def test_unsupervised_scores_of_independent_and_duplicated_codes():
    z = np.random.default_rng(0).normal(size=(5000, 3))
    independent = unsupervised_from_codes(z)
    assert set(independent) == {
        "gaussian_total_correlation",
        "gaussian_wasserstein_correlation",
        "gaussian_wasserstein_correlation_norm",
        "mutual_info_score",
    }
    assert abs(independent["gaussian_total_correlation"]) < 0.005
    assert independent["gaussian_wasserstein_correlation_norm"] < 0.005
    assert independent["mutual_info_score"] < 0.05  # the plug-in bias, ~(20 - 1)^2 / 2N nats
    # z0 twice: the pairs (0, 1) and (1, 0) carry H(binned z0) each, the other four pairs ~0.
    duplicated = np.c_[z[:, 0], z[:, 0], z[:, 1]]
    score = mutual_info_score(duplicated)
    binned_entropy = mutual_info_score(z[:, [0, 0]])  # I(a; a) = H(a) for a single pair
    assert 2 * binned_entropy / 6 <= score <= 2 * binned_entropy / 6 + 0.05
    assert score > 10 * independent["mutual_info_score"]
    assert mutual_info_score(z[:, :1]) == 0.0


class Grid:
    """Every combination of SIZES; the observation of factors is the factors as floats (N, F)."""

    factor_names = ("a", "b", "c", "d")
    factor_sizes = SIZES

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, SIZES, size=(n, len(SIZES)))

    def images_from_factors(self, classes: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(classes, dtype=torch.float32)


def test_the_three_metrics_run_through_compute_disentanglement_and_the_cli():
    names = ["irs", "dcimig", "unsupervised"]
    assert set(names) <= set(DISENTANGLEMENT_METRICS)
    result = compute_disentanglement(Grid(), lambda x: x * 2 + 1, names, num_train=1000)
    assert result["irs"] == pytest.approx(1.0) and result["irs_num_active_dims"] == 4
    assert result["dcimig"] > 0.95
    assert abs(result["gaussian_total_correlation"]) < 0.02 and result["mutual_info_score"] < 0.2
    args = build_parser().parse_args(["evaluate", "run", "--disentanglement-metrics", *names])
    assert args.disentanglement_metrics == names
