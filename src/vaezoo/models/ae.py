"""AE: the deterministic autoencoder, z = f(x), trained on reconstruction alone. It has no prior, so
it generates only through an ex-post sampler fitted on its codes (``--sampler gmm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from vaezoo.models.autoencoder import PointMassAutoencoder
from vaezoo.registry import register_model


@register_model
class AE(PointMassAutoencoder):
    """A deterministic autoencoder (Hinton & Salakhutdinov 2006, "Reducing the Dimensionality of
    Data with Neural Networks"): a point-mass "posterior" z = f(x) and the loss

        loss = mean_batch[ recon(x, g(f(x))) ]

    with no KL and no latent penalty, so ``M_N`` (the KL weight) is accepted and ignored. Without a
    prior nothing says where in latent space the codes lie, so ``samples_from_prior`` is False and
    :meth:`sample` raises ``NotImplementedError``: generate with an ex-post density fitted on the
    codes of training images (Ghosh et al. 2020, "From Variational to Deterministic Autoencoders",
    Sec. 4: a Gaussian mixture), i.e. ``vaezoo sample --sampler gmm`` or ``evaluate --sampler gmm``.

    ``embed`` is the code f(x); with no posterior there is no ``kl_per_dimension`` and no
    ``log_importance_weights`` (both raise ``NotImplementedError``). A ``likelihood`` other than
    mse makes the reconstruction term -log p(x|z). :class:`~vaezoo.models.rae.RAE_L2` and
    :class:`~vaezoo.models.rae.RAE_GP` add their penalties through :meth:`regularizer`.
    Loss keys: ``loss``, ``Reconstruction_Loss``.
    """

    samples_from_prior = False
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss")

    def __init__(
        self, in_channels: int, latent_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """None: reconstruction is the whole objective."""
        return output.z.new_zeros(()), {}

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        """There is none (``sample``, which draws from here, raises too)."""
        raise NotImplementedError(
            f"{type(self).__name__} is a deterministic autoencoder with no prior over its codes, so "
            "there is nothing to draw latents from. Fit a density on the codes of training images "
            "and decode its draws: `vaezoo sample --sampler gmm` (or `vaezoo evaluate --sampler gmm`); "
            "use generate(x) for reconstructions."
        )
