"""The ground-truth interface the disentanglement metrics sample from.

A ground truth has discrete factors of variation (factor ``k`` takes the classes ``0 .. size_k - 1``)
and can show the observations of any factor classes. ``vaezoo.data.dsprites.DSpritesGroundTruth`` is
one (every combination exists: it renders them); ``TableGroundTruth`` wraps any labelled table of
observations, where only the combinations present in the table can be looked up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

# The datasets of vaezoo whose data module exposes a ground truth (``datamodule.ground_truth``).
# arrays: a .npz with factors on a complete grid (vaezoo.data.arrays); the published grids Shapes3D,
# MPI3D, SmallNORB and Cars3D (vaezoo.data.shapes3d, mpi3d, smallnorb, cars3d)
DATASETS_WITH_FACTORS: tuple[str, ...] = ("dsprites", "arrays", "shapes3d", "mpi3d", "smallnorb", "cars3d")
REQUIRED_MEMBERS: tuple[str, ...] = ("factor_names", "factor_sizes", "sample_factors", "images_from_factors")


class MissingFactorsError(ValueError):
    """Disentanglement metrics were asked of data (or an object) that has no ground-truth factors."""


@runtime_checkable
class GroundTruth(Protocol):
    """Discrete factors of variation and the observations they generate.

    ``sample_factors(n, rng)`` returns ``(n, F)`` int64 classes drawn from the data distribution;
    ``images_from_factors(classes)`` returns the ``(N, C, H, W)`` observations of ``(N, F)`` classes.
    """

    factor_names: Sequence[str]
    factor_sizes: Sequence[int]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def images_from_factors(self, classes: np.ndarray) -> torch.Tensor: ...


def check_ground_truth(obj: Any, source_name: str | None = None) -> GroundTruth:
    """``obj`` if it is a usable ground truth; else a MissingFactorsError saying what is missing."""
    where = f"data '{source_name}'" if source_name else "the data"
    datasets = ", ".join(DATASETS_WITH_FACTORS)
    if obj is None:
        raise MissingFactorsError(
            f"disentanglement metrics need ground-truth factors; {where} has none "
            f"(datasets with factors: {datasets}; for labelled arrays use TableGroundTruth(images, factors))"
        )
    missing = [name for name in REQUIRED_MEMBERS if not hasattr(obj, name)]
    if missing:
        raise MissingFactorsError(
            f"disentanglement metrics need ground-truth factors; {type(obj).__name__} of {where} lacks "
            f"{', '.join(missing)} (a ground truth has factor_names, factor_sizes, sample_factors(n, rng) "
            f"and images_from_factors(classes); datasets with factors: {datasets})"
        )
    names, sizes = list(obj.factor_names), [int(s) for s in obj.factor_sizes]
    if not sizes or len(names) != len(sizes) or min(sizes) < 1:
        raise MissingFactorsError(
            f"{type(obj).__name__} of {where} has factor_names {names} and factor_sizes {sizes}; "
            "expected one positive size per name and at least one factor"
        )
    return obj


def _int_matrix(factors: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    array = factors.cpu().numpy() if isinstance(factors, torch.Tensor) else np.asarray(factors)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer) or (array.size and array.min() < 0):
        raise ValueError(
            f"{what} must be a non-negative integer array shaped (N, F), got {array.dtype} {array.shape}"
        )
    return array.astype(np.int64, copy=False)


class TableGroundTruth:
    """A ground truth over a table of observations with integer factor labels.

    Factors are sampled as the rows of the table (its empirical distribution, which is the uniform
    distribution of disentanglement_lib when the table holds the full grid once). Fixing a factor
    samples only rows with that class. Observations of a combination found in several rows are
    drawn at random among them when an ``rng`` is given, else the first such row is used.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        factors: np.ndarray | torch.Tensor,
        factor_names: Sequence[str] | None = None,
    ) -> None:
        self.factors = _int_matrix(factors, "factors")  # (N, F)
        self.images = torch.as_tensor(images)  # (N, C, H, W) as the encoder takes them (dtype kept)
        n, num_factors = self.factors.shape
        if n == 0 or len(self.images) != n:
            got = f"{len(self.images)} images and {n} rows"
            raise ValueError(f"a TableGroundTruth needs as many images as factor rows (> 0), got {got}")
        self.factor_names = tuple(factor_names or (f"factor_{k}" for k in range(num_factors)))
        if len(self.factor_names) != num_factors:
            raise ValueError(f"{len(self.factor_names)} factor_names for {num_factors} factor columns")
        self.factor_sizes = tuple(int(size) for size in self.factors.max(axis=0) + 1)
        keys = self._keys(self.factors)
        self._rows_by_key = np.argsort(keys, kind="stable")  # rows sorted by their combination
        self._sorted_keys = keys[self._rows_by_key]
        self._rows_by_factor = np.argsort(self.factors, axis=0, kind="stable")  # (N, F)

    def _keys(self, classes: np.ndarray) -> np.ndarray:
        """One int64 key per combination of classes (mixed radix over ``factor_sizes``)."""
        return np.ravel_multi_index(tuple(classes.T), self.factor_sizes).astype(np.int64)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The factors of ``n`` rows drawn uniformly from the table, (n, F) int64."""
        return self.factors[rng.integers(0, len(self.factors), size=n)]

    def sample_factors_matching(
        self, factor: int, values: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """For each value, the factors of a random row whose factor ``factor`` has that class, (n, F)."""
        values = np.asarray(values, dtype=np.int64)
        order = self._rows_by_factor[:, factor]
        column = self.factors[order, factor]  # sorted
        first, end = np.searchsorted(column, values, "left"), np.searchsorted(column, values, "right")
        if (end == first).any():
            value = values[end == first][0]
            raise ValueError(f"no row of the table has factor '{self.factor_names[factor]}' = {value}")
        offsets = np.floor(rng.random(len(values)) * (end - first)).astype(np.int64)
        return self.factors[order[first + offsets]]

    def rows_of(self, classes: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Row indices of the observations of (N, F) classes; a ValueError names any absent combination."""
        classes = _int_matrix(classes, "classes")
        if classes.shape[1] != len(self.factor_sizes) or (classes >= np.array(self.factor_sizes)).any():
            raise ValueError(
                f"classes must be shaped (N, {len(self.factor_sizes)}) below factor_sizes {self.factor_sizes}"
            )
        keys = self._keys(classes)
        first = np.searchsorted(self._sorted_keys, keys, "left")
        end = np.searchsorted(self._sorted_keys, keys, "right")
        if (end == first).any():
            raise ValueError(f"no observation in the table has factors {classes[end == first][0].tolist()}")
        if rng is None:
            return self._rows_by_key[first]
        return self._rows_by_key[first + np.floor(rng.random(len(keys)) * (end - first)).astype(np.int64)]

    def images_from_factors(
        self, classes: np.ndarray, rng: np.random.Generator | None = None
    ) -> torch.Tensor:
        """The observations of (N, F) classes, as stored in the table."""
        return self.images[torch.from_numpy(self.rows_of(classes, rng))]
