"""The multiply importance weighted autoencoder of Rainforth et al. (ICML 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vaezoo.models.iwae import IWAE
from vaezoo.registry import register_model


@register_model
class MIWAE(IWAE):
    """Multiply importance weighted autoencoder (Rainforth et al. 2018, "Tighter Variational Bounds
    are Not Necessarily Better", Sec. 4).

    M x K latent samples per input; the objective averages M independent IWAE-K bounds::

        loss = -mean_batch (1/M) sum_m log (1/K) sum_k w_{m,k}

    with the IWAE's log-weights (see :class:`IWAE`). M = 1 is the IWAE-K, K = 1 the ELBO averaged
    over M samples; between the two it trades the bound's tightness for a better signal-to-noise
    ratio of the encoder's gradient. ``z`` and ``all_recons`` hold the M*K samples with the K of
    one group next to each other: ``z.view(B, M, K, D)``. Loss keys as the IWAE's.

    Signature: PyTorch-VAE's ``(in_channels, latent_dim, hidden_dims, num_samples, num_estimates)``
    (PyTorch-VAE's default num_estimates is 5, vaezoo's 3), then VanillaVAE's keyword-only arguments.
    """

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        num_samples: int = 5,
        num_estimates: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, num_samples, **kwargs)
        if num_estimates < 1:
            raise ValueError(f"num_estimates must be at least 1, got {num_estimates}")
        self.num_estimates = num_estimates
