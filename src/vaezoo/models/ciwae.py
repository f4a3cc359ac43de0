"""The combination importance weighted autoencoder of Rainforth et al. (ICML 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from vaezoo.losses.importance import multi_sample_bound
from vaezoo.models.iwae import IWAE
from vaezoo.registry import register_model


@register_model
class CIWAE(IWAE):
    """Combination importance weighted autoencoder (Rainforth et al. 2018, "Tighter Variational
    Bounds are Not Necessarily Better", Sec. 4).

    The convex combination of the ELBO and the IWAE-K bound, both on the same K samples::

        CIWAE_beta = beta * (1/K) sum_k log w_k + (1 - beta) * log (1/K) sum_k w_k
        loss       = -mean_batch CIWAE_beta

    with the IWAE's log-weights (see :class:`IWAE`, ``M_N`` weighs log p(z) - log q(z|x)). beta = 1
    is the ELBO averaged over K samples (a VAE with K samples), beta = 0 the IWAE-K; in between,
    the ELBO's part restores the encoder's gradient signal that the IWAE loses as K grows. Both
    are lower bounds on log p(x), so their combination is one. Loss keys: the IWAE's (``ELBO`` is
    the first term's bound).

    Signature: ``(in_channels, latent_dim, hidden_dims, num_samples, beta)``, then VanillaVAE's
    keyword-only arguments.
    """

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        num_samples: int = 5,
        beta: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, num_samples, **kwargs)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta weighs a convex combination, so it must be in [0, 1], got {beta}")
        self.beta = beta

    def bound(self, log_w: Tensor) -> Tensor:
        elbo = log_w.mean(dim=-1)  # (B,)
        iwae = multi_sample_bound(log_w)  # (B,)
        return self.beta * elbo + (1.0 - self.beta) * iwae
