"""UDR, flatness and factored components: known answers on constructed codes, one run on a grid.

Traversals are built by hand as disent samples them: other factors random, one factor walked
through all its values in order.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vaezoo.cli import build_parser
from vaezoo.evaluation.disentanglement import (
    DISENTANGLEMENT_METRICS,
    OPT_IN_METRICS,
    MissingFactorsError,
    TableGroundTruth,
    compute_disentanglement,
    factored_components_from_traversals,
    flatness_from_traversals,
    linearity_from_traversals,
    relative_strength,
    udr,
    udr_from_codes,
)
from vaezoo.evaluation.disentanglement.udr import spearman_matrix
from vaezoo.evaluation.training_metrics import DISENTANGLEMENT_GROUPS, disentanglement_sizes

SIZES = (5, 8, 1)  # the last factor has one value: every score leaves it out


def traversals(embed, repeats: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Codes (repeats, S_k, D) of traversals of each factor, the codes being ``embed(factors)``."""
    rng = np.random.default_rng(seed)
    out = []
    for k, size in enumerate(SIZES):
        factors = np.repeat(rng.integers(0, SIZES, size=(repeats, 1, len(SIZES))), size, axis=1)
        factors[:, :, k] = np.arange(size)
        out.append(embed(factors.astype(np.float64)))
    return out


def rotation(angle: float) -> np.ndarray:
    return np.array(
        [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]]
    )


# ---------------------------------------------------------------- UDR


def test_relative_strength_of_one_to_one_uniform_and_empty_matrices():
    assert relative_strength(np.eye(4)[[2, 0, 3, 1]]) == 1.0
    # all equal: max^2 / sum = 1/4 per column and row
    assert relative_strength(np.ones((4, 4))) == pytest.approx(0.25)
    # column 0 holds (1, 1): 1/2, column 1 holds (0, 0): 0; rows (1, 0): 1 each
    assert relative_strength(np.array([[1.0, 0.0], [1.0, 0.0]])) == pytest.approx((0.25 + 1.0) / 2)
    assert relative_strength(np.zeros((0, 3))) == 0.0


def test_spearman_matrix_is_rank_invariant_and_zero_for_a_constant_column():
    z = np.random.default_rng(0).normal(size=(500, 2))
    other = np.c_[np.exp(z[:, 1]), -(z[:, 0] ** 3), np.ones(500)]
    matrix = spearman_matrix(z, other)
    assert matrix.shape == (2, 3)
    assert matrix[0, 1] == pytest.approx(1.0) and matrix[1, 0] == pytest.approx(1.0)
    assert matrix[0, 0] < 0.15 and np.all(matrix[:, 2] == 0.0)


def test_udr_of_permuted_and_flipped_copies_is_high_of_independent_codes_near_zero():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 5))
    copies = [z, z[:, [2, 0, 1, 4, 3]] * [1, -1, 1, -1, 3], -z[:, ::-1]]
    lasso = udr_from_codes(copies)
    # standardised codes: Lasso(alpha=0.1) shrinks each matched coefficient to 0.9 and the rest to 0
    assert lasso.model_scores == pytest.approx([0.9] * 3, abs=1e-3)
    assert np.all(np.diag(lasso.pairwise) == 0)
    assert np.all(udr_from_codes(copies, correlation="spearman").model_scores > 0.9)
    independent = [rng.normal(size=(2000, 5)) for _ in range(3)]
    assert np.all(udr_from_codes(independent).model_scores == 0.0)
    assert np.all(udr_from_codes(independent, correlation="spearman").model_scores < 0.05)


def test_udr_drops_low_kl_dimensions_and_takes_the_median_over_pairs():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2000, 3))
    noisy = np.c_[z[:, :2], rng.normal(size=2000)]  # its third dimension is unrelated...
    kls = [np.array([1.0, 1.0, 0.001]), np.array([1.0, 1.0, 0.005])]  # ...but inactive in both
    filtered = udr_from_codes([z, noisy], kls, correlation="spearman")
    unfiltered = udr_from_codes([z, noisy], correlation="spearman")
    assert filtered.model_scores == pytest.approx([1.0, 1.0], abs=0.05)
    assert np.all(unfiltered.model_scores < filtered.model_scores - 0.1)
    # four models: the copies of z score the median of (high, high, low) = high
    scores = udr_from_codes([z, z[:, ::-1], -z, rng.normal(size=(2000, 3))]).model_scores
    assert np.all(scores[:3] == pytest.approx(0.9, abs=1e-3)) and scores[3] == 0.0


def test_udr_rejects_bad_input_with_clear_errors():
    z = np.zeros((10, 2))
    with pytest.raises(ValueError, match="at least 2 representations"):
        udr_from_codes([z])
    with pytest.raises(ValueError, match="correlation must be one of"):
        udr_from_codes([z, z], correlation="pearson")
    with pytest.raises(ValueError, match="same N rows"):
        udr_from_codes([z, z[:5]])
    with pytest.raises(ValueError, match="one mean KL per code dimension"):
        udr_from_codes([z, z], [np.ones(2), np.ones(3)])


