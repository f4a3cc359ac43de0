"""A Gaussian mixture on the latents: the ex-post density estimation of Ghosh et al. 2020."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaezoo.evaluation.samplers.base import LatentSampler, register_sampler

COVARIANCE_TYPES = ("auto", "full", "tied", "diag", "spherical")
# "auto": full covariances up to this many code dimensions, diagonal ones beyond. Ghosh et al. fit
# full covariances to latents of 16 to 128 dimensions; VQVAE's flattened 16x16 maps of 16-vectors
# have 4,096, where a full covariance costs K * M^2 = 168 M numbers (1.3 GB), each EM iteration
# ~K * N * M^2 = 1.7e12 multiply-adds on 10,000 codes, and 10,000 codes cannot determine it anyway.
FULL_COVARIANCE_MAX_DIMS = 128


def covariance_for(covariance_type: str, dims: int) -> str:
    """The covariance type a mixture on ``dims``-dimensional codes is fitted with ("auto" resolved)."""
    if covariance_type != "auto":
        return covariance_type
    return "full" if dims <= FULL_COVARIANCE_MAX_DIMS else "diag"


@register_sampler
class GaussianMixtureSampler(LatentSampler):
    """A Gaussian mixture fitted by EM (scikit-learn's ``GaussianMixture``) on the latents: the
    ex-post density estimation of Ghosh et al. 2020, Sec. 4.

    Sampling is done here in torch from the fitted weights, means and covariance factors, so it is
    reproducible from a seed and the saved state is tensors only. ``full`` covariances cost
    K * M^2 numbers and ~K * N * M^2 operations per EM iteration; ``"auto"`` (the default) uses them
    up to ``FULL_COVARIANCE_MAX_DIMS`` code dimensions and ``diag`` (K * N * M) for larger flattened
    codes such as VQVAE's maps. ``progress`` prints scikit-learn's EM progress every 10 iterations.
    """

    name = "gmm"
    summary = "a Gaussian mixture fitted on training latents"

    def __init__(
        self,
        num_components: int = 10,
        covariance_type: str = "auto",
        random_state: int = 0,
        max_iter: int = 100,
        reg_covar: float = 1e-6,
        progress: bool = False,
    ) -> None:
        super().__init__()
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type '{covariance_type}' is not one of {COVARIANCE_TYPES}")
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        self.num_components, self.covariance_type = num_components, covariance_type
        self.random_state, self.max_iter, self.reg_covar = random_state, max_iter, reg_covar
        self.progress = progress
        self.fitted_covariance_type: str | None = None  # covariance_type with "auto" resolved, after fit

    def describe(self, dims: int) -> str:
        kind = covariance_for(self.covariance_type, dims)
        return f"{self.num_components} components, {kind} covariances"

    def config(self) -> dict[str, Any]:
        return {
            "num_components": self.num_components,
            "covariance_type": self.covariance_type,
            "random_state": self.random_state,
            "max_iter": self.max_iter,
            "reg_covar": self.reg_covar,
        }

    def _fit(self, flat: Tensor) -> None:
        from sklearn.mixture import GaussianMixture  # imported on use: scikit-learn is slow to import

        if flat.shape[0] < self.num_components:
            raise ValueError(f"cannot fit {self.num_components} components to {flat.shape[0]} codes")
        kind = covariance_for(self.covariance_type, flat.shape[1])
        mixture = GaussianMixture(
            self.num_components,
            covariance_type=kind,
            random_state=self.random_state,
            max_iter=self.max_iter,
            reg_covar=self.reg_covar,
            verbose=2 if self.progress else 0,
            verbose_interval=10,
        ).fit(flat.numpy())
        self.weights = torch.from_numpy(mixture.weights_)  # (K,)
        self.means = torch.from_numpy(mixture.means_)  # (K, M)
        self.scale = mixture_scale(mixture.covariances_, kind, self.means.shape)
        self.fitted_covariance_type = kind

    def _sample(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        components = torch.multinomial(self.weights, num_samples, replacement=True, generator=generator)
        eps = torch.randn(num_samples, self.means.shape[1], generator=generator, dtype=torch.float64)
        z = torch.empty_like(eps)  # (n, M)
        for k in components.unique().tolist():  # per component: no (n, M, M) gather of the factors
            rows = components == k
            if self.scale.dim() == 2:  # diagonal: standard deviations (K, M)
                z[rows] = self.means[k] + eps[rows] * self.scale[k]
            else:  # Cholesky factors L (K, M, M), cov = L L^T
                z[rows] = self.means[k] + eps[rows] @ self.scale[k].T
        return z

    def _state(self) -> dict[str, Tensor]:
        return {"weights": self.weights, "means": self.means, "scale": self.scale}

    def _load_state(self, state: dict[str, Tensor]) -> None:
        self.weights, self.means, self.scale = state["weights"], state["means"], state["scale"]


def mixture_scale(covariances: np.ndarray, covariance_type: str, means_shape: torch.Size) -> Tensor:
    """scikit-learn's ``covariances_`` -> std devs (K, M) for diag / spherical, Cholesky factors
    (K, M, M) for full / tied."""
    num_components, dims = means_shape
    cov = torch.from_numpy(np.asarray(covariances, dtype=np.float64))
    if covariance_type == "spherical":  # (K,)
        return cov.sqrt()[:, None].expand(num_components, dims).contiguous()
    if covariance_type == "diag":  # (K, M)
        return cov.sqrt()
    if covariance_type == "tied":  # (M, M), shared
        cov = cov.expand(num_components, dims, dims)
    return torch.linalg.cholesky(cov).contiguous()  # (K, M, M)
