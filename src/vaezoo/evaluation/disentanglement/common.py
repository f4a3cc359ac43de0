"""Sampling codes from a ground truth and the discrete information measures the metrics share.

Conventions (as disentanglement_lib, but samples in rows): ``codes`` are ``(N, D)`` float64 and
``factors`` ``(N, F)`` int64 classes. Every metric draws from one ``np.random.Generator`` seeded by
its ``random_state``; all factors of a call are sampled before any observation is encoded, so
``encode_batch_size`` (how many observations go through ``representation_fn`` at once) changes
speed and memory only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth, TableGroundTruth, check_ground_truth

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

RepresentationFn = Callable[[torch.Tensor], "np.ndarray | torch.Tensor"]  # images (N, C, H, W) -> (N, D)
ENCODE_BATCH_SIZE = 256


def make_rng(random_state: int | np.random.Generator | None) -> np.random.Generator:
    return np.random.default_rng(random_state)


def sample_factors(
    ground_truth: GroundTruth,
    n: int,
    rng: np.random.Generator,
    fixed_factor: int | np.ndarray | None = None,
    fixed_values: np.ndarray | None = None,
) -> np.ndarray:
    """(n, F) int64 factor classes; row i has factor ``fixed_factor[i]`` set to ``fixed_values[i]``.

    A full grid (every combination exists) samples all factors and overwrites the fixed one; a
    ground truth with ``sample_factors_matching`` (a table) draws rows that already have the value.
    """
    if fixed_factor is None:
        return np.asarray(ground_truth.sample_factors(n, rng), dtype=np.int64)
    fixed = np.broadcast_to(np.asarray(fixed_factor, dtype=np.int64), (n,))
    values = np.asarray(fixed_values, dtype=np.int64)
    if not hasattr(ground_truth, "sample_factors_matching"):
        factors = np.array(ground_truth.sample_factors(n, rng), dtype=np.int64)
        factors[np.arange(n), fixed] = values
        return factors
    factors = np.empty((n, len(ground_truth.factor_sizes)), dtype=np.int64)
    for k in np.unique(fixed):
        rows = np.flatnonzero(fixed == k)
        factors[rows] = ground_truth.sample_factors_matching(int(k), values[rows], rng)
    return factors


def as_codes(output: np.ndarray | torch.Tensor, n: int) -> np.ndarray:
    """A representation function's output as (n, D) float64; a clear error if it is not that."""
    if isinstance(output, torch.Tensor):
        output = output.detach().cpu().double().numpy()
    codes = np.asarray(output, dtype=np.float64)
    if codes.ndim != 2 or len(codes) != n:
        raise ValueError(f"representation_fn must return codes shaped (N, D) = ({n}, D), got {codes.shape}")
    if not np.isfinite(codes).all():
        raise ValueError("representation_fn returned non-finite codes (NaN or inf)")
    return codes


