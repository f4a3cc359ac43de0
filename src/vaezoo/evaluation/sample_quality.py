"""Sample quality from feature vectors: FID, KID and precision / recall, plus the extraction driver.

- FID (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to real and generated features,
  ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})  (Dowson & Landau 1982).
- KID (Bińkowski et al. 2018, "Demystifying MMD GANs"): the unbiased MMD^2 with the kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets.
- Improved precision / recall (Kynkäänniemi et al. 2019, Sec. 2): each set's manifold is the union of
  balls reaching every feature's k-th nearest neighbour; precision is the fraction of generated features in
  the real manifold, recall the fraction of real features in the generated one.

The metrics are pure functions of (N, F) arrays; :func:`compute_sample_quality` extracts Inception
features (see :mod:`vaezoo.evaluation.inception`) and calls them.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from vaezoo.evaluation.inception import (
    FeatureExtractor,
    ImageSource,
    cached_features,
    extract_features,
    load_inception,
)


def _as_features(features: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    """(N, F) float64 array with at least ``min_rows`` rows, or ValueError naming ``name``."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or len(array) < min_rows:
        raise ValueError(f"{name} must be (N, F) features with N >= {min_rows}, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and unbiased covariance (F, F) of features (N, F)."""
    features = _as_features(features, "features")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """Tr((S1 S2)^{1/2}) with scipy's sqrtm; adds ``eps`` to both diagonals when that fails."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(root).all():
        warnings.warn(
            f"sqrtm(S1 S2) is not finite (singular product); adding {eps} to the diagonals", stacklevel=3
        )
        offset = eps * np.eye(len(sigma1))
        root = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    # S1 S2 has real non-negative eigenvalues; an imaginary part can only be round-off.
    diagonal = np.diagonal(root)
    imaginary = np.abs(diagonal.imag).max()
    if imaginary > 1e-3 * max(1.0, np.abs(diagonal.real).max()):
        raise ValueError(f"sqrtm(S1 S2) has a large imaginary part {imaginary:.3g}: are S1, S2 covariances?")
    return float(diagonal.real.sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mu1, S1) and N(mu2, S2):
    ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2})  (Dowson & Landau 1982; Heusel et al. 2017).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    dim = len(mu1)
    if mu1.shape != (dim,) or mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"expected means (D,) and covariances (D, D) of one D, got {mu1.shape}, "
            f"{sigma1.shape}, {mu2.shape}, {sigma2.shape}"
        )
    diff = mu1 - mu2
    trace_root = _trace_sqrt_product(sigma1, sigma2, eps)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


def _frechet_distance_gram(real: np.ndarray, fake: np.ndarray) -> float:
    """The Fréchet distance of the fitted Gaussians through the (Nr, Nf) cross-Gram matrix.

    With centred A (Nr, F) and B (Nf, F) scaled so S1 = A'A, S2 = B'B, the non-zero eigenvalues of S1 S2
    are those of (A B')(A B')', so Tr((S1 S2)^{1/2}) is the nuclear norm of A B'. Exact for singular
    covariances (N <= F) and cheaper than sqrtm of (F, F) there.
    """
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    a = (real - mu1) / np.sqrt(len(real) - 1)  # (Nr, F)
    b = (fake - mu2) / np.sqrt(len(fake) - 1)  # (Nf, F)
    trace_root = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * trace_root)


def fid_from_features(real: np.ndarray, fake: np.ndarray, method: str = "auto") -> float:
    """FID between real (Nr, F) and generated (Nf, F) features (Heusel et al. 2017).

    ``method``: "sqrtm" (statistics + :func:`frechet_distance`), "gram" (exact cross-Gram route), or
    "auto": "gram" when min(Nr, Nf) <= F, where the covariances are singular, else "sqrtm".
    """
    real, fake = _as_features(real, "real features"), _as_features(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in width: {real.shape[1]} vs {fake.shape[1]}")
    if method not in ("auto", "sqrtm", "gram"):
        raise ValueError(f"method must be 'auto', 'sqrtm' or 'gram', got {method!r}")
    if method == "gram" or (method == "auto" and min(len(real), len(fake)) <= real.shape[1]):
        return _frechet_distance_gram(real, fake)
    return frechet_distance(*gaussian_statistics(real), *gaussian_statistics(fake))


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(a, b) = (a.b / d + 1)^3 for rows of a (m, d) and b (n, d) -> (m, n) (Bińkowski et al. 2018)."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _unbiased_mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012) from the kernel blocks (m, m) of two equal-size sets."""
    m = len(k_xx)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.mean())


# Up to this many features per side, the kernel matrices are computed once (<= 100 MB) and indexed.
_KERNEL_CACHE_ROWS = 2048


