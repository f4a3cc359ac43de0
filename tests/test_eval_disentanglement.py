"""Disentanglement metrics: known answers on a synthetic ground truth whose "images" are the factors.

The synthetic grid has four factors of 3, 4, 5 and 6 classes (at most 20, so the 20-bin histogram
keeps every class apart). Representations: the factors themselves, a permuted and rescaled copy,
noise independent of the factors, and a mixture that codes factors 0 and 1 exactly and replaces
factors 2 and 3 by noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import mutual_info_score
from torch import nn

from vaezoo.data.dsprites import DSpritesGroundTruth
from vaezoo.evaluation.disentanglement import (
    DISENTANGLEMENT_METRICS,
    GroundTruth,
    MemoizedCodes,
    MissingFactorsError,
    TableGroundTruth,
    check_ground_truth,
    completeness,
    compute_disentanglement,
    dci_from_codes,
    disentanglement,
    factor_entropy,
    factor_vae_from_votes,
    factor_vae_votes,
    generate_batch,
    histogram_discretize,
    mean_representation,
    mig_from_codes,
    modularity,
    mutual_info_matrix,
    sample_factors,
)

SIZES = (3, 4, 5, 6)


class Grid:
    """Every combination of SIZES; the observation of factors is the factors as floats (N, F)."""

    factor_names = ("a", "b", "c", "d")
    factor_sizes = SIZES

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, SIZES, size=(n, len(SIZES)))

    def images_from_factors(self, classes: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(classes, dtype=torch.float32)


def noise_codes(x: torch.Tensor) -> torch.Tensor:
    return torch.randn(len(x), 4)


REPRESENTATIONS = {
    "identity": lambda x: x,
    "permuted": lambda x: (
        x[:, [2, 0, 3, 1]] * torch.tensor([2.0, -0.5, 3.0, 0.25]) + torch.tensor([1.0, -2, 0, 5])
    ),
    "noise": noise_codes,
    "mixture": lambda x: torch.cat([x[:, :2], torch.randn(len(x), 2)], dim=1),
}
SMALL = {"num_train": 1000, "num_eval": 500, "memoize": False}  # noise must stay fresh per observation


@pytest.fixture(scope="module", params=list(REPRESENTATIONS))
def scores(request) -> tuple[str, dict[str, float]]:
    """Every metric but the classifier-heavy ones on one representation (a few seconds in all)."""
    torch.manual_seed(0)
    slow = ("dci", "downstream_logreg", "downstream_gbt", "fairness")  # the last three: own test file
    metrics = [name for name in DISENTANGLEMENT_METRICS if name not in slow]
    return request.param, compute_disentanglement(Grid(), REPRESENTATIONS[request.param], metrics, **SMALL)


# Expected scores, (low, high), per representation. Derivations:
# - identity / permuted: each factor has its own dimension, so the BetaVAE and FactorVAE classifiers
#   are exact and each MIG gap is H(factor) minus a plug-in bias of ~(bins-1)(classes-1)/2N nats.
# - noise: the classifiers are at chance 1/F = 0.25; MIG and SAP gaps are differences of biases.
#   Modularity is not 0 for noise: the plug-in MI bias grows with the number of classes (2, 3, 4, 5
#   for 3..6 classes), so every dimension looks most related to factor d and modularity is about
#   1 - (2^2 + 3^2 + 4^2) / (5^2 * 3) = 0.61 (0.68 measured). Explicitness (a ROC AUC) is 0.5 at chance.
# - mixture: MIG = 2/4 exact gaps; BetaVAE cannot tell the two noise-coded factors apart,
#   (1 + 1 + 1/2 + 1/2) / 4 = 0.75; FactorVAE's argmin is uniform over all 4 dimensions when factor
#   2 or 3 is fixed, 1/4 + 1/4 + 2 * (1/4 * 1/4) = 0.625 (in either majority assignment); modularity
#   averages 1 for the two exact dimensions with the noise value for the other two (about 0.8).
# - SAP uses 1-D linear SVMs with C=0.01, which cannot carve a middle class out of one dimension and
#   shrink small-scale codes, so even the identity scores well below 1 (0.47; permuted 0.32).
EXPECTED = {
    "identity": {
        "beta_vae_score": (0.99, 1),
        "factor_vae_score": (0.99, 1),
        "mig": (0.95, 1),
        "sap": (0.35, 0.6),
        "modularity": (0.95, 1),
        "explicitness_test": (0.95, 1),
    },
    "permuted": {
        "beta_vae_score": (0.99, 1),
        "factor_vae_score": (0.99, 1),
        "mig": (0.95, 1),
        "sap": (0.25, 0.6),
        "modularity": (0.95, 1),
        "explicitness_test": (0.95, 1),
    },
    "noise": {
        "beta_vae_score": (0.18, 0.32),
        "factor_vae_score": (0.18, 0.32),
        "mig": (0, 0.03),
        "sap": (0, 0.04),
        "modularity": (0.45, 0.8),
        "explicitness_test": (0.45, 0.56),
    },
    "mixture": {
        "beta_vae_score": (0.68, 0.82),
        "factor_vae_score": (0.55, 0.7),
        "mig": (0.45, 0.52),
        "sap": (0.15, 0.4),
        "modularity": (0.75, 0.9),
        "explicitness_test": (0.7, 0.85),
    },
}


def test_scores_match_the_expected_ranges(scores):
    name, result = scores
    for key, (low, high) in EXPECTED[name].items():
        assert low <= result[key] <= high, f"{name}: {key} = {result[key]:.3f} not in [{low}, {high}]"


def test_scores_order_identity_over_mixture_over_noise():
    def run(name: str) -> dict[str, float]:
        torch.manual_seed(0)
        return compute_disentanglement(
            Grid(), REPRESENTATIONS[name], ["beta_vae", "factor_vae", "mig"], **SMALL
        )

    identity, mixture, noise = run("identity"), run("mixture"), run("noise")
    for key in ("beta_vae_score", "factor_vae_score", "mig"):
        assert identity[key] > mixture[key] + 0.1 > noise[key] + 0.2, key


# Test accuracy of the per-factor classifiers: 1 for a code per factor; chance (the mean of 1/3, 1/4,
# 1/5, 1/6 = 0.24) for noise; the mixture knows factors a and b only, (1 + 1 + 1/5 + 1/6) / 4 = 0.59.
CHANCE = float(np.mean([1 / s for s in SIZES]))


@pytest.mark.parametrize(
    "name, low, high, informativeness",
    [
        ("identity", 0.95, 1, 1.0),
        ("permuted", 0.95, 1, 1.0),
        ("mixture", 0.4, 0.8, (2 + 1 / 5 + 1 / 6) / 4),
        ("noise", 0, 0.1, CHANCE),
    ],
)
def test_dci_known_answers(name, low, high, informativeness):
    torch.manual_seed(0)
    result = compute_disentanglement(
        Grid(), REPRESENTATIONS[name], "dci", num_train=300, num_eval=200, memoize=False
    )
    assert low <= result["dci_disentanglement"] <= high
    assert low <= result["dci_completeness"] <= high
    assert result["dci_informativeness_test"] == pytest.approx(informativeness, abs=0.05)


# --------------------------------------------------------------------------- array-level cores


def test_histogram_discretize_on_a_hand_case_and_as_disentanglement_lib():
    codes = np.stack([np.arange(20.0), np.r_[np.zeros(10), np.ones(10)]], axis=1)  # (20, 2)
    bins = histogram_discretize(codes, num_bins=20)
    np.testing.assert_array_equal(bins[:, 0], np.arange(20))  # one value per bin, the max in the last
    np.testing.assert_array_equal(bins[:, 1], np.r_[np.zeros(10), np.full(10, 19)])
    random = np.random.default_rng(0).normal(size=(500, 3))
    reference = [np.digitize(c, np.histogram(c, 20)[1][:-1]) - 1 for c in random.T]
    np.testing.assert_array_equal(histogram_discretize(random), np.stack(reference, axis=1))


def test_mutual_information_and_entropy_on_hand_cases():
    factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    codes = np.array([[0], [0], [1], [1]])  # equal to factor 0, independent of factor 1
    np.testing.assert_allclose(mutual_info_matrix(codes, factors), [[math.log(2), 0.0]], atol=1e-12)
    np.testing.assert_allclose(
        factor_entropy(np.array([[0], [0], [0], [1]])), [-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]
    )
    rng = np.random.default_rng(1)
    codes, factors = rng.integers(0, 7, size=(300, 3)), rng.integers(0, [2, 9], size=(300, 2))
    reference = [[mutual_info_score(factors[:, k], codes[:, d]) for k in range(2)] for d in range(3)]
    np.testing.assert_allclose(mutual_info_matrix(codes, factors), reference, atol=1e-12)


def test_mig_dci_and_modularity_cores_on_hand_cases():
    factors = np.random.default_rng(0).integers(0, SIZES, size=(2000, 4))
    assert mig_from_codes(factors.astype(float), factors)["mig"] > 0.95
    assert disentanglement(np.eye(4)) == pytest.approx(1) and completeness(np.eye(4)) == pytest.approx(1)
    assert disentanglement(np.ones((4, 4))) == pytest.approx(0, abs=1e-9)
    assert completeness(np.ones((4, 4))) == pytest.approx(0, abs=1e-9)
    # one factor coded by two dimensions: each dimension is pure, the factor is split in two (base 3).
    split = np.array([[1.0, 0], [1, 0], [0, 1]])
    assert disentanglement(split) == pytest.approx(1)
    assert completeness(split) == pytest.approx(1 - (2 / 3) * math.log(2, 3))
    assert modularity(np.eye(3)) == pytest.approx(1)
    assert modularity(np.ones((3, 3))) == pytest.approx(0)
    assert modularity(np.array([[1.0, 1, 0]])) == pytest.approx(0.5)  # 1 - 1 / (1 * 2)
    assert modularity(np.zeros((2, 3))) == 0  # uninformative dimensions count as not modular


def test_factor_vae_majority_vote_by_hand():
    train = np.array([[5, 1, 0], [2, 4, 3]])  # (F=2, D=3): dims 0 -> factor 0, dims 1 and 2 -> factor 1
    evaluation = np.array([[3, 1, 0], [1, 2, 3]])
    result = factor_vae_from_votes(train, evaluation)
    assert result["factor_vae_train_accuracy"] == pytest.approx((5 + 4 + 3) / 15)
    assert result["factor_vae_score"] == pytest.approx((3 + 2 + 3) / 10)


def test_factor_vae_prunes_collapsed_dimensions_and_votes_for_the_real_one():
    def collapsed_first(x: torch.Tensor) -> torch.Tensor:  # a constant dimension, then the factors
        return torch.cat([torch.full((len(x), 1), 0.3), x], dim=1)

    result = DISENTANGLEMENT_METRICS["factor_vae"](Grid(), collapsed_first, num_train=200, num_eval=100)
    assert result["factor_vae_active_dims"] == 4
    assert result["factor_vae_score"] == 1.0
    codes = np.array(
        [[[5.0, 0, 1], [-5, 2, 1], [0, 4, 1]], [[1.0, 0, 0], [1, 1, 5], [1, 2, 9]]]
    )  # (V=2, B=3, D=3)
    votes = factor_vae_votes(
        codes, np.array([1, 0]), np.ones(3), np.array([False, True, True]), num_factors=2
    )
    np.testing.assert_array_equal(votes, [[0, 1, 0], [0, 0, 1]])  # dimension 0 is pruned, not voted for


def test_dci_core_returns_every_key_in_range():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, 3, size=(300, 2))
    codes = np.c_[factors + 0.1 * rng.normal(size=(300, 2)), rng.normal(size=300)]
    result = dci_from_codes(codes[:200], factors[:200], codes[200:], factors[200:])
    assert set(result) == {
        "dci_disentanglement",
        "dci_completeness",
        "dci_informativeness_train",
        "dci_informativeness_test",
    }
    assert result["dci_disentanglement"] > 0.8 and result["dci_informativeness_test"] > 0.9


@pytest.mark.parametrize("n_jobs", [2, 3])
def test_dci_fits_factors_in_parallel_with_the_serial_scores(n_jobs):
    rng = np.random.default_rng(1)
    factors = rng.integers(0, 4, size=(300, 3))
    codes = np.c_[factors + 0.3 * rng.normal(size=(300, 3)), rng.normal(size=300)]
    serial = dci_from_codes(codes[:200], factors[:200], codes[200:], factors[200:], n_jobs=1)
    parallel = dci_from_codes(codes[:200], factors[:200], codes[200:], factors[200:], n_jobs=n_jobs)
    assert parallel == serial  # bit for bit: each factor's classifier has the same seed either way


# --------------------------------------------------------------------------- sampling and plumbing


def test_same_seed_same_scores_and_encode_batch_size_does_not_matter():
    first = compute_disentanglement(Grid(), REPRESENTATIONS["permuted"], ["mig", "factor_vae"], **SMALL)
    again = compute_disentanglement(Grid(), REPRESENTATIONS["permuted"], ["mig", "factor_vae"], **SMALL)
    assert first == again
    gt, fn = Grid(), REPRESENTATIONS["permuted"]
    small = DISENTANGLEMENT_METRICS["beta_vae"](gt, fn, num_train=50, num_eval=50, encode_batch_size=7)
    large = DISENTANGLEMENT_METRICS["beta_vae"](gt, fn, num_train=50, num_eval=50, encode_batch_size=4096)
    assert small == large


def test_sample_factors_fixes_one_factor_per_row():
    rng = np.random.default_rng(0)
    fixed, values = np.array([0, 3, 3, 1]), np.array([2, 5, 0, 1])
    factors = sample_factors(Grid(), 4, rng, fixed, values)
    np.testing.assert_array_equal(factors[np.arange(4), fixed], values)
    assert factors.shape == (4, 4) and (factors < np.array(SIZES)).all()


def test_memoized_codes_give_the_same_scores_with_fewer_encodings():
    encoded = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        encoded.append(len(x))
        return REPRESENTATIONS["permuted"](x)

    sizes = {"num_train": 100, "num_eval": 50}
    plain = compute_disentanglement(Grid(), counting, ["beta_vae", "mig"], **sizes, memoize=False)
    plain_count, encoded[:] = sum(encoded), []
    memo = compute_disentanglement(Grid(), counting, ["beta_vae", "mig"], **sizes)  # a small grid: memoized
    assert memo == plain
    assert sum(encoded) <= math.prod(SIZES) < plain_count  # 360 combinations vs 19,300 observations
    memo, encoded[:] = MemoizedCodes(Grid(), counting), []
    first = DISENTANGLEMENT_METRICS["mig"](memo.ground_truth, memo.representation_fn, num_train=2000)
    assert memo.encoded == sum(encoded) <= math.prod(SIZES)
    assert first == DISENTANGLEMENT_METRICS["mig"](Grid(), counting, num_train=2000)
    with pytest.raises(ValueError, match="360 factor combinations are too many to memoize"):
        MemoizedCodes(Grid(), counting, max_cells=100)


def test_table_ground_truth_looks_up_and_samples_present_rows():
    rng = np.random.default_rng(0)
    factors = np.array([[0, 0], [0, 1], [1, 1], [1, 1], [2, 0]])  # (1, 0), (2, 1) absent; (1, 1) twice
    images = torch.arange(5.0)[:, None, None, None].expand(5, 1, 2, 2)
    table = TableGroundTruth(images, factors, factor_names=["shape", "size"])
    assert isinstance(table, GroundTruth) and table.factor_sizes == (3, 2)
    assert table.images_from_factors(np.array([[2, 0], [0, 1]]))[:, 0, 0, 0].tolist() == [4, 1]
    assert set(table.images_from_factors(np.array([[1, 1]] * 50), rng)[:, 0, 0, 0].tolist()) == {2, 3}
    drawn = table.sample_factors(200, rng)
    assert {tuple(row) for row in drawn} <= {tuple(row) for row in factors}
    matching = table.sample_factors_matching(1, np.array([0] * 100 + [1] * 100), rng)
    np.testing.assert_array_equal(matching[:, 1], [0] * 100 + [1] * 100)
    assert {tuple(row) for row in matching} <= {tuple(row) for row in factors}
    with pytest.raises(ValueError, match=r"no observation in the table has factors \[1, 0\]"):
        table.images_from_factors(np.array([[1, 0]]))
    with pytest.raises(ValueError, match="no row of the table has factor 'shape' = 7"):
        table.sample_factors_matching(0, np.array([7]), rng)
    with pytest.raises(ValueError, match="as many images as factor rows"):
        TableGroundTruth(images[:3], factors)


def test_metrics_on_a_table_of_the_grid_match_the_identity_answers():
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"), axis=-1).reshape(-1, 4)
    twice = np.concatenate([grid, grid])  # every combination in two rows
    table = TableGroundTruth(torch.as_tensor(twice, dtype=torch.float32), twice)
    encoded = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        encoded.append(len(x))
        return x

    result = compute_disentanglement(
        table, counting, ["beta_vae", "factor_vae", "mig"], num_train=300, num_eval=200
    )
    assert result["beta_vae_score"] > 0.99 and result["factor_vae_score"] > 0.99 and result["mig"] > 0.9
    # A table is not memoized: BetaVAE 2 * 64 * (300 + 200), FactorVAE 300 + 64 * (300 + 200), MIG 300.
    assert sum(encoded) == 64_000 + 32_300 + 300


def test_generate_batch_rejects_codes_of_the_wrong_shape():
    rng = np.random.default_rng(0)
    codes, factors = generate_batch(Grid(), lambda x: x[:, :2], 10, rng)
    assert codes.shape == (10, 2) and codes.dtype == np.float64 and factors.shape == (10, 4)
    with pytest.raises(ValueError, match=r"codes shaped \(N, D\) = \(10, D\)"):
        generate_batch(Grid(), lambda x: x.flatten(), 10, rng)
    with pytest.raises(ValueError, match="non-finite"):
        generate_batch(Grid(), lambda x: x * float("nan"), 10, rng)


def test_missing_factors_error_names_what_is_missing():
    with pytest.raises(
        MissingFactorsError, match=r"data 'fashion_mnist' has none \(datasets with factors: dsprites"
    ):
        compute_disentanglement(None, lambda x: x, data_name="fashion_mnist")

    class NoImages:
        factor_names, factor_sizes = ("a",), (2,)

        def sample_factors(self, n, rng):
            return np.zeros((n, 1), dtype=np.int64)

    with pytest.raises(MissingFactorsError, match="NoImages of data 'toy' lacks images_from_factors"):
        check_ground_truth(NoImages(), "toy")
    assert issubclass(MissingFactorsError, ValueError)
    for metric in DISENTANGLEMENT_METRICS.values():  # each metric checks on its own too
        with pytest.raises(MissingFactorsError, match="has none"):
            metric(None, lambda x: x)
    with pytest.raises(
        ValueError, match="unknown disentanglement metric.*'no_such_metric'.*valid names: beta_vae"
    ):
        compute_disentanglement(Grid(), lambda x: x, ["mig", "no_such_metric"])


@pytest.mark.slow
def test_every_metric_runs_on_rendered_dsprites():
    ground_truth = DSpritesGroundTruth()  # renders on demand
    assert isinstance(check_ground_truth(ground_truth, "dsprites"), GroundTruth)
    projection = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))

    def pixels(images: torch.Tensor) -> torch.Tensor:  # (N, 1, 64, 64) -> (N, 10)
        return F.avg_pool2d(images, 8).flatten(start_dim=1) @ projection

    result = compute_disentanglement(ground_truth, pixels, num_train=100, num_eval=50)
    expected = {"beta_vae_score", "factor_vae_score", "mig", "dci_completeness", "sap", "modularity"}
    assert expected <= set(result) and all(np.isfinite(v) for v in result.values())
    assert 0 <= result["mig"] <= 1 and result["factor_vae_active_dims"] == 10


def test_mean_representation_uses_the_encoder_mean():
    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(2.0))

        def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [x.flatten(start_dim=1) * self.scale, torch.zeros(len(x), 4)]

    codes = mean_representation(Encoder())(torch.ones(3, 1, 2, 2))
    assert codes.shape == (3, 4) and torch.equal(codes, torch.full((3, 4), 2.0))
