"""The variational autoencoder of Kingma & Welling, "Auto-Encoding Variational Bayes" (ICLR 2014)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from torch import Tensor

from vaezoo.losses import RECON_REDUCTIONS, gaussian_kl, squared_error
from vaezoo.models.base import BaseVAE
from vaezoo.nn.blocks import DEFAULT_HIDDEN_DIMS, ConvDecoder, ConvEncoder, GaussianHead
from vaezoo.registry import register_model


class VAEOutput(NamedTuple):
    """``forward``'s result: unpacks like PyTorch-VAE's list, and has names."""

    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D)
    log_var: Tensor  # (B, D)


@register_model(aliases=("VAE", "GaussianVAE"))
class VanillaVAE(BaseVAE):
    """Gaussian VAE (Kingma & Welling 2014): q(z|x) = N(mu(x), diag sigma^2(x)), p(z) = N(0, I).

    Loss (the negative ELBO of Eq. 10, with a Gaussian decoder written as a squared error)::

        loss = mean_batch[ recon(x, x_hat) ] + M_N * mean_batch[ KL(q(z|x) || p(z)) ]

    ``recon_reduction`` sets the scale of the reconstruction term, and with it what ``M_N`` means:

    - ``"sum"``: squared error summed over the pixels of an image. This is the negative
      log-likelihood of a Gaussian decoder with variance 1/2 (up to a constant), so ``M_N = 1`` is
      the ELBO and ``M_N = beta`` is a beta-VAE; the papers' beta/gamma/capacity values hold here.
    - ``"mean"``: squared error averaged over pixels, PyTorch-VAE's ``F.mse_loss`` (the default, for
      compatibility). The KL is then weighed against 1/num_pixels of the likelihood, so ``M_N`` acts
      as ``beta / (C*H*W)``: PyTorch-VAE's 0.00025 on 3x64x64 CelebA is beta ~ 3.1.

    The KL term is always per example, summed over latent dimensions, and logged as ``KLD`` with
    its true, non-negative sign.
    """

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        image_size: int = 64,
        output_activation: Literal["sigmoid", "tanh", "none"] = "sigmoid",
        recon_reduction: Literal["mean", "sum"] = "mean",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        hidden_dims = list(hidden_dims) if hidden_dims is not None else list(DEFAULT_HIDDEN_DIMS)
        self.latent_dim = latent_dim
        self.recon_reduction = recon_reduction
        if recon_reduction not in RECON_REDUCTIONS:
            raise ValueError(f"recon_reduction '{recon_reduction}' is not one of {RECON_REDUCTIONS}")
        self.encoder = ConvEncoder(in_channels, hidden_dims, image_size)
        self.head = GaussianHead(self.encoder.out_features, latent_dim)
        self.decoder = ConvDecoder(latent_dim, in_channels, hidden_dims, image_size, output_activation)

    def encode(self, input: Tensor) -> list[Tensor]:
        mu, log_var = self.head(self.encoder(input))  # (B, D), (B, D)
        return [mu, log_var]

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # (B, C, H, W)

    def forward(self, input: Tensor, **kwargs: Any) -> VAEOutput:
        mu, log_var = self.encode(input)
        z = self.reparameterize(mu, log_var)
        return VAEOutput(self.decode(z), input, mu, log_var)

    def loss_function(self, *args: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        recons, input, mu, log_var = args[:4]
        recon = squared_error(recons, input, self.recon_reduction).mean()
        kld = gaussian_kl(mu, log_var).mean()
        loss = recon + M_N * kld
        return {"loss": loss, "Reconstruction_Loss": recon.detach(), "KLD": kld.detach()}
