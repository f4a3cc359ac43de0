"""Flatness of factor traversals (Michlo 2021, disent's ``metric_flatness``; N. J. Michlo, "Disent -
modular disentangled representation learning framework for PyTorch", github.com/nmichlo/disent,
and the MSc research it names, github.com/nmichlo/msc-research).

A traversal fixes every factor but one at random values and walks the remaining factor k through
all its S_k values in order. In the codes it has a width (the largest distance between two of its
points) and a length (S_k - 1 times the mean step between neighbours, the longest step of the
closed loop left out: that is the wrap-around from the last value to the first). A straight,
evenly spaced traversal has width = length; a curved or back-tracking one is shorter in width.
Per factor both are averaged over ``repeats`` traversals, and the score is the mean of width over
length over the factors with more than one value (a factor whose codes do not move scores 0).

``flatness`` (disent's ``ave_flatness``) measures the width with the L2 norm and the length with
the L1 norm, so it also rewards axis alignment: a straight traversal along a diagonal of d axes
scores ``1 / sqrt(d)``. ``flatness_l1`` and ``flatness_l2`` use one norm for both. As disent:
1024 repeats per factor. Traversals need every combination of factors: a table ground truth
raises MissingFactorsError (``vaezoo evaluate`` reports the metric as not applicable).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.distance import pdist

from vaezoo.evaluation.disentanglement.common import (
    ENCODE_BATCH_SIZE,
    RepresentationFn,
    encode_factors,
    make_rng,
    sample_factors,
)
from vaezoo.evaluation.disentanglement.ground_truth import (
    GroundTruth,
    MissingFactorsError,
    check_ground_truth,
)


def factor_traversals(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    factor: int,
    repeats: int,
    rng: np.random.Generator,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> np.ndarray:
    """Codes (repeats, S_k, D) of ``repeats`` traversals of ``factor`` (disent's
    ``sample_random_factor_traversal``): other factors random, ``factor`` = 0 .. S_k - 1 in order."""
    if hasattr(ground_truth, "sample_factors_matching"):
        raise MissingFactorsError(
            "factor traversals need every combination of factors (a full grid); this ground truth is a table"
        )
    if repeats < 1:
        raise ValueError(f"repeats must be positive, got {repeats}")
    size = int(ground_truth.factor_sizes[factor])
    factors = np.repeat(sample_factors(ground_truth, repeats, rng), size, axis=0)  # (R * S, F)
    factors[:, factor] = np.tile(np.arange(size), repeats)
    codes = encode_factors(ground_truth, representation_fn, factors, rng, encode_batch_size)
    return codes.reshape(repeats, size, -1)


def all_factor_traversals(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    repeats: int,
    random_state: int | np.random.Generator | None,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> list[np.ndarray]:
    """``factor_traversals`` of every factor, in order, from one seeded generator."""
    check_ground_truth(ground_truth)
    rng = make_rng(random_state)
    return [
        factor_traversals(ground_truth, representation_fn, k, repeats, rng, encode_batch_size)
        for k in range(len(ground_truth.factor_sizes))
    ]


def traversal_width_and_step(traversals: np.ndarray, p: int) -> tuple[float, float]:
    """Mean width and mean neighbour step (longest step of the loop left out) of traversals
    (R, S, D) under the L_p norm; (0, 0) for S = 1."""
    if traversals.shape[1] < 2:
        return 0.0, 0.0
    widths = [pdist(points, "minkowski", p=p).max() for points in traversals]
    steps = np.linalg.norm(np.roll(traversals, -1, axis=1) - traversals, ord=p, axis=-1)  # (R, S)
    return float(np.mean(widths)), float(np.sort(steps, axis=1)[:, :-1].mean())


def _ratio(widths: np.ndarray, lengths: np.ndarray) -> float:
    return float(np.mean(np.divide(widths, lengths, out=np.zeros_like(widths), where=lengths > 0)))


def flatness_from_traversals(traversals: Sequence[np.ndarray]) -> dict[str, float]:
    """The flatness scores of one array of traversals (R, S_k, D) per factor k."""
    sizes = np.array([t.shape[1] for t in traversals])
    active = sizes > 1
    if not active.any():
        raise ValueError(f"flatness needs a factor with at least 2 values, got factor sizes {sizes.tolist()}")
    widths, lengths = {}, {}
    for p in (1, 2):
        measures = np.array([traversal_width_and_step(t, p) for t in traversals])  # (F, 2)
        widths[p], lengths[p] = measures[active, 0], (sizes[active] - 1) * measures[active, 1]
    return {
        "flatness": _ratio(widths[2], lengths[1]),
        "flatness_l1": _ratio(widths[1], lengths[1]),
        "flatness_l2": _ratio(widths[2], lengths[2]),
        "flatness_width_l1": float(widths[1].mean()),
        "flatness_width_l2": float(widths[2].mean()),
        "flatness_length_l1": float(lengths[1].mean()),
        "flatness_length_l2": float(lengths[2].mean()),
    }


def flatness(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    repeats: int = 1024,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """The flatness scores of ``repeats`` traversals of each factor (disent's defaults)."""
    return flatness_from_traversals(
        all_factor_traversals(ground_truth, representation_fn, repeats, random_state, encode_batch_size)
    )
