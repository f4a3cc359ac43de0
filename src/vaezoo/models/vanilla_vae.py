"""The variational autoencoder of Kingma & Welling, "Auto-Encoding Variational Bayes" (ICLR 2014).

VanillaVAE is also the ELBO pipeline of the Gaussian family: a variant subclasses it and overrides
one hook -- ``reconstruction_loss`` (LogCosh, MS-SSIM, feature losses), ``regularizer`` (beta,
capacity, total correlation, MMD, DIP ...) or ``output_cls`` (to return ``z`` as well) -- instead of
copying ``forward`` or ``loss_function``.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from torch import Tensor, nn

from vaezoo.losses import gaussian_kl
from vaezoo.models.autoencoder import ConvAutoencoder
from vaezoo.nn.blocks import GaussianHead
from vaezoo.nn.distributions import DiagonalGaussian, log_standard_normal
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
class VanillaVAE(ConvAutoencoder):
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
    [0, 1], a likelihood for binary data), ``"continuous_bernoulli"`` (logits too; a density for
    any data in [0, 1], Loaiza-Ganem & Cunningham 2019), ``"gaussian"`` (N(x_hat, sigma^2 I)),
    ``"laplace"`` (an L1 error with its normaliser) or ``"discretized_logistic"`` (8-bit data,
    Salimans et al. 2017). For the last three the scale is one global value, set by its standard
    deviation ``likelihood_std`` (in data units), kept ``"fixed"`` or ``"learned"`` from that start
    (``likelihood_scale``). With a likelihood the reconstruction term is -log p(x|z) summed
    over pixels, so ``recon_reduction`` must be ``"sum"`` (its default then; ``None`` means "mean"
    for mse and "sum" otherwise), ``M_N = 1`` is the exact negative ELBO, and ``forward``'s output
    gets a last field ``recon_params`` (e.g. the logits); ``recons`` and ``decode`` stay images.

    Signature: PyTorch-VAE's ``(in_channels, latent_dim, hidden_dims=None)``, positionally; every
    other argument is keyword-only (``img_size`` is accepted for ``image_size``).
    """

    output_cls: type[NamedTuple] = VAEOutput
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD")
    kl_terms: ClassVar[tuple[str, ...]] = ("KLD",)

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        """Encoder features -> (mu, log_var) of the Gaussian posterior."""
        return GaussianHead(in_features, latent_dim)

    def encode(self, input: Tensor) -> DiagonalGaussian:
        """q(z|x) = N(mu(x), diag sigma^2(x)), (B, D); unpacks as PyTorch-VAE's ``[mu, log_var]``."""
        mu, log_var = self.head(self.encoder(input))  # (B, D), (B, D)
        return DiagonalGaussian(mu, log_var)

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """M_N times KL(q(z|x) || N(0, I)), the closed form, averaged over the batch."""
        kld = gaussian_kl(output.mu, output.log_var).mean()
        return kl_weight * kld, {"KLD": kld}

    # -- evaluation (see BaseVAE): the Gaussian posterior against the prior ---------------------
    def posterior(self, x: Tensor) -> DiagonalGaussian:
        """q(z|x) = N(mu(x), diag sigma^2(x)), (B, D) (a variant's ``encode`` may return more)."""
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
