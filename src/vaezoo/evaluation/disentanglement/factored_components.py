"""Factored components: linearity, axis alignment and distance correlations of factor traversals
(Michlo 2021, disent's ``metric_factored_components``; github.com/nmichlo/disent and the MSc
research it names, github.com/nmichlo/msc-research).

Per traversal of factor k (codes (S_k, D), see :mod:`.flatness`), with values v sorted largest
first and normalised ratio ``(v_1 / sum v - 1/D) / (1 - 1/D)`` (0 when all are equal, 1 when one
holds everything):

- ``linearity_linear_ratio``: that ratio of the covariance's eigenvalues (how close to a line);
- ``linearity_axis_ratio``: that ratio of the per-dimension variances (how close to one axis);
- ``linearity_axis_alignment``: axis ratio over linear ratio;
- ``linearity_axis_ratio_ave``: the axis ratio of the variances averaged over the repeats.

Distances, each over ``num_samples`` random triplets (a, p, n) per traversal (``..._factor``,
ground-truth distance |i_a - i_p| along the traversal) or per random batch of
``global_subset_size`` observations (``..._global``, the L1 distance between factor classes),
against the codes' L1 or L2 distance: ``distances_rcorr_ground_latent_*`` (Spearman),
``distances_lcorr_ground_latent_*`` (Pearson) and ``distances_rsame_ground_latent_*`` (the share
of triplets whose order, a nearer p or n, both distances agree on).

Scores are averaged over the repeats, then over the factors with more than one value by the
geometric mean (disent's). Where disent gives NaN this gives 0: a traversal whose codes do not
move, a constant distance, and (in the geometric mean) a negative value. disent's distances to
the images are left out (they do not score the representation). Defaults as disent: 1024
repeats, 64 triplets, batches of 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr

from vaezoo.evaluation.disentanglement.common import (
    ENCODE_BATCH_SIZE,
    RepresentationFn,
    encode_factors,
    make_rng,
    sample_factors,
)
from vaezoo.evaluation.disentanglement.flatness import factor_traversals
from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth, check_ground_truth


def normalized_top_ratio(values: np.ndarray) -> float:
    """``(max / sum - 1/n) / (1 - 1/n)`` of n non-negative values; 0 if they sum to 0, 1 if n = 1."""
    n, total = len(values), float(np.sum(values))
    if n == 1:
        return 1.0
    if total <= 0:
        return 0.0
    return (float(np.max(values)) / total - 1 / n) / (1 - 1 / n)


def linearity_of_traversal(codes: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(axis ratio, linear ratio, per-dimension variances (D,)) of one traversal (S, D)."""
    variances = codes.var(axis=0, ddof=1)
    eigenvalues = np.abs(np.linalg.eigvalsh(np.atleast_2d(np.cov(codes, rowvar=False))))
    return normalized_top_ratio(variances), normalized_top_ratio(eigenvalues), variances


def linearity_from_traversals(traversals: np.ndarray) -> dict[str, float]:
    """The four linearity scores of one factor's traversals (R, S, D), averaged over the R repeats."""
    axis, linear, variances = zip(*(linearity_of_traversal(codes) for codes in traversals), strict=True)
    alignment = np.array(axis) / (np.array(linear) + 1e-20)
    return {
        "linearity_axis_ratio": float(np.mean(axis)),
        "linearity_linear_ratio": float(np.mean(linear)),
        "linearity_axis_alignment": float(np.mean(alignment)),
        "linearity_axis_ratio_ave": normalized_top_ratio(np.mean(variances, axis=0)),
    }


def _correlation(fn: object, x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(fn(x, y)[0])  # type: ignore[operator]


def distance_scores(ground: np.ndarray, latent: np.ndarray, suffix: str) -> dict[str, float]:
    """Scores of triplet distances (T, 2) (columns: anchor-p, anchor-n), ground truth against codes."""
    order = np.sign(ground[:, 0] - ground[:, 1]) == np.sign(latent[:, 0] - latent[:, 1])
    x, y = ground.ravel(order="F"), latent.ravel(order="F")
    return {
        f"distances_rsame_ground_latent_{suffix}": float(order.mean()),
        f"distances_rcorr_ground_latent_{suffix}": _correlation(spearmanr, x, y),
        f"distances_lcorr_ground_latent_{suffix}": _correlation(pearsonr, x, y),
    }


def triplet_distances(
    ground_points: np.ndarray, codes: np.ndarray, num_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L1 ground-truth and L1, L2 code distances (T, 2) of ``num_samples`` random triplets of rows."""
    a, p, n = rng.integers(0, len(codes), size=(3, num_samples))
    pairs = np.stack([p, n], axis=1)  # (T, 2)
    ground = np.abs(ground_points[a][:, None] - ground_points[pairs]).sum(axis=-1)
    diff = codes[a][:, None] - codes[pairs]  # (T, 2, D)
    return ground, np.abs(diff).sum(axis=-1), np.sqrt((diff**2).sum(axis=-1))


def _all_distance_scores(triplets: Sequence[tuple[np.ndarray, ...]], where: str) -> dict[str, float]:
    ground, l1, l2 = (np.concatenate(parts) for parts in zip(*triplets, strict=True))
    return distance_scores(ground, l1, f"l1_{where}") | distance_scores(ground, l2, f"l2_{where}")


def _geometric_mean(values: Sequence[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    return 0.0 if (array <= 0).any() else float(np.exp(np.log(array).mean()))


def factored_components_from_traversals(
    traversals: Sequence[np.ndarray],
    num_samples: int = 64,
    random_state: int | np.random.Generator | None = 0,
) -> dict[str, float]:
    """Linearity and along-factor distance scores of one array of traversals (R, S_k, D) per factor."""
    rng = make_rng(random_state)
    per_factor = []
    for t in traversals:
        if t.shape[1] < 2:
            continue
        steps = np.arange(t.shape[1], dtype=np.float64)[:, None]  # position along the traversal
        triplets = [triplet_distances(steps, codes, num_samples, rng) for codes in t]
        per_factor.append(linearity_from_traversals(t) | _all_distance_scores(triplets, "factor"))
    if not per_factor:
        raise ValueError("factored components need a factor with at least 2 values")
    return {key: _geometric_mean([scores[key] for scores in per_factor]) for key in per_factor[0]}


def factored_components(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    repeats: int = 1024,
    num_samples: int = 64,
    global_subset_size: int = 32,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """Linearity, axis alignment and ground-truth distance correlations (disent's defaults)."""
    check_ground_truth(ground_truth)
    rng = make_rng(random_state)
    traversals = [
        factor_traversals(ground_truth, representation_fn, k, repeats, rng, encode_batch_size)
        for k in range(len(ground_truth.factor_sizes))
    ]
    factors = sample_factors(ground_truth, repeats * global_subset_size, rng)
    codes = encode_factors(ground_truth, representation_fn, factors, rng, encode_batch_size)
    batches = zip(np.split(factors.astype(np.float64), repeats), np.split(codes, repeats), strict=True)
    triplets = [triplet_distances(f, z, num_samples, rng) for f, z in batches]
    return factored_components_from_traversals(traversals, num_samples, rng) | _all_distance_scores(
        triplets, "global"
    )
