"""The VAE with a VampPrior of Tomczak & Welling (AISTATS 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from vaezoo.models.vanilla_vae import VAEOutputWithZ, VanillaVAE
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.priors import GaussianMixture, VampPrior, running_batch_norm
from vaezoo.registry import register_model


@register_model(aliases=("VAMP",))
class VampVAE(VanillaVAE):
    """VAE with a VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior", Eq. 9).

    The prior is the mixture of the encoder's posteriors at K learned pseudo-inputs u_k::

        p(z) = (1/K) sum_k q(z | u_k)

    It has no closed-form KL to q(z|x), so the KL is estimated at the sample z ~ q(z|x)::

        loss = recon(x, x_hat) + M_N * mean_batch[ log q(z|x) - log p(z) ]
        log q(z|x) = -0.5 * sum_d (log sigma_d^2 + (z_d - mu_d)^2 / sigma_d^2 + log 2 pi)

    ``sample`` draws from the VampPrior: a pseudo-input u_k uniformly, then z ~ q(z|u_k).

    Fixes PyTorch-VAE's VampVAE: its log q(z|x) divided the log-variance by the variance too,
    ``sample`` drew from N(0, I), and the pseudo-inputs were a plain 3x64x64 tensor moved with
    ``.cuda()``; here they are a parameter of the data's shape, squashed into the data range, and
    follow the model's device. The pseudo-inputs go through the encoder's BatchNorm layers with
    the running statistics, in training too: a batch of pseudo-inputs normalised by its own
    statistics would give a different prior in training and evaluation (and shift the data's
    running statistics).

    ``log_importance_weights`` use log p(z) under the VampPrior; there is no ``kl_per_dimension``
    (the mixture does not factorise). Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD`` (the
    estimate above).

    Signature: PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, num_components)``,
    then VanillaVAE's keyword-only arguments.
    """

    output_cls: type[NamedTuple] = VAEOutputWithZ
    kl_terms = ()  # a Monte Carlo KL against the mixture prior

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        num_components: int = 50,
        *,
        image_size: int = 64,
        output_activation: Literal["sigmoid", "tanh", "none"] = "sigmoid",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            in_channels,
            latent_dim,
            hidden_dims,
            image_size=image_size,
            output_activation=output_activation,
            **kwargs,
        )
        self.prior = VampPrior(num_components, self.input_shape, output_activation)

    def prior_distribution(self) -> GaussianMixture:
        """p(z): the mixture of q(z|u_k) over the pseudo-inputs, through the current encoder."""
        with running_batch_norm(self.encoder):
            return self.prior(self.encode)

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z) under the VampPrior mixture, (...)."""
        return self.prior_distribution().log_prob(z)

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        log_posterior = DiagonalGaussian(output.mu, output.log_var).log_prob(output.z)  # (B,)
        log_prior = self.log_prior(output.z)  # (B,)
        kld = (log_posterior - log_prior).mean()
        return kl_weight * kld, {"KLD": kld}

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        return self.prior_distribution().sample(num_samples).to(device)  # (N, D)

    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        raise NotImplementedError(
            "VampVAE's prior, a mixture of the posteriors at the pseudo-inputs, does not factorise over "
            "latent dimensions, so KL(q(z|x) || p(z)) has no per-dimension split"
        )
