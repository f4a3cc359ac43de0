"""The VAE with a normalizing-flow posterior of Rezende & Mohamed (ICML 2015): planar and radial flows.

:class:`FlowPosteriorVAE` is the pipeline every flow posterior shares (this model and the IAF VAE):
a diagonal Gaussian q0(z_0|x) from the encoder, a flow z_0 -> z_K, the decoder on z_K, and the ELBO
with the flow's log-determinant as a single-sample Monte Carlo KL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

from torch import Tensor, nn

from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.nn.blocks import GaussianHead
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.flows import ContextGaussianHead, FlowPosterior, FlowSequence, planar_radial_flow
from vaezoo.registry import register_model


class FlowOutput(NamedTuple):
    """``forward``'s result: PyTorch-VAE's ``[recons, input, mu, log_var]``, then the flow's ends."""

    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D) of the base Gaussian q0(z_0|x)
    log_var: Tensor  # (B, D)
    z0: Tensor  # (B, D) the base sample
    z: Tensor  # (B, D) z_K, the latent the decoder reads
    log_det: Tensor  # (B,) sum_k log|det dz_k/dz_{k-1}|


class FlowPosteriorVAE(VanillaVAE):
    """The shared pipeline of a VAE whose posterior is a Gaussian pushed through ``self.flow``
    (built by the subclass after this constructor). Not registered: a model sets ``self.flow``.
    With ``context_features`` F > 0 the head also outputs a context h (B, F) that the flow reads.

    Loss (the negative ELBO with a single-sample Monte Carlo KL, Rezende & Mohamed 2015, Eq. 15)::

        z_0 ~ q0(z_0|x) = N(mu(x), diag sigma^2(x)),   z_K = f_K o ... o f_1(z_0)
        KLD  = log q0(z_0|x) - sum_k log|det df_k/dz_{k-1}| - log p(z_K)
        loss = mean_batch[ recon(x, decode(z_K)) ] + M_N * mean_batch[ KLD ]

    ``decode`` and ``embed`` work on z_K; ``embed(x)`` is the flow's image of the base mean.
    ``log_importance_weights`` use log q(z_K|x) = log q0(z_0|x) - sum log|det| at each draw; there
    is no ``kl_per_dimension`` (the flow mixes the dimensions of z). Loss keys: ``loss``,
    ``Reconstruction_Loss``, ``KLD`` (the estimate above) and ``Log_Det`` (the batch mean of
    sum_k log|det|).
    """

    output_cls: type[NamedTuple] = FlowOutput
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD", "Log_Det")
    kl_terms: ClassVar[tuple[str, ...]] = ()  # a Monte Carlo KL through the flow
    flow: FlowSequence

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        *,
        context_features: int = 0,
        **kwargs: Any,
    ) -> None:
        if context_features < 0:
            raise ValueError(f"context_features must be 0 or more, got {context_features}")
        self.context_features = context_features  # read by build_head, which the constructor calls
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        """Encoder features -> (mu, log_var) of q0, and the flow's context h if ``context_features``."""
        if self.context_features == 0:
            return GaussianHead(in_features, latent_dim)
        return ContextGaussianHead(in_features, latent_dim, self.context_features)

    def encode(self, input: Tensor) -> FlowPosterior:  # type: ignore[override]  # not a Gaussian
        """q(z_K|x): the base Gaussian (B, D) and the flow, with the head's context if it gives one."""
        mu, log_var, *context = self.head(self.encoder(input))  # (B, D), (B, D)[, (B, F)]
        return FlowPosterior(DiagonalGaussian(mu, log_var), self.flow, context[0] if context else None)

    def forward(self, input: Tensor, **kwargs: Any) -> NamedTuple:  # FlowOutput (+ recon_params)
        posterior = self.encode(input)
        z0, z, log_det = posterior.sample()  # (B, D), (B, D), (B,)
        recons, params = self.decode_with_params(z)
        return self.pack(
            recons=recons, recon_params=params, input=input, z0=z0, z=z, log_det=log_det, **posterior.fields()
        )

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """M_N times the one-sample estimate log q_K(z_K|x) - log p(z_K), averaged over the batch."""
        log_q = DiagonalGaussian(output.mu, output.log_var).log_prob(output.z0) - output.log_det  # (B,)
        kld = (log_q - self.log_prior(output.z)).mean()
        return kl_weight * kld, {"KLD": kld, "Log_Det": output.log_det.mean()}

    # -- evaluation (see BaseVAE) -----------------------------------------------------------------
    def embed(self, x: Tensor, **kwargs: Any) -> Tensor:
        return self.encode(x).mode()  # (B, D): z_K of the base mean

    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__}'s flow mixes the latent dimensions, so q(z_K|x) does not factorise and "
            "KL(q(z|x) || p(z)) has no per-dimension split (its Monte Carlo total is the KLD term)"
        )

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        posterior = self.encode(x).expand(num_samples)  # (B, S, D)
        z0, z, log_det = posterior.sample()
        return z, self.log_prior(z), posterior.log_prob_of_sample(z0, log_det)


@register_model(aliases=("VAE_NF", "VAE_LinNF", "NFVAE"))
class FlowVAE(FlowPosteriorVAE):
    """VAE with a planar / radial flow posterior (Rezende & Mohamed 2015, "Variational Inference
    with Normalizing Flows", Sec. 4 and Eq. 15; pythae's VAE_LinNF).

    ``flows`` names the K steps in order, each ``"planar"`` (Eq. 10, a contraction or expansion
    along a hyperplane) or ``"radial"`` (Eq. 14, around a point), e.g. ``["planar", "planar",
    "radial"]``. With ``context_features`` = 0 their parameters are learned and shared by every
    input (pythae's choice); with F > 0 the encoder also outputs a context h (B, F) and each step's
    parameters are the shared ones plus a linear function of h, one flow per input, as the paper's
    inference network outputs them (Sec. 4). Both carry the paper's invertibility constraints
    (Appendix A): w^T u_hat >= -1 and beta >= -alpha. The loss and evaluation are those of
    :class:`FlowPosteriorVAE`; ``flows=[]`` is the Gaussian VAE with a Monte Carlo KL.

    Signature: ``(in_channels, latent_dim, hidden_dims, flows, context_features)``, then VanillaVAE's keyword-only
    arguments.
    """

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        flows: Sequence[str] = ("planar",) * 10,
        context_features: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, context_features=context_features, **kwargs)
        self.flow = planar_radial_flow(list(flows), latent_dim, context_features)