def kid_from_features(
    real: np.ndarray, fake: np.ndarray, num_subsets: int = 100, subset_size: int = 1000, random_state: int = 0
) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased MMD^2 over ``num_subsets`` random subsets
    (drawn without replacement) of real and fake features (Bińkowski et al. 2018).

    ``subset_size`` is clipped to the smaller sample count. Up to 2048 features per side the three
    kernel matrices are computed once; beyond, each subset costs three (m, m) kernel products.
    """
    real, fake = _as_features(real, "real features"), _as_features(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in width: {real.shape[1]} vs {fake.shape[1]}")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"need num_subsets >= 1 and subset_size >= 2, got {num_subsets} and {subset_size}")
    size = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(random_state)
    subsets = [
        (rng.choice(len(real), size, replace=False), rng.choice(len(fake), size, replace=False))
        for _ in range(num_subsets)
    ]
    if max(len(real), len(fake)) <= _KERNEL_CACHE_ROWS:
        k_xx, k_yy = _polynomial_kernel(real, real), _polynomial_kernel(fake, fake)
        k_xy = _polynomial_kernel(real, fake)
        blocks = ((k_xx[np.ix_(i, i)], k_yy[np.ix_(j, j)], k_xy[np.ix_(i, j)]) for i, j in subsets)
    else:
        pairs = ((real[i], fake[j]) for i, j in subsets)
        blocks = (
            (_polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)) for x, y in pairs
        )
    values = [_unbiased_mmd2(*block) for block in blocks]
    return float(np.mean(values)), float(np.std(values))


def _knn_radii(features: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Distance (N,) from every feature (N, F) to its k-th nearest other feature, in row chunks."""
    radii = [
        torch.cdist(chunk, features).kthvalue(k + 1, dim=1).values  # +1: the point itself is at 0
        for chunk in features.split(batch_size)
    ]
    return torch.cat(radii)


def _inside_fraction(
    points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_size: int
) -> float:
    """Fraction of points (P, F) within radii (M,) of at least one of centres (M, F)."""
    inside = sum(
        int((torch.cdist(chunk, centres) <= radii).any(dim=1).sum()) for chunk in points.split(batch_size)
    )
    return inside / len(points)


def precision_recall_from_features(
    real: np.ndarray, fake: np.ndarray, k: int = 3, batch_size: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, Sec. 2) with k-NN radii (they use k = 3).

    Distances are computed in float64, ``batch_size`` rows at a time, so memory is (batch_size, N).
    """
    real = _as_features(real, "real features", min_rows=k + 1)
    fake = _as_features(fake, "fake features", min_rows=k + 1)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in width: {real.shape[1]} vs {fake.shape[1]}")
    if k < 1 or batch_size < 1:
        raise ValueError(f"need k >= 1 and batch_size >= 1, got {k} and {batch_size}")
    real_t, fake_t = torch.from_numpy(real), torch.from_numpy(fake)
    precision = _inside_fraction(fake_t, real_t, _knn_radii(real_t, k, batch_size), batch_size)
    recall = _inside_fraction(real_t, fake_t, _knn_radii(fake_t, k, batch_size), batch_size)
    return precision, recall


def sample_quality(
    real_features: np.ndarray,
    fake_features: np.ndarray,
    k: int = 3,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    random_state: int = 0,
) -> dict[str, float]:
    """FID, KID (mean and std over subsets), precision and recall of fake against real features."""
    kid, kid_std = kid_from_features(real_features, fake_features, kid_subsets, kid_subset_size, random_state)
    precision, recall = precision_recall_from_features(real_features, fake_features, k=k)
    return {
        "fid": fid_from_features(real_features, fake_features),
        "kid": kid,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
    }


def compute_sample_quality(
    real_images_or_batches: ImageSource,
    generate_fn: ImageSource,
    num_samples: int,
    extractor: FeatureExtractor | None = None,
    inception_path: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    value_range: tuple[float, float] = (0.0, 1.0),
    device: str = "cpu",
    k: int = 3,
    random_state: int = 0,
    cache_real: bool = False,
) -> dict[str, float]:
    """:func:`sample_quality` of ``num_samples`` generated images against ``num_samples`` real ones.

    ``generate_fn(n) -> (n, C, H, W)`` is streamed in batches (a tensor or iterable of batches works too);
    real images come as a tensor or an iterable of batches (e.g. a DataLoader). ``extractor`` defaults to
    :func:`~vaezoo.evaluation.inception.load_inception` (``inception_path``, ``value_range``, ``device``).
    The result adds "num_samples", "feature_seconds" (wall time of both extractions, sampling included)
    and "images_per_second" (2 * num_samples / feature_seconds). FID from fewer than 2048 samples per
    side is exact (see :func:`fid_from_features`) but biased upwards; compare scores at one sample count.
    ``cache_real``: real images given as a tensor have their features kept on disk for the next call
    with the same images and weights (:func:`~vaezoo.evaluation.inception.cached_features`).
    """
    if extractor is None:
        extractor = load_inception(inception_path, value_range=value_range, device=device)
    start = time.perf_counter()
    if cache_real and isinstance(real_images_or_batches, torch.Tensor):
        if len(real_images_or_batches) < num_samples:
            raise ValueError(f"asked for {num_samples} real images, the tensor holds fewer")
        real = cached_features(
            real_images_or_batches[:num_samples], extractor, batch_size, progress, "real images"
        )
    else:
        real = extract_features(
            real_images_or_batches, extractor, num_samples, batch_size, progress, "real images"
        )
    fake = extract_features(generate_fn, extractor, num_samples, batch_size, progress, "generated images")
    seconds = time.perf_counter() - start
    metrics = sample_quality(real, fake, k=k, random_state=random_state)
    timing = {"feature_seconds": seconds, "images_per_second": 2 * num_samples / max(seconds, 1e-9)}
    return {**metrics, "num_samples": float(num_samples), **timing}
