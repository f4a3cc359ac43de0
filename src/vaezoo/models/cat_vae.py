"""The categorical VAE of Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax" (ICLR 2017)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from vaezoo.losses import check_recon_reduction, squared_error
from vaezoo.models.base import BaseVAE
from vaezoo.nn.blocks import DEFAULT_HIDDEN_DIMS, ConvDecoder, ConvEncoder
from vaezoo.nn.gumbel import RelaxedCategorical
from vaezoo.registry import register_model


class CategoricalOutput(NamedTuple):
    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    logits: Tensor  # (B, N * Q) unnormalised log q(c|x): N variables with Q classes, side by side
    z: Tensor  # (B, N * Q) relaxed one-hot samples


@register_model(aliases=("GumbelVAE",))
class CategoricalVAE(BaseVAE):
    """VAE with ``latent_dim`` categorical latents of ``categorical_dim`` classes (Jang et al. 2017).

    q(c|x) is a product of N = ``latent_dim`` categoricals; samples are relaxed with the
    Gumbel-softmax (Eq. 2) at temperature tau, annealed as in Sec. 2.2 / 4:
    tau = max(temperature * exp(-anneal_rate * t), min_temperature), t the training step rounded
    down to ``anneal_interval``. The prior p(c) is uniform over the Q classes of each variable, so
    the KL term of the ELBO is, per image, ``sum_n (sum_k q_nk log q_nk + log Q)``::

        loss = mean_batch[ recon(x, x_hat) ] + M_N * mean_batch[ KL(q(c|x) || Uniform(Q)) ]

    with ``recon`` the squared error at ``recon_reduction`` scale (``"sum"``: M_N = 1 is the ELBO).
    Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD`` and ``Temperature`` (the tau in use).

    Fixes to PyTorch-VAE: the temperature really anneals (it had ``min_temp = temp``) and follows the
    global step, restored on resume (it used ``batch_idx``, which restarts every epoch); the
    recon weight ``alpha`` is gone (``M_N`` alone balances the terms, as in every vaezoo model).
    """

    loss_keys = ("loss", "Reconstruction_Loss", "KLD", "Temperature")

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        categorical_dim: int = 40,
        hidden_dims: list[int] | None = None,
        image_size: int = 64,
        output_activation: Literal["sigmoid", "tanh", "none"] = "sigmoid",
        recon_reduction: Literal["mean", "sum"] = "mean",
        temperature: float = 1.0,
        min_temperature: float = 0.5,
        anneal_rate: float = 3e-5,
        anneal_interval: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_recon_reduction(recon_reduction)
        hidden_dims = list(hidden_dims) if hidden_dims is not None else list(DEFAULT_HIDDEN_DIMS)
        self.latent_dim, self.categorical_dim = latent_dim, categorical_dim
        self.recon_reduction = recon_reduction
        self.encoder = ConvEncoder(in_channels, hidden_dims, image_size)
        counts = [categorical_dim] * latent_dim  # N variables of Q classes
        schedule = (temperature, min_temperature, anneal_rate, anneal_interval)
        self.categorical = RelaxedCategorical(self.encoder.out_features, counts, *schedule)
        codes = self.categorical.size  # N * Q
        self.decoder = ConvDecoder(codes, in_channels, hidden_dims, image_size, output_activation)

    def encode(self, input: Tensor) -> list[Tensor]:
        return [self.categorical(self.encoder(input))]  # (B, N * Q) logits

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # (B, N * Q) one-hot-like codes -> (B, C, H, W)

    def forward(self, input: Tensor, **kwargs: Any) -> CategoricalOutput:
        logits = self.encode(input)[0]  # (B, N * Q)
        z = self.categorical.rsample(logits, kwargs.get("global_step"))  # (B, N * Q)
        return CategoricalOutput(self.decode(z), input, logits, z)

    def loss_function(self, *args: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        output = CategoricalOutput(*args[:4])
        recon = squared_error(output.recons, output.input, self.recon_reduction).mean()
        kld = self.categorical.kl(output.logits).mean()  # summed over the N variables, mean over B
        loss = recon + M_N * kld
        temperature = torch.tensor(self.categorical.temperature(kwargs.get("global_step")))
        return {
            "loss": loss,
            "Reconstruction_Loss": recon.detach(),
            "KLD": kld.detach(),
            "Temperature": temperature,
        }

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        """One uniformly drawn class per variable, one-hot: (num_samples, N * Q)."""
        return self.categorical.sample_prior(num_samples, device)