class Grid:
    """Every combination of 3 x 4 x 5 values; the observation of factors is the factors as floats."""

    factor_names = ("a", "b", "c")
    factor_sizes = (3, 4, 5)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.factor_sizes, size=(n, 3))

    def images_from_factors(self, classes: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(classes, dtype=torch.float32)


def test_udr_on_a_ground_truth_encodes_the_same_observations_for_every_model():
    def kl(x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x)

    noise = np.random.default_rng(0).normal(size=(3, 3))
    models = [lambda x: x, lambda x: -2 * x[:, [1, 2, 0]], lambda x: x @ torch.as_tensor(noise).float()]
    result = udr(Grid(), models, [kl, kl, kl], num_train=1000)
    assert result.pairwise.shape == (3, 3)
    assert result.pairwise[0, 1] == pytest.approx(0.9, abs=1e-3)
    assert result.pairwise[0, 1] > result.pairwise[0, 2]
    with pytest.raises(ValueError, match="2 kl_fns for 3"):
        udr(Grid(), models, [kl, kl])


# ---------------------------------------------------------------- flatness


def test_flatness_of_straight_axis_aligned_diagonal_and_curved_traversals():
    axis = flatness_from_traversals(traversals(lambda f: 2.0 * f))
    assert axis["flatness"] == pytest.approx(1.0) and axis["flatness_l2"] == pytest.approx(1.0)
    # factor sizes 5, 8: widths 2 * 4 and 2 * 7 in either norm
    assert axis["flatness_width_l2"] == pytest.approx(11.0) and axis["flatness_length_l1"] == pytest.approx(
        11.0
    )
    diagonal = flatness_from_traversals(traversals(lambda f: f @ rotation(math.pi / 4).T))
    assert diagonal["flatness"] == pytest.approx(1 / math.sqrt(2))  # L2 width over L1 length
    assert diagonal["flatness_l1"] == pytest.approx(1.0) and diagonal["flatness_l2"] == pytest.approx(1.0)

    def circle(f: np.ndarray) -> np.ndarray:  # each factor walks once around a unit circle
        angle = 2 * math.pi * f / np.array(SIZES)
        return np.concatenate([np.cos(angle), np.sin(angle)], axis=-1)

    curved = flatness_from_traversals(traversals(circle))
    # a closed regular S-gon: width ~ diameter 2, length (S - 1) sides of 2 sin(pi / S)
    expected_8 = 2 / (7 * 2 * math.sin(math.pi / 8))
    assert curved["flatness_l2"] < 0.5 and curved["flatness_l2"] == pytest.approx(
        (2 * math.sin(2 * math.pi / 5) / (4 * 2 * math.sin(math.pi / 5)) + expected_8) / 2
    )
    constant = flatness_from_traversals(traversals(lambda f: np.zeros_like(f)))
    assert constant["flatness"] == 0.0


def test_flatness_needs_a_factor_with_two_values_and_a_full_grid():
    with pytest.raises(ValueError, match="at least 2 values"):
        flatness_from_traversals([np.zeros((4, 1, 3))])
    table = TableGroundTruth(torch.zeros(2, 1, 2, 2), np.array([[0, 0], [1, 1]]), ("a", "b"))
    with pytest.raises(MissingFactorsError, match="full grid"):
        compute_disentanglement(table, lambda x: x.flatten(1), "flatness")


# ---------------------------------------------------------------- factored components


def test_linearity_of_axis_aligned_rotated_and_noisy_traversals():
    axis = factored_components_from_traversals(traversals(lambda f: 3.0 * f))
    for key in ("axis_ratio", "linear_ratio", "axis_alignment", "axis_ratio_ave"):
        assert axis[f"linearity_{key}"] == pytest.approx(1.0)
    rotated = factored_components_from_traversals(traversals(lambda f: f @ rotation(math.pi / 4).T))
    assert rotated["linearity_linear_ratio"] == pytest.approx(1.0)
    # variances split evenly over 2 of 3 axes: (1/2 - 1/3) / (1 - 1/3) = 1/4
    assert rotated["linearity_axis_ratio"] == pytest.approx(0.25)
    assert rotated["linearity_axis_alignment"] == pytest.approx(0.25)
    # isotropic noise: no direction dominates
    noise = np.random.default_rng(0).normal(size=(64, 50, 3))
    noisy = linearity_from_traversals(noise)
    assert noisy["linearity_linear_ratio"] < 0.35 and noisy["linearity_axis_ratio_ave"] < 0.05


def test_ground_truth_distance_correlations_of_faithful_and_scrambled_codes():
    faithful = factored_components_from_traversals(traversals(lambda f: 2.0 * f), num_samples=200)
    for norm in ("l1", "l2"):
        for score in ("rsame", "rcorr", "lcorr"):
            assert faithful[f"distances_{score}_ground_latent_{norm}_factor"] == pytest.approx(1.0)
    scramble = np.random.default_rng(0).permutation(8)  # codes in shuffled order along factor 1

    def shuffled(f: np.ndarray) -> np.ndarray:
        codes = f.copy()
        codes[..., 1] = scramble[f[..., 1].astype(int)]
        return codes

    mixed = factored_components_from_traversals(traversals(shuffled), num_samples=200)
    assert mixed["distances_rcorr_ground_latent_l2_factor"] < 0.9


def test_the_two_metrics_run_through_compute_disentanglement_the_cli_and_training_groups():
    names = ["flatness", "factored_components"]
    assert set(names) <= set(DISENTANGLEMENT_METRICS) and set(names) <= set(OPT_IN_METRICS)
    assert set(names) <= set(DISENTANGLEMENT_GROUPS)
    assert disentanglement_sizes("flatness", 640) == {"repeats": 10}
    result = compute_disentanglement(Grid(), lambda x: x * 2 + 1, names)
    assert result["flatness"] == pytest.approx(1.0) and result["linearity_axis_ratio"] == pytest.approx(1.0)
    assert result["distances_rcorr_ground_latent_l1_global"] > 0.95
    args = build_parser().parse_args(["evaluate", "run", "--disentanglement-metrics", *names])
    assert args.disentanglement_metrics == names


# ---------------------------------------------------------------- vaezoo udr


@pytest.mark.slow
def test_vaezoo_udr_ranks_two_tiny_runs_and_writes_json(tmp_path, capsys):
    from pathlib import Path

    from vaezoo.cli import main

    repo = Path(__file__).resolve().parents[1]
    tiny = [
        "--model.hidden_dims", "[8, 16, 32]", "--model.latent_dim", "4", "--data.image_size", "32",
        "--data.subset", "600", "--train.batch_size", "16", "--train.max_epochs", "1",
        "--train.limit_train_batches", "4", "--train.limit_val_batches", "1", "--logging.progress_bar", "none",
    ]  # fmt: skip
    for seed in (0, 1):
        args = ["train", "-c", str(repo / "configs/vae.yaml"), *tiny, "--train.seed", str(seed)]
        assert main([*args, "--logging.save_dir", str(tmp_path / f"runs{seed}")]) == 0
    runs = [str(next((tmp_path / f"runs{seed}").glob("*/version_*"))) for seed in (0, 1)]
    out = tmp_path / "udr.json"
    assert main(["udr", *runs, "--points", "200", "-o", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert [row["run"] for row in summary["runs"]] == runs
    assert all(0.0 <= row["udr"] <= 1.0 for row in summary["runs"])
    assert np.array(summary["pairwise"]).shape == (2, 2)
    assert main(["udr", *runs, "-o", str(out)]) == 2  # an existing output is kept
    assert "exists" in capsys.readouterr().err
    assert main(["udr", runs[0], "-o", str(tmp_path / "one.json")]) == 2


@pytest.mark.slow
def test_a_benchmark_suite_with_udr_scores_its_entries_against_each_other(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    import yaml

    from vaezoo.cli import main
    from vaezoo.config import ConfigError
    from vaezoo.evaluation.benchmark import load_suite

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    small = {"model.hidden_dims": [8, 16, 32], "model.latent_dim": 3}
    suite = {
        "name": "udr",
        "output": str(tmp_path / "results"),
        "data": {"name": "dsprites", "subset": 400, "image_size": 32},
        "train": {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 1, "batch_size": 16},
        "logging": {"progress_bar": "none"},
        "evaluate": {"metrics": ["latent"], "fid_samples": 0},
        "udr": {"points": 200, "correlation": "spearman"},
        "models": [
            {"label": "VAE", "config": "configs/vae.yaml", "overrides": small},
            {"label": "BetaVAE", "config": "configs/bbvae.yaml", "overrides": small},
        ],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert main(["benchmark", "-c", str(path)]) == 0
    rows = json.loads((tmp_path / "results" / "results.json").read_text())["rows"]
    scores = [rows[slug]["metrics"]["disentanglement/udr"] for slug in ("VAE", "BetaVAE")]
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert "UDR" in (tmp_path / "results" / "results.md").read_text()
    # A run that is gone drops out of the set, and no row keeps a score from the old set.
    (Path(rows["VAE"]["run_dir"]) / "checkpoints" / "last.ckpt").unlink()
    capsys.readouterr()
    assert main(["benchmark", "-c", str(path)]) == 0
    assert "UDR leaves out VAE" in capsys.readouterr().out
    rows = json.loads((tmp_path / "results" / "results.json").read_text())["rows"]
    assert not any("disentanglement/udr" in rows[slug]["metrics"] for slug in ("VAE", "BetaVAE"))
    path.write_text(yaml.safe_dump({**suite, "udr": {"pionts": 10}}))
    with pytest.raises(ConfigError, match="udr must be a mapping"):
        load_suite(path)
