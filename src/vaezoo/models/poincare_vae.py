"""The Poincaré VAE of Mathieu, Le Lan, Maddison, Tomioka & Teh 2019: latents on the Poincaré ball,
wrapped normal posterior and prior, a Monte Carlo KL, and a gyroplane layer at the decoder's input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vaezoo.arguments import require_positive
from vaezoo.models.autoencoder import ConvAutoencoder
from vaezoo.nn.blocks import ConvDecoder, MLPDecoder
from vaezoo.nn.hyperbolic import GyroplaneLayer, WrappedNormal, expmap0, result_dtype, softplus_scale
from vaezoo.registry import register_model


class PoincareVAEOutput(NamedTuple):
    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D), inside the ball: the wrapped normal's centre
    scale: Tensor  # (B, D), > 0: its standard deviations in the tangent space
    z: Tensor  # (B, D), on the ball: the draw the decoder saw (the KL's Monte Carlo point)


class WrappedNormalHead(nn.Module):
    """Flat features -> (mu, sigma): mu = exp_0(linear) on the ball B_c^D, sigma = softplus(linear) + 1e-5."""

    def __init__(self, in_features: int, latent_dim: int, c: float) -> None:
        super().__init__()
        self.c = c
        self.fc_mu = nn.Linear(in_features, latent_dim)
        self.fc_scale = nn.Linear(in_features, latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mu = self.fc_mu(h)  # exp_0 in float64: in float32 the ball's margin caps |mu| (nn.hyperbolic)
        return expmap0(mu.double(), self.c).to(result_dtype(mu)), softplus_scale(self.fc_scale(h))


@register_model(aliases=("PVAE",))
class PoincareVAE(ConvAutoencoder):
    """Poincaré VAE (Mathieu et al. 2019, "Continuous Hierarchical Representations with Poincaré
    Variational Auto-Encoders", NeurIPS): z lives on the Poincaré ball B_c^D of curvature -c
    (``curvature`` c > 0, D = ``latent_dim``), q(z|x) = N^W(mu(x), diag sigma^2(x)) and p(z) =
    N^W(0, ``prior_sigma``^2 I), both wrapped normals (:class:`~vaezoo.nn.hyperbolic.WrappedNormal`,
    their Sec. 3.1): a Gaussian in the tangent space at the origin, parallel-transported to mu and
    exp-mapped onto the ball. The encoder's mean is exp_0 of a linear map, its scale a softplus.

        loss = mean_batch[ recon(x, x_hat) ] + M_N * mean_batch[ log q(z|x) - log p(z) ],  z ~ q(z|x)

    The KL has no closed form: it is the single-sample Monte Carlo estimate at the reparameterised z
    the decoder reconstructs from (their Sec. 3), logged as ``KLD`` (unbiased, so it may dip below 0
    in one batch). The decoder's first layer is the gyroplane layer (Sec. 3.3; Ganea et al. 2018's
    hyperbolic multinomial logistic regression, :class:`~vaezoo.nn.hyperbolic.GyroplaneLayer`):
    the signed distances of z to ``gyroplane_dim`` learned gyroplanes, then a LeakyReLU and the shared
    conv (or MLP) decoder.

    ``sample`` decodes draws of the wrapped-normal prior; ``embed`` is mu; ``log_importance_weights``
    uses both densities on the ball (w.r.t. its Riemannian volume, which cancels in their ratio).
    There is no KL per dimension. Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD``.
    """

    output_cls = PoincareVAEOutput
    latent_geometry = "poincare_ball"
    supports_vectors = True
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD")
    kl_terms = ()  # the KL is a Monte Carlo estimate, not a closed form per dimension

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        *,
        curvature: float = 1.0,
        prior_sigma: float = 1.0,
        gyroplane_dim: int = 64,
        **kwargs: Any,
    ) -> None:
        for name, value in (("curvature", curvature), ("prior_sigma", prior_sigma)):
            if not value > 0:
                raise ValueError(f"PoincareVAE needs {name} > 0, got {value}")
        require_positive(gyroplane_dim=gyroplane_dim)
        # read by build_head and build_decoder, which ConvAutoencoder's constructor calls
        self.curvature = float(curvature)
        self.prior_sigma = float(prior_sigma)
        self.gyroplane_dim = gyroplane_dim
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        return WrappedNormalHead(in_features, latent_dim, self.curvature)

    def build_decoder(self, out_channels: int, image_size: int) -> nn.Module:
        """z on the ball (B, D) -> gyroplane distances (B, G) -> LeakyReLU -> the Euclidean decoder."""
        if self.architecture == "mlp":
            body: nn.Module = MLPDecoder(
                self.gyroplane_dim, out_channels, self.hidden_dims, self.decoder_activation
            )
        else:
            body = ConvDecoder(
                self.gyroplane_dim, out_channels, self.hidden_dims, image_size, self.decoder_activation
            )
        gyroplanes = GyroplaneLayer(self.latent_dim, self.gyroplane_dim, self.curvature)
        return nn.Sequential(gyroplanes, nn.LeakyReLU(), body)

    def encode(self, input: Tensor) -> WrappedNormal:
        """q(z|x) = N^W(mu(x), diag sigma^2(x)) on the ball; unpacks as ``[mu, scale]``."""
        mu, scale = self.head(self.encoder(input))  # (B, D), (B, D)
        return WrappedNormal(mu, scale, self.curvature)

    def reparameterize(self, mu: Tensor, scale: Tensor) -> Tensor:
        """A reparameterised draw of N^W(mu, diag scale^2), (B, D)."""
        return WrappedNormal(mu, scale, self.curvature).rsample()

    def prior(self, like: Tensor) -> WrappedNormal:
        """p(z) = N^W(0, prior_sigma^2 I), with the dtype and device of ``like``."""
        zeros = torch.zeros(self.latent_dim, dtype=like.dtype, device=like.device)
        return WrappedNormal(zeros, torch.full_like(zeros, self.prior_sigma), self.curvature)

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """M_N times the Monte Carlo KL log q(z|x) - log p(z) at the forward pass's z, batch mean."""
        z = output.z
        log_q = WrappedNormal(output.mu, output.scale, self.curvature).log_prob(z)  # (B,)
        kld = (log_q - self.prior(z).log_prob(z)).mean()
        return kl_weight * kld, {"KLD": kld}

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        """z ~ N^W(0, prior_sigma^2 I) on the ball, (N, D)."""
        return self.prior(torch.empty(0, device=device)).sample(num_samples)

    # -- evaluation: the wrapped normals on the ball --------------------------------------------
    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        raise NotImplementedError(
            "PoincareVAE's KL between wrapped normals on the Poincare ball has no closed form and does "
            "not split over latent dimensions"
        )

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        mu, scale = (t.unsqueeze(1).expand(-1, num_samples, -1) for t in self.encode(x))  # (B, S, D)
        posterior = WrappedNormal(mu, scale, self.curvature)
        z = posterior.rsample()  # (B, S, D)
        return z, self.prior(z).log_prob(z), posterior.log_prob(z)
