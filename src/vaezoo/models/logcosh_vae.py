"""The log-cosh VAE of Chen et al. 2019."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from vaezoo.losses.robust import log_cosh_error
from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.registry import register_model


@register_model
class LogCoshVAE(VanillaVAE):
    """Gaussian VAE with the log hyperbolic cosine reconstruction loss, Chen et al. 2019, "Log
    Hyperbolic Cosine Loss Improves Variational Auto-Encoder" (ICLR 2019 submission, OpenReview),
    whose loss f(t; a) = (1/a) log cosh(a t) replaces the squared error:

        recon = sum_pixels (1/a) * log cosh(a * (x_hat - x))       (or the pixel mean)
        loss  = mean_batch[ recon ] + beta * M_N * mean_batch[ KL(q(z|x) || N(0, I)) ]

    ``alpha`` is a: near 0 the loss is a * t^2 / 2, beyond |t| ~ 1/a it is |t| - log(2)/a, so a
    large a gives the sharper, L1-like reconstructions the paper reports. ``recon_reduction``
    sums (``"sum"``: beta * M_N is the beta of a beta-VAE) or averages it over pixels, as in every
    model. ``beta`` is PyTorch-VAE's multiplier of the KL weight ``M_N`` (the trainer's
    ``kl_weight``); its default there is 10, here 1, so that leaving it out changes nothing.

    Signature: PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, alpha, beta)``, then
    VanillaVAE's keyword-only arguments (PyTorch-VAE's default alpha is 100, vaezoo's 10).

    Fixed against PyTorch-VAE: log cosh is evaluated as |u| + softplus(-2|u|) - log 2, which
    cannot overflow (exp(-2 a t) was inf for a * t < -44). Loss keys: ``loss``,
    ``Reconstruction_Loss``, ``KLD``. ``likelihood`` must stay ``"mse"``: log-cosh is not a
    normalised likelihood, so ``likelihood_is_normalized`` is False.
    """

    own_reconstruction = "its reconstruction term, the log-cosh error, replaces the likelihood"

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        alpha: float = 10.0,
        beta: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.alpha = alpha
        self.beta = beta

    def reconstruction_loss(self, recons: Tensor, input: Tensor) -> Tensor:
        return log_cosh_error(recons, input, self.alpha, self.recon_reduction)  # (B,)

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """beta * M_N * KL (PyTorch-VAE's ``beta``)."""
        return super().regularizer(output, self.beta * kl_weight, **kwargs)
