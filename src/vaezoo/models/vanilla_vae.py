"""The variational autoencoder of Kingma & Welling, "Auto-Encoding Variational Bayes" (ICLR 2014).

VanillaVAE is also the ELBO pipeline of the Gaussian family: a variant subclasses it and overrides
one hook -- ``reconstruction_loss`` (LogCosh, MS-SSIM, feature losses), ``regularizer`` (beta,
capacity, total correlation, MMD, DIP ...) or ``output_cls`` (to return ``z`` as well) -- instead of
copying ``forward`` or ``loss_function``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from torch import Tensor, nn

from vaezoo.losses import check_recon_reduction, gaussian_kl, squared_error
from vaezoo.models.base import BaseVAE
from vaezoo.nn.blocks import DEFAULT_HIDDEN_DIMS, ConvDecoder, ConvEncoder, GaussianHead
from vaezoo.registry import register_model


class VAEOutput(NamedTuple):
    """``forward``'s result: unpacks like PyTorch-VAE's ``[recons, input, mu, log_var]``, and has names."""

    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D)
    log_var: Tensor  # (B, D)


class VAEOutputWithZ(NamedTuple):
    """As :class:`VAEOutput` plus the sampled latent, for losses that need ``z`` (PyTorch-VAE's order)."""

    recons: Tensor
    input: Tensor
    mu: Tensor
    log_var: Tensor
    z: Tensor  # (B, D)


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
    its true, non-negative sign. Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD``.
    """

    output_cls: type[NamedTuple] = VAEOutput
    loss_keys = ("loss", "Reconstruction_Loss", "KLD")

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
        check_recon_reduction(recon_reduction)
        hidden_dims = list(hidden_dims) if hidden_dims is not None else list(DEFAULT_HIDDEN_DIMS)
        self.latent_dim = latent_dim
        self.recon_reduction = recon_reduction
        self.output_activation = output_activation
        self.encoder = ConvEncoder(in_channels, hidden_dims, image_size)
        self.head = self.build_head(self.encoder.out_features, latent_dim)
        self.decoder = ConvDecoder(latent_dim, in_channels, hidden_dims, image_size, output_activation)

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        """Encoder features -> the posterior's parameters (a hook: deterministic or Gamma heads)."""
        return GaussianHead(in_features, latent_dim)

    def encode(self, input: Tensor) -> list[Tensor]:
        mu, log_var = self.head(self.encoder(input))  # (B, D), (B, D)
        return [mu, log_var]

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # (B, C, H, W)

    def forward(self, input: Tensor, **kwargs: Any) -> NamedTuple:
        mu, log_var = self.encode(input)
        z = self.reparameterize(mu, log_var)
        values = {"recons": self.decode(z), "input": input, "mu": mu, "log_var": log_var, "z": z}
        return self.output_cls(**{name: values[name] for name in self.output_cls._fields})

    # -- the loss, and the hooks variants override ----------------------------------------------
    def loss_function(self, *args: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        output = self.output_cls(*args[: len(self.output_cls._fields)])
        recon = self.reconstruction_loss(output.recons, output.input).mean()
        penalty, terms = self.regularizer(output, M_N, **kwargs)
        loss = recon + penalty
        return {
            "loss": loss,
            "Reconstruction_Loss": recon.detach(),
            **{k: v.detach() for k, v in terms.items()},
        }

    def reconstruction_loss(self, recons: Tensor, input: Tensor) -> Tensor:
        """Per-example reconstruction error, (B,)."""
        return squared_error(recons, input, self.recon_reduction)

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """The term added to the reconstruction loss, and the named terms to log."""
        kld = gaussian_kl(output.mu, output.log_var).mean()
        return kl_weight * kld, {"KLD": kld}
