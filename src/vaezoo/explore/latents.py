"""The explorer's sliders: one per latent dimension, sorted by KL, collapsed ones marked, and for data
with ground-truth factors each latent's affinity to every factor.

Pure functions of codes, KLs and factors (arrays in, plain values out), so they are tested on
constructed cases without a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaezoo.evaluation.disentanglement.common import factor_entropy, histogram_discretize, mutual_info_matrix
from vaezoo.evaluation.latent_health import ACTIVITY_THRESHOLD, activity

COLLAPSED_KL = 0.01  # nats: a dimension whose mean KL is below this carries (almost) no information
AFFINITY_BINS = 20  # MIG's discretisation (Chen et al. 2018; disentanglement_lib's default)


@dataclass(frozen=True)
class Slider:
    """One latent dimension as a slider: moving it by ``v`` adds ``v * unit`` to that latent."""

    rank: int  # position in the KL order (0: the most informative)
    dim: int  # index into the model's flattened code
    unit: float  # the latent's spread over the data (its std); a typical active one's when collapsed
    kl: float | None  # mean KL(q(z_d|x) || p(z_d)) in nats; None when the model defines none
    activity: float  # Cov_x(E_q[z_d|x]) (Burda et al. 2016, Sec. 5.2)
    collapsed: bool  # KL below COLLAPSED_KL (or, without a KL, activity below 0.01)
    affinity: dict[str, float] | None  # factor -> I(z_d; factor) / H(factor); None without factors

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def factor_affinity(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(z_d; v_k) / H(v_k) for codes (N, D) and factor values (N, F): (D, F) in [0, 1].

    The normalised mutual information MIG is built from (Chen et al. 2018, Eq. 5), estimated as
    disentanglement_lib does (codes in 20 equal-width bins, plug-in counts). A factor that does not
    vary in the sample gets 0 for every latent.
    """
    info = mutual_info_matrix(histogram_discretize(codes, AFFINITY_BINS), factors)  # (D, F)
    entropy = factor_entropy(factors)  # (F,)
    return np.divide(info, entropy[None, :], out=np.zeros_like(info), where=entropy[None, :] > 0)


def build_sliders(
    codes: Tensor,
    kl: Tensor | None = None,
    factors: Tensor | np.ndarray | None = None,
    factor_names: list[str] | None = None,
    max_sliders: int = 64,
) -> list[Slider]:
    """Sliders for the latent dimensions of ``codes`` (N, D), most informative first, at most ``max_sliders``.

    ``kl`` (D,): the mean KL per dimension orders them (without it, their activity does). ``factors``
    (N, F) with ``factor_names``: the ground-truth factors of the same N inputs, for the affinities.
    """
    codes = codes.detach().double().cpu().flatten(start_dim=1)  # (N, D)
    spread = activity(codes)  # (D,)
    if kl is not None:
        kl = torch.as_tensor(kl, dtype=torch.float64).flatten()
        if kl.numel() != codes.shape[1]:
            raise ValueError(f"kl has {kl.numel()} values for codes of {codes.shape[1]} dimensions")
        score, collapsed = kl, kl < COLLAPSED_KL
    else:
        score, collapsed = spread, spread < ACTIVITY_THRESHOLD
    std = spread.sqrt()
    # A collapsed latent moves by a typical active latent's spread, so dragging it shows that nothing changes.
    typical = float(std[~collapsed].median()) if (~collapsed).any() else 1.0
    unit = torch.where(collapsed | (std <= 0), torch.full_like(std, typical or 1.0), std)
    affinity = None
    if factors is not None:
        names = list(factor_names or [f"factor_{k}" for k in range(np.asarray(factors).shape[1])])
        affinity = factor_affinity(codes.numpy(), np.asarray(factors))  # (D, F)
    order = torch.argsort(score, descending=True, stable=True).tolist()[:max_sliders]
    return [
        Slider(
            rank=rank,
            dim=dim,
            unit=float(unit[dim]),
            kl=None if kl is None else float(kl[dim]),
            activity=float(spread[dim]),
            collapsed=bool(collapsed[dim]),
            affinity=None if affinity is None else dict(zip(names, map(float, affinity[dim]), strict=True)),
        )
        for rank, dim in enumerate(order)
    ]
