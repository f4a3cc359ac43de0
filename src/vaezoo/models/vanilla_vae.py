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

from vaezoo.losses import gaussian_kl
from vaezoo.models.base import BaseVAE
from vaezoo.nn.blocks import DEFAULT_HIDDEN_DIMS, ConvDecoder, ConvEncoder, GaussianHead
from vaezoo.nn.distributions import DiagonalGaussian, log_standard_normal
from vaezoo.nn.likelihoods import LikelihoodName
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


def per_dimension(gaussian: DiagonalGaussian) -> DiagonalGaussian:
    """The same Gaussian with every latent dimension as its own 1-D distribution, (..., D, 1), so
    that reductions over the last dimension (``kl``, ``log_prob``) keep one value per dimension."""
    return DiagonalGaussian(gaussian.mu.unsqueeze(-1), gaussian.log_var.unsqueeze(-1))


def expand_samples(gaussian: DiagonalGaussian, num_samples: int) -> DiagonalGaussian:
    """(B, D) parameters -> (B, S, D): ``num_samples`` independent draws per row from ``rsample``."""
    shape = (gaussian.mu.shape[0], num_samples, *gaussian.mu.shape[1:])
    return DiagonalGaussian(
        gaussian.mu.unsqueeze(1).expand(shape), gaussian.log_var.unsqueeze(1).expand(shape)
    )


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

    ``likelihood`` chooses p(x|z) (:mod:`vaezoo.nn.likelihoods`): ``"mse"`` (the default, the
    squared error above, no normaliser), ``"bernoulli"`` (the decoder outputs logits; data in
    [0, 1], a likelihood for binary data), ``"gaussian"`` (N(x_hat, sigma^2 I)) or
    ``"discretized_logistic"`` (8-bit data, Salimans et al. 2017). For the last two sigma is one
    global value, ``likelihood_std`` (in data units), kept ``"fixed"`` or ``"learned"`` from that
    start (``likelihood_scale``). With a likelihood the reconstruction term is -log p(x|z) summed
    over pixels, so ``recon_reduction`` must be ``"sum"`` (its default then; ``None`` means "mean"
    for mse and "sum" otherwise), ``M_N = 1`` is the exact negative ELBO, and ``forward``'s output
    gets a last field ``recon_params`` (e.g. the logits); ``recons`` and ``decode`` stay images.

    Signature: PyTorch-VAE's ``(in_channels, latent_dim, hidden_dims=None)``, positionally; every
    other argument is keyword-only (``img_size`` is accepted for ``image_size``).
    """

    output_cls: type[NamedTuple] = VAEOutput
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD")

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        *,
        image_size: int = 64,
        output_activation: Literal["sigmoid", "tanh", "none"] = "sigmoid",
        recon_reduction: Literal["mean", "sum"] | None = None,
        likelihood: LikelihoodName = "mse",
        likelihood_scale: Literal["fixed", "learned"] = "learned",
        likelihood_std: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        hidden_dims = list(hidden_dims) if hidden_dims is not None else list(DEFAULT_HIDDEN_DIMS)
        self.latent_dim = latent_dim
        self.output_activation = output_activation
        self.decoder_activation = self.setup_likelihood(
            likelihood, output_activation, recon_reduction, likelihood_scale, likelihood_std
        )
        self.encoder = ConvEncoder(in_channels, hidden_dims, image_size)
        self.head = self.build_head(self.encoder.out_features, latent_dim)
        self.decoder = ConvDecoder(latent_dim, in_channels, hidden_dims, image_size, self.decoder_activation)

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        """Encoder features -> the posterior's parameters (a hook: deterministic or Gamma heads)."""
        return GaussianHead(in_features, latent_dim)

    def encode(self, input: Tensor) -> list[Tensor]:
        mu, log_var = self.head(self.encoder(input))  # (B, D), (B, D)
        return [mu, log_var]

    def decode_params(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # (B, C, H, W): the image, or the likelihood's parameters

    def forward(self, input: Tensor, **kwargs: Any) -> NamedTuple:
        mu, log_var = self.encode(input)
        z = self.reparameterize(mu, log_var)
        recons, params = self.decode_with_params(z)
        return self.pack(recons=recons, recon_params=params, input=input, mu=mu, log_var=log_var, z=z)

    # -- the loss, and the hooks variants override ----------------------------------------------
    def loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        recon = self.reduce_over_batch(self.reconstruction_loss(self.recon_params(output), output.input))
        penalty, terms = self.regularizer(output, M_N, **kwargs)
        loss = self.reconstruction_weight * recon + penalty
        return {
            "loss": loss,
            "Reconstruction_Loss": recon.detach(),
            **{k: v.detach() for k, v in terms.items()},
        }

    @property
    def reconstruction_weight(self) -> float:
        """The weight of the reconstruction term in the loss: 1 unless a model has its own (InfoVAE's
        ``beta``). ``Reconstruction_Loss`` is logged unweighted."""
        return 1.0

    def reduce_over_batch(self, per_example: Tensor) -> Tensor:
        """The reconstruction term of the loss from its per-example values (B,): the batch mean
        (MSSIMVAE's ``size_average=False``: the sum)."""
        return per_example.mean()

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """The term added to the reconstruction loss, and the named terms to log."""
        kld = gaussian_kl(output.mu, output.log_var).mean()
        return kl_weight * kld, {"KLD": kld}

    # -- evaluation (see BaseVAE): the Gaussian posterior against the prior ---------------------
    def posterior(self, x: Tensor) -> DiagonalGaussian:
        """q(z|x) = N(mu(x), diag sigma^2(x)), (B, D)."""
        mu, log_var = self.encode(x)[:2]
        return DiagonalGaussian(mu, log_var)

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z) summed over the last dimension; N(0, I) unless a model overrides it."""
        return log_standard_normal(z)

    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        """KL(N(mu_d, sigma_d^2) || N(0, 1)) per dimension, (B, D); the rows sum to the KL term."""
        return per_dimension(self.posterior(x)).kl_standard_normal()

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        posterior = expand_samples(self.posterior(x), num_samples)  # (B, S, D)
        z = posterior.rsample()
        return z, self.log_prior(z), posterior.log_prob(z)