def encode_factors(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    factors: np.ndarray,
    rng: np.random.Generator,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> np.ndarray:
    """Codes (N, D) of the observations of ``factors`` (N, F), ``encode_batch_size`` at a time."""
    chunks = []
    with torch.no_grad():
        for start in range(0, len(factors), encode_batch_size):
            classes = factors[start : start + encode_batch_size]
            if isinstance(ground_truth, TableGroundTruth):
                images = ground_truth.images_from_factors(classes, rng)
            else:
                images = ground_truth.images_from_factors(classes)
            chunks.append(as_codes(representation_fn(images), len(classes)))
    return np.concatenate(chunks)


def generate_batch(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    num_points: int,
    rng: np.random.Generator,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_points`` random observations: (codes (N, D) float64, factors (N, F) int64)."""
    if num_points < 1:
        raise ValueError(f"num_points must be positive, got {num_points}")
    factors = sample_factors(ground_truth, num_points, rng)
    return encode_factors(ground_truth, representation_fn, factors, rng, encode_batch_size), factors


def seeded_batch(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    num_points: int,
    random_state: int | np.random.Generator | None,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """The (codes, factors) of one sample drawn with a seeded generator after checking the ground
    truth: what every metric on a single sample starts from."""
    check_ground_truth(ground_truth)
    return generate_batch(
        ground_truth, representation_fn, num_points, make_rng(random_state), encode_batch_size
    )


def train_test_batches(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    num_train: int,
    num_test: int,
    random_state: int | np.random.Generator | None,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The (codes, factors) of a training and then a test sample, drawn with one seeded generator
    after checking the ground truth: what every train/test metric starts from."""
    check_ground_truth(ground_truth)
    rng = make_rng(random_state)
    train = generate_batch(ground_truth, representation_fn, num_train, rng, encode_batch_size)
    test = generate_batch(ground_truth, representation_fn, num_test, rng, encode_batch_size)
    return train, test


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each code dimension cut into ``num_bins`` equal-width bins over its range, (N, D) int64 in
    ``0 .. num_bins - 1`` (disentanglement_lib's histogram discretizer, minus one)."""
    codes = np.asarray(codes, dtype=np.float64)
    bins = np.empty(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, d], bins=num_bins)
        bins[:, d] = np.digitize(codes[:, d], edges[1:-1])
    return bins


def _relabel(columns: np.ndarray) -> tuple[np.ndarray, int]:
    """Columns of (N, K) labels -> consecutive labels 0 .. L_k - 1 per column and max L_k."""
    out = np.empty(columns.shape, dtype=np.int64)
    for k in range(columns.shape[1]):
        out[:, k] = np.unique(columns[:, k], return_inverse=True)[1].reshape(-1)
    return out, int(out.max()) + 1 if out.size else 1


def mutual_info_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Plug-in mutual information I(code_d; factor_k) in nats from joint counts, (D, F).

    The estimate of ``sklearn.metrics.mutual_info_score`` per pair, one bincount per factor.
    """
    a, size_a = _relabel(np.asarray(discrete_codes))  # (N, D)
    b, size_b = _relabel(np.asarray(factors))  # (N, F)
    n, d = a.shape
    offsets = np.arange(d)[None, :] * size_a  # each code dimension gets its own block of counts
    info = np.empty((d, b.shape[1]))
    for k in range(b.shape[1]):
        joint_index = (offsets + a) * size_b + b[:, k : k + 1]  # (N, D)
        joint = np.bincount(joint_index.ravel(), minlength=d * size_a * size_b)
        joint = joint.reshape(d, size_a, size_b) / n  # p(code bin, factor class) per code dimension
        p_a, p_b = joint.sum(axis=2, keepdims=True), joint.sum(axis=1, keepdims=True)
        ratio = np.divide(joint, p_a * p_b, out=np.ones_like(joint), where=joint > 0)
        info[:, k] = (joint * np.log(ratio)).sum(axis=(1, 2))
    return np.maximum(info, 0.0)


def factor_entropy(factors: np.ndarray) -> np.ndarray:
    """Plug-in entropy H(factor_k) in nats, (F,)."""
    labels, size = _relabel(np.asarray(factors))
    counts = np.stack([np.bincount(labels[:, k], minlength=size) for k in range(labels.shape[1])])
    p = counts / len(labels)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)


def mean_representation(model: BaseVAE, device: torch.device | str | None = None) -> RepresentationFn:
    """The representation disentanglement_lib scores by default: the posterior mean ``encode(x)[0]``.

    The caller puts the model in eval mode; images are moved to ``device`` (default: the model's).
    """
    if device is None:
        device = next(model.parameters(), torch.empty(0)).device

    def represent(images: torch.Tensor) -> torch.Tensor:
        return model.encode(images.to(device))[0].flatten(start_dim=1)

    return represent


class MemoizedCodes:
    """A (ground truth, representation) pair that encodes each combination of factors only once.

    The metrics draw ~3 million observations at disentanglement_lib's defaults, most of them
    repeats of dSprites' 737,280 combinations. For a deterministic representation (the mean) the
    scores are the same (up to the float rounding of encoders that depend on the batch) for at most
    one encoder pass per combination, which ``encoded`` counts. Use ``.ground_truth`` and
    ``.representation_fn`` in place of the originals. On a table, a combination found in several
    rows keeps the code of its first row.
    """

    def __init__(
        self, ground_truth: GroundTruth, representation_fn: RepresentationFn, max_cells: int = 50_000_000
    ):
        self.inner, self.fn = ground_truth, representation_fn
        self.sizes = tuple(int(s) for s in ground_truth.factor_sizes)
        cells = int(np.prod(self.sizes, dtype=np.float64))
        if cells > max_cells:
            raise ValueError(f"{cells} factor combinations are too many to memoize (max_cells={max_cells})")
        self.codes: np.ndarray | None = None  # (cells, D), allocated once D is known
        self.known = np.zeros(cells, dtype=bool)
        self.encoded = 0  # how many observations went through representation_fn
        self.ground_truth = _FactorsAsImages(self)

    def representation_fn(self, classes: torch.Tensor) -> np.ndarray:
        """Codes of (N, F) classes (the "images" of ``self.ground_truth``), encoding only new ones."""
        factors = classes.numpy()
        keys = np.ravel_multi_index(tuple(factors.T), self.sizes)
        new_keys, first = np.unique(keys[~self.known[keys]], return_index=True)
        if len(new_keys):
            new_classes = factors[~self.known[keys]][first]
            codes = as_codes(self.fn(self.inner.images_from_factors(new_classes)), len(new_keys))
            if self.codes is None:
                self.codes = np.zeros((len(self.known), codes.shape[1]))
            self.codes[new_keys], self.known[new_keys] = codes, True
            self.encoded += len(new_keys)
        if self.codes is None:  # nothing encoded yet, so the code dimension D is unknown
            raise ValueError("MemoizedCodes.representation_fn: the first call got no factor classes")
        return self.codes[keys]


class _FactorsAsImages:
    """The ground truth of a MemoizedCodes: its "images" are the factor classes themselves."""

    def __init__(self, memo: MemoizedCodes) -> None:
        self.memo = memo
        self.factor_names, self.factor_sizes = memo.inner.factor_names, memo.inner.factor_sizes
        if hasattr(memo.inner, "sample_factors_matching"):
            self.sample_factors_matching = memo.inner.sample_factors_matching

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.memo.inner.sample_factors(n, rng)

    def images_from_factors(self, classes: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(classes, dtype=np.int64))
