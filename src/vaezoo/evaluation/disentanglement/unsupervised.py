"""Unsupervised scores of a representation's statistics (Locatello et al. 2019, "Challenging Common
Assumptions in the Unsupervised Learning of Disentangled Representations", ICML).

They use the codes only (the factors just drive the sampling), as disentanglement_lib's
``unsupervised_metrics`` on 10,000 points:

- ``gaussian_total_correlation``: KL(N(0, S) || N(0, diag S)) for the codes' covariance S,
  ``(sum log S_dd - log det S) / 2``;
- ``gaussian_wasserstein_correlation``: the squared 2-Wasserstein distance between the same two
  Gaussians, ``2 tr S - 2 tr (diag(S)^1/2 S diag(S)^1/2)^1/2``, and ``..._norm``, that over tr S;
- ``mutual_info_score``: the mean over ordered pairs of distinct dimensions of the plug-in mutual
  information of the codes cut into 20 equal-width bins (0 for a single dimension).

A constant dimension makes S singular: the total correlation is then infinite, as in
disentanglement_lib.
"""

from __future__ import annotations

import numpy as np

from vaezoo.evaluation.disentanglement.common import (
    ENCODE_BATCH_SIZE,
    RepresentationFn,
    histogram_discretize,
    mutual_info_matrix,
    seeded_batch,
)
from vaezoo.evaluation.disentanglement.ground_truth import GroundTruth


def gaussian_total_correlation(cov: np.ndarray) -> float:
    """KL divergence in nats between N(0, cov) and the product of its marginals."""
    with np.errstate(divide="ignore"):
        return float(0.5 * (np.log(np.diag(cov)).sum() - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
    """Squared 2-Wasserstein distance between N(0, cov) and the product of its marginals."""
    scale = np.sqrt(np.diag(cov))
    eigenvalues = np.linalg.eigvalsh(scale[:, None] * cov * scale[None, :])
    return float(2 * np.trace(cov) - 2 * np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def mutual_info_score(codes: np.ndarray, num_bins: int = 20) -> float:
    """Mean plug-in mutual information between distinct discretised code dimensions, in nats."""
    d = codes.shape[1]
    if d < 2:
        return 0.0
    discrete = histogram_discretize(codes, num_bins)
    info = mutual_info_matrix(discrete, discrete)
    np.fill_diagonal(info, 0.0)
    return float(info.sum() / (d * d - d))


def unsupervised_from_codes(codes: np.ndarray, num_bins: int = 20) -> dict[str, float]:
    """The four unsupervised scores of codes (N, D)."""
    cov = np.atleast_2d(np.cov(codes, rowvar=False))
    wasserstein = gaussian_wasserstein_correlation(cov)
    return {
        "gaussian_total_correlation": gaussian_total_correlation(cov),
        "gaussian_wasserstein_correlation": wasserstein,
        "gaussian_wasserstein_correlation_norm": wasserstein / float(np.trace(cov)),
        "mutual_info_score": mutual_info_score(codes, num_bins),
    }


def unsupervised_scores(
    ground_truth: GroundTruth,
    representation_fn: RepresentationFn,
    *,
    num_train: int = 10_000,
    num_bins: int = 20,
    random_state: int = 0,
    encode_batch_size: int = ENCODE_BATCH_SIZE,
) -> dict[str, float]:
    """The unsupervised scores of ``num_train`` random observations (disentanglement_lib defaults)."""
    codes, _ = seeded_batch(ground_truth, representation_fn, num_train, random_state, encode_batch_size)
    return unsupervised_from_codes(codes, num_bins)
