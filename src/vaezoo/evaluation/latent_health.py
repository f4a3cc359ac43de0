"""How a model uses its latent space: KL per dimension, active units, codebook use."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vaezoo.nn.quantizers import codebook_perplexity, codebook_usage

ACTIVITY_THRESHOLD = 0.01  # Burda et al. 2016, Sec. 5.2


def activity(means: Tensor | np.ndarray) -> Tensor:
    """Per latent dimension, Cov_x(E_q[z|x]): the variance over inputs of the posterior means, (D,)."""
    means = torch.as_tensor(means, dtype=torch.float64).flatten(start_dim=1)  # (N, D)
    if means.shape[0] < 2:
        raise ValueError(f"activity needs the means of at least 2 inputs, got {means.shape[0]}")
    return means.var(dim=0, unbiased=True)


def active_units(means: Tensor | np.ndarray, threshold: float = ACTIVITY_THRESHOLD) -> dict[str, float]:
    """Active units (Burda et al. 2016, "Importance Weighted Autoencoders", Sec. 5.2).

    A dimension u is active when A_u = Cov_x(E_{q(u|x)}[u]) > ``threshold`` (0.01 in the paper):
    its posterior mean moves with the input. A collapsed dimension has q(u|x) = p(u) for every x.
    Returns ``active_units`` (count), ``latent_dims`` and ``active_fraction``.
    """
    variances = activity(means)
    count = int((variances > threshold).sum())
    return {"active_units": count, "latent_dims": len(variances), "active_fraction": count / len(variances)}


def kl_summary(kl_per_dim: Tensor) -> dict[str, float]:
    """From per-example, per-dimension KL (N, D): the total ``kl`` (nats per example, summed over
    dimensions) and how concentrated it is (``kl_max_dim_share``: share of the largest dimension)."""
    mean_kl = kl_per_dim.double().mean(dim=0)  # (D,)
    total = mean_kl.sum().item()
    return {"kl": total, "kl_max_dim_share": mean_kl.max().item() / total if total > 0 else 0.0}


def codebook_metrics(codes: Tensor, num_embeddings: int) -> dict[str, float]:
    """For VQ models, from the code indices chosen on a data set (any shape): ``codebook_perplexity``
    (exp of the entropy of code frequencies: K for uniform use, 1 for one code) and
    ``codebook_usage`` (share of the K codes used at least once)."""
    if codes.numel() == 0:
        raise ValueError("codebook metrics need at least one code index")
    if int(codes.min()) < 0 or int(codes.max()) >= num_embeddings:
        raise ValueError(
            f"code indices must lie in 0..{num_embeddings - 1}, got {int(codes.min())}..{int(codes.max())}"
        )
    return {
        "codebook_perplexity": codebook_perplexity(codes, num_embeddings).item(),
        "codebook_usage": codebook_usage(codes, num_embeddings).item(),
        "codebook_size": num_embeddings,
    }
