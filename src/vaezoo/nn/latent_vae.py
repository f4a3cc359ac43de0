"""A small MLP VAE over latent codes: stage 2 of the two-stage VAE (Dai & Wipf 2019, "Diagnosing and
Enhancing VAE Models", Sec. 4), used by :class:`~vaezoo.models.twostage_vae.TwoStageVAE` and by the
two-stage ex-post sampler of :mod:`vaezoo.evaluation.samplers`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaezoo.losses import squared_error
from vaezoo.nn.blocks import GaussianHead
from vaezoo.nn.distributions import DiagonalGaussian


def learned_variance_nll(error: Tensor, log_gamma: Tensor, num_dims: int) -> Tensor:
    """-log N(x; x_hat, gamma I) without the constant (D/2) log 2 pi, from ||x - x_hat||^2 (B,)::

    ||x - x_hat||^2 / (2 gamma) + (D/2) log gamma

    Minimised over gamma at gamma = ||x - x_hat||^2 / D, the mean squared error.
    """
    return 0.5 * error * torch.exp(-log_gamma) + 0.5 * num_dims * log_gamma


def mlp(in_features: int, widths: Sequence[int]) -> nn.Sequential:
    """Linear + LeakyReLU layers of the given widths."""
    sizes = [in_features, *widths]
    return nn.Sequential(*(m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.LeakyReLU())))


class GaussianMLP(nn.Module):
    """q(u|z) = N(mu(h), diag sigma^2(h)), h an MLP of z (one hidden layer: a ConditionalGaussian)."""

    def __init__(self, in_features: int, latent_dim: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.hidden = mlp(in_features, widths)
        self.head = GaussianHead(widths[-1], latent_dim)

    def forward(self, h: Tensor) -> DiagonalGaussian:
        mu, log_var = self.head(self.hidden(h))  # (B, D), (B, D)
        return DiagonalGaussian(mu, log_var)


class LatentVAE(nn.Module):
    """A small MLP VAE over latent codes z (stage 2 of the two-stage VAE, and its ex-post
    sampler), with u ~ N(0, I) and p(z|u) = N(z_hat(u), gamma_z I).

    ``widths`` is one width w -- vaezoo's stage 2, one hidden layer of w in q(u|z) and two in
    p(z|u) -- or a list, PyTorch-VAE's ``hidden_dims2``: q(u|z)'s hidden layers, and p(z|u)'s in reverse.
    """

    def __init__(self, latent_dim: int, widths: int | Sequence[int]) -> None:
        super().__init__()
        if isinstance(widths, int):
            encoder_widths, decoder_widths = [widths], [widths, widths]
        else:
            encoder_widths = list(widths)
            decoder_widths = encoder_widths[::-1]
        if not encoder_widths:
            raise ValueError("stage 2 needs at least one hidden layer (hidden_dims2 is empty)")
        self.encoder = GaussianMLP(latent_dim, latent_dim, encoder_widths)  # q(u|z)
        # u -> z_hat, the mean of p(z|u)
        self.decoder = nn.Sequential(
            *mlp(latent_dim, decoder_widths), nn.Linear(decoder_widths[-1], latent_dim)
        )
        self.log_gamma = nn.Parameter(torch.zeros(()))  # log gamma_z

    def loss(
        self, z: Tensor, z_recons: Tensor, u_posterior: DiagonalGaussian, kl_weight: float
    ) -> dict[str, Tensor]:
        """The negative ELBO on latents z (B, D), given its reconstruction (the mean of p(z|u)) and
        q(u|z), per-batch means."""
        error = squared_error(z_recons, z, "sum")  # (B,)
        recon = learned_variance_nll(error, self.log_gamma, z.shape[1]).mean()
        kld = u_posterior.kl_standard_normal().mean()
        return {
            "Stage2_Loss": recon + kl_weight * kld,
            "Stage2_Reconstruction_Loss": recon,
            "Stage2_KLD": kld,
        }
