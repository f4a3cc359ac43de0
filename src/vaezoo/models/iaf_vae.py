"""The VAE with an inverse autoregressive flow posterior of Kingma et al. (NeurIPS 2016)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vaezoo.arguments import require_positive
from vaezoo.models.flow_vae import FlowPosteriorVAE
from vaezoo.nn.flows import inverse_autoregressive_flow
from vaezoo.registry import register_model


@register_model(aliases=("VAE_IAF",))
class IAFVAE(FlowPosteriorVAE):
    """VAE with an inverse autoregressive flow posterior (Kingma et al. 2016, "Improved Variational
    Inference with Inverse Autoregressive Flow", Eq. 10-14 and Algorithm 1; pythae's VAE_IAF).

    The encoder gives mu, sigma and a context h; z_0 = mu + sigma * eps, then ``num_iaf_steps``
    steps, each with its own MADE (Germain et al. 2015) of ``made_hidden_dims`` reading z and h::

        [m, s] = MADE_t(z_{t-1}, h),  sigma_t = sigmoid(s),  z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m
        log q(z_T|x) = log q0(z_0|x) - sum_t sum_i log sigma_{t,i}

    The order of the latents is reversed between steps. ``context_features`` = 0 drops h (the
    MADEs then read z only). The loss and evaluation are those of :class:`FlowPosteriorVAE`.

    Signature: ``(in_channels, latent_dim, hidden_dims, num_iaf_steps, made_hidden_dims,
    context_features)``, then VanillaVAE's keyword-only arguments.
    """

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        num_iaf_steps: int = 2,
        made_hidden_dims: Sequence[int] = (128, 128),
        context_features: int = 32,
        **kwargs: Any,
    ) -> None:
        require_positive(num_iaf_steps=num_iaf_steps, made_hidden_dims=list(made_hidden_dims))
        super().__init__(in_channels, latent_dim, hidden_dims, context_features=context_features, **kwargs)
        self.flow = inverse_autoregressive_flow(num_iaf_steps, latent_dim, made_hidden_dims, context_features)
