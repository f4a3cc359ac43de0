"""UDR, Unsupervised Disentanglement Ranking (Duan, Matthey, Saraiva, Watters, Burgess, Lerchner &
Higgins 2020, "Unsupervised Model Selection for Variational Disentangled Representation
Learning", ICLR), across models trained on the same data, as disentanglement_lib's ``udr_sklearn``.

All models encode the same observations. Each model's codes are standardised and its dimensions
with a mean KL(q(z_d|x) || p(z_d)) of at most ``kl_threshold`` (0.01) zeroed and dropped. For an
ordered pair (i, j) the similarity matrix R[a, b] between dimension a of model i and b of model j
is the absolute Lasso coefficient (alpha 0.1) of predicting model j's codes from model i's
(``correlation="lasso"``, dlib's default) or the absolute Spearman correlation
(``"spearman"``, the paper's UDR_S). Its relative strength (Sec. 3 of the paper)

    (mean_b max_a R[a, b]^2 / sum_a R[a, b] + mean_a max_b R[a, b]^2 / sum_b R[a, b]) / 2

is 1 when R matches dimensions one-to-one (the models agree up to permutation and sign) and near
0 for unrelated codes; a column or row summing to 0 counts 0, and no active dimension scores 0.
A model's score is the median over the other models j of the pair (j, i). dlib zeroes
dimensions at a fixed KL of 0.01 and drops them at its ``kl_filter_threshold``; here one
``kl_threshold`` does both (the same at the default). dlib binds the sample size by gin; here
``num_train`` is 10,000 observations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.linear_model import Lasso

from vaezoo.evaluation.disentanglement.common import (
    ENCODE_BATCH_SIZE,
    RepresentationFn,
    as_codes,
    make_rng,
    sample_factors,
)
from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth, TableGroundTruth, check_ground_truth

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

CORRELATIONS = ("lasso", "spearman")
KLFn = Callable[[torch.Tensor], "np.ndarray | torch.Tensor"]  # images (N, C, H, W) -> KL per dim (N, D)


class UDRResult(NamedTuple):
    model_scores: np.ndarray  # (M,) median pairwise score of each model
    pairwise: np.ndarray  # (M, M) relative strength of each ordered pair, 0 on the diagonal


def spearman_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Spearman correlation| (Da, Db) between the columns of a (N, Da) and b (N, Db); 0 for a constant one."""
    ranks = [rankdata(x, axis=0) for x in (a, b)]
    centred = [r - r.mean(axis=0) for r in ranks]
    norms = [np.sqrt((c**2).sum(axis=0)) for c in centred]
    outer = np.outer(*norms)
    return np.abs(np.divide(centred[0].T @ centred[1], outer, out=np.zeros_like(outer), where=outer > 0))


def lasso_matrix(a: np.ndarray, b: np.ndarray, random_state: int = 0) -> np.ndarray:
    """|Lasso coefficients| (Da, Db) of predicting b (N, Db) from a (N, Da), alpha 0.1 (dlib's)."""
    model = Lasso(alpha=0.1, random_state=random_state).fit(a, b)
    return np.abs(np.atleast_2d(model.coef_)).T


def relative_strength(matrix: np.ndarray) -> float:
    """UDR's relative strength of a similarity matrix (Da, Db): the mean of its column and row scores."""
    if matrix.size == 0:
        return 0.0

    def side(m: np.ndarray) -> float:  # over the columns of m
        total = m.sum(axis=0)
        return float(np.mean(np.divide(m.max(axis=0) ** 2, total, out=np.zeros_like(total), where=total > 0)))

    return (side(matrix) + side(matrix.T)) / 2


def _standardize(codes: np.ndarray) -> np.ndarray:
    scale = codes.std(axis=0)
    return (codes - codes.mean(axis=0)) / np.where(scale > 0, scale, 1.0)


def udr_from_codes(
    codes: Sequence[np.ndarray],
    kls: Sequence[np.ndarray] | None = None,
    *,
    correlation: str = "lasso",
    kl_threshold: float = 0.01,
    random_state: int = 0,
) -> UDRResult:
    """UDR of M >= 2 models' codes (N, D_i) of the same N observations, with their mean KL per
    dimension (D_i,) (None: every dimension is active)."""
    if correlation not in CORRELATIONS:
        raise ValueError(f"correlation must be one of {CORRELATIONS}, got {correlation!r}")
    if len(codes) < 2:
        raise ValueError(f"UDR compares models: it needs at least 2 representations, got {len(codes)}")
    if len({len(c) for c in codes}) != 1:
        raise ValueError(f"every model's codes must have the same N rows, got {[c.shape for c in codes]}")
    kls = [np.full(c.shape[1], np.inf) for c in codes] if kls is None else list(kls)
    if [np.shape(k) for k in kls] != [(c.shape[1],) for c in codes]:
        raise ValueError("kls must hold one mean KL per code dimension (D_i,) for each model")
    active = [np.asarray(k) > kl_threshold for k in kls]
    reps = [
        _standardize(np.asarray(c, dtype=np.float64)) * mask for c, mask in zip(codes, active, strict=True)
    ]
    m = len(reps)
    pairwise = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            if correlation == "lasso":
                matrix = lasso_matrix(reps[i], reps[j], random_state)
            else:
                matrix = spearman_matrix(reps[i], reps[j])
            pairwise[i, j] = relative_strength(matrix[active[i]][:, active[j]])
    scores = np.array([np.median(np.delete(pairwise[:, i], i)) for i in range(m)])
    return UDRResult(scores, pairwise)


def udr(
    ground_truth: GroundTruth,
    representation_fns: Sequence[RepresentationFn],
    kl_fns: Sequence[KLFn] | None = None,
    *,
    num_train: int = 10_000,
    correlation: str = "lasso",
    kl_threshold: float = 0.01,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> UDRResult:
    """UDR of the models ``representation_fns`` (with ``kl_fns``: per-point KL per dimension) on
    ``num_train`` random observations shared by all of them. The ground truth only supplies images."""
    check_ground_truth(ground_truth)
    if num_train < 2:
        raise ValueError(f"num_train must be at least 2, got {num_train}")
    if kl_fns is not None and len(kl_fns) != len(representation_fns):
        raise ValueError(f"got {len(kl_fns)} kl_fns for {len(representation_fns)} representation_fns")
    rng = make_rng(random_state)
    factors = sample_factors(ground_truth, num_train, rng)
    fns: list[Callable[..., np.ndarray | torch.Tensor]] = [*representation_fns, *(kl_fns or [])]
    outputs: list[list[np.ndarray]] = [[] for _ in fns]
    with torch.no_grad():
        for start in range(0, num_train, encode_batch_size):
            classes = factors[start : start + encode_batch_size]
            if isinstance(ground_truth, TableGroundTruth):
                images = ground_truth.images_from_factors(classes, rng)
            else:
                images = ground_truth.images_from_factors(classes)
            for out, fn in zip(outputs, fns, strict=True):
                out.append(as_codes(fn(images), len(classes)))
    arrays = [np.concatenate(out) for out in outputs]
    m = len(representation_fns)
    kls = [a.mean(axis=0) for a in arrays[m:]] if kl_fns is not None else None
    return udr_from_codes(
        arrays[:m], kls, correlation=correlation, kl_threshold=kl_threshold, random_state=random_state
    )


def model_representation_and_kl(model: BaseVAE) -> tuple[RepresentationFn, KLFn]:
    """A trained model's ``embed`` codes and ``kl_per_dimension`` (in eval mode, on its device) for
    :func:`udr`; a model without a per-dimension KL (no posterior) keeps every dimension."""
    if model.is_conditional:
        raise ValueError(f"{type(model).__name__} is conditional: UDR encodes observations without labels")
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device

    def represent(images: torch.Tensor) -> torch.Tensor:
        return model.embed(images.to(device)).flatten(start_dim=1)

    def kl(images: torch.Tensor) -> torch.Tensor:
        try:
            return model.kl_per_dimension(images.to(device))
        except NotImplementedError:  # no posterior: count every dimension as informative
            return torch.ones_like(represent(images))

    return represent, kl
