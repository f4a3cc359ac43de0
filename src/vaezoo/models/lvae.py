"""The ladder variational autoencoder of Sønderby et al. (NeurIPS 2016)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vaezoo.losses.schedules import linear_warmup
from vaezoo.models.vanilla_vae import VanillaVAE, expand_samples, per_dimension
from vaezoo.nn.blocks import GaussianHead
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.priors import ConditionalGaussian, precision_weighted
from vaezoo.registry import register_model

Ladder = tuple[list[DiagonalGaussian], list[DiagonalGaussian], list[Tensor]]


def ladder_rungs(
    latent_dim: int | Sequence[int] | None, latent_dims: Sequence[int] | None
) -> tuple[int, list[int]]:
    """The bottom rung's size and every rung's, bottom first, from ``latent_dim`` (an int, or
    PyTorch-VAE's list of rungs) and ``latent_dims``."""
    if latent_dim is not None and not isinstance(latent_dim, int):  # PyTorch-VAE's latent_dims
        if latent_dims is not None and list(latent_dims) != list(latent_dim):
            raise ValueError(f"latent_dim = {list(latent_dim)} and latent_dims = {list(latent_dims)} differ")
        latent_dims, latent_dim = latent_dim, None
    if latent_dims is not None:
        dims = list(latent_dims)
        if not dims:
            raise ValueError("latent_dims needs at least one rung")
        if latent_dim is not None and dims[0] != latent_dim:
            raise ValueError(
                f"latent_dims lists the rungs from the bottom: its first entry {dims[0]} "
                f"must be latent_dim = {latent_dim}"
            )
        return dims[0], dims
    if latent_dim is None:
        raise TypeError("LVAE() missing required argument 'latent_dim' (or 'latent_dims')")
    return latent_dim, [latent_dim, max(1, latent_dim // 2)]


class LadderOutput(NamedTuple):
    """``forward``'s result: the shared prefix for the bottom rung, then every rung, bottom (z_1) first."""

    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D_1) q(z_1|.)
    log_var: Tensor  # (B, D_1)
    latents: tuple[Tensor, ...]  # z_i, (B, D_i) each
    posteriors: tuple[DiagonalGaussian, ...]  # q(z_i|.): the precision-weighted merge
    priors: tuple[DiagonalGaussian, ...]  # p(z_i|z_{i+1}); N(0, I) at the top rung


@register_model
class LVAE(VanillaVAE):
    """Ladder VAE (Sønderby et al. 2016, "Ladder Variational Autoencoders", Eqs. 17-19).

    Generative model: p(z_L) = N(0, I), p(z_i|z_{i+1}) = N(mu_p,i(z_{i+1}), sigma_p,i^2(z_{i+1}))
    (learned), p(x|z_1) the conv decoder. ``latent_dims`` lists the rungs' sizes from the bottom
    z_1 to the top z_L (default: two rungs, ``[latent_dim, latent_dim // 2]``); ``latent_dim`` is
    the bottom one, what ``decode(z)`` takes. ``rung_width`` is the width of the bottom-up MLPs
    and of the top-down priors' hidden layer.

    Inference, in two passes:

    1. bottom-up, deterministic: d_1 = conv features of x, d_{i+1} = MLP(d_i), and at every rung
       the data's estimate (mu_hat_i, sigma_hat_i^2) = heads(d_i);
    2. top-down: q(z_L|x) = N(mu_hat_L, sigma_hat_L^2); then for i = L-1 .. 1 the prior
       p(z_i|z_{i+1}) at the sampled z_{i+1} is merged with the estimate by precision weighting
       (Eqs. 18-19): sigma_q^2 = 1 / (sigma_hat^-2 + sigma_p^-2),
       mu_q = (mu_hat sigma_hat^-2 + mu_p sigma_p^-2) sigma_q^2, and z_i ~ q(z_i|.) (Eq. 17).

    Loss: the negative ELBO, with a closed-form KL at every rung against its top-down prior::

        loss = recon(x, x_hat) + w * M_N * mean_batch[ KL(q(z_L|x) || N(0, I))
                                                       + sum_{i<L} KL(q(z_i|.) || p(z_i|z_{i+1})) ]

    where w = linear_warmup(global_step, warmup_steps) is the paper's deterministic warm-up
    (Sec. 2.2; 1 when ``global_step`` is not given). ``sample`` draws z_L ~ N(0, I) and runs the
    top-down priors down to z_1. ``embed`` is the bottom rung's posterior mean;
    ``log_importance_weights`` sample every rung and weigh the whole hierarchy.

    Fixes PyTorch-VAE's LVAE: its KLs compared the merged posterior with the *encoder's*
    estimate instead of the top-down prior and missed the 0.5 factor, the top rung's KL was left
    out, ``decode`` returned (recons, kl), and the image size was fixed at 64.

    Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD`` (all rungs), ``KLD_z1`` .. ``KLD_zL``.

    Arguments in PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims)``, with
    ``latent_dims``, ``rung_width`` and VanillaVAE's other arguments by keyword only. A list in the
    ``latent_dim`` position is PyTorch-VAE's ``latent_dims``: ``LVAE(3, [4, 8, 16, 32, 128])`` is
    ``LVAE(3, latent_dim=4, latent_dims=[4, 8, 16, 32, 128])``. PyTorch-VAE lists the rungs in the
    same order, bottom first: its first encoder block (nearest the image) gives latent_dims[0], the
    decoder reads latent_dims[0] and ``sample`` draws the top rung latent_dims[-1] from N(0, I).
    ``hidden_dims`` is only the conv stack here (PyTorch-VAE tied one conv block to each rung, so it
    needed as many hidden_dims as latent_dims; vaezoo's rungs sit on the final features, so any
    lengths go together).
    """

    output_cls: type[NamedTuple] = LadderOutput
    kl_terms = ()  # KLs of the ladder's rungs against their top-down priors

    def __init__(
        self,
        in_channels: int,
        latent_dim: int | Sequence[int] | None = None,
        hidden_dims: Sequence[int] | None = None,
        *,
        latent_dims: Sequence[int] | None = None,
        rung_width: int = 256,
        warmup_steps: int = 0,
        **kwargs: Any,
    ) -> None:
        bottom, dims = ladder_rungs(latent_dim, latent_dims)
        super().__init__(in_channels, bottom, hidden_dims, **kwargs)
        self.latent_dims = dims
        self.warmup_steps = warmup_steps
        self.loss_keys = (
            "loss",
            "Reconstruction_Loss",
            "KLD",
            *(f"KLD_z{i}" for i in range(1, len(dims) + 1)),
        )
        # Bottom-up: rung 1 reads the conv features through self.head; rung i+1 an MLP of rung i's.
        widths = [self.encoder_features()] + [rung_width] * (len(dims) - 1)
        self.up = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.LeakyReLU()) for a, b in zip(widths, widths[1:])
        )
        self.up_heads = nn.ModuleList(GaussianHead(rung_width, d) for d in dims[1:])
        # Top-down: top_down[i] is p(z_{i+1} | z_{i+2}) in the paper's 1-based numbering.
        self.top_down = nn.ModuleList(ConditionalGaussian(a, b, rung_width) for a, b in zip(dims[1:], dims))

    def bottom_up(self, input: Tensor) -> list[DiagonalGaussian]:
        """The data's estimate N(mu_hat_i, sigma_hat_i^2) at every rung, bottom first."""
        d = self.encoder(input)  # (B, F)
        estimates = [DiagonalGaussian(*self.head(d))]
        for layer, head in zip(self.up, self.up_heads):
            d = layer(d)  # (B, rung_width)
            estimates.append(DiagonalGaussian(*head(d)))
        return estimates

    def ladder(self, input: Tensor, stochastic: bool = True) -> Ladder:
        """Posteriors, priors and latents (samples, or posterior means) of every rung, bottom first."""
        return self.top_down_pass(self.bottom_up(input), stochastic)

    def top_down_pass(self, estimates: list[DiagonalGaussian], stochastic: bool = True) -> Ladder:
        """The top-down pass over the rungs' estimates (any leading shape, e.g. (B, S, D_i))."""
        top = estimates[-1]  # q(z_L|x) is the top rung's estimate itself
        posteriors, priors = (
            [top],
            [DiagonalGaussian(torch.zeros_like(top.mu), torch.zeros_like(top.log_var))],
        )
        latents = [top.rsample() if stochastic else top.mu]
        for estimate, prior_of in zip(reversed(estimates[:-1]), reversed(self.top_down)):
            prior = prior_of(latents[0])  # p(z_i|z_{i+1})
            posterior = precision_weighted(estimate, prior)  # q(z_i|.)
            posteriors.insert(0, posterior)
            priors.insert(0, prior)
            latents.insert(0, posterior.rsample() if stochastic else posterior.mu)
        return posteriors, priors, latents

    def encode(self, input: Tensor) -> DiagonalGaussian:
        """The bottom rung's q(z_1|.), the top-down pass run on posterior means (the code ``decode``
        takes); unpacks as ``[mu, log_var]``. Every rung's distributions: :meth:`ladder`."""
        posteriors, _, _ = self.ladder(input, stochastic=False)
        return posteriors[0]

    def forward(self, input: Tensor, **kwargs: Any) -> NamedTuple:  # LadderOutput (+ recon_params)
        posteriors, priors, latents = self.ladder(input)
        recons, params = self.decode_with_params(latents[0])
        values: dict[str, Any] = dict(  # tensors, and per-rung tuples of latents and distributions
            recons=recons,
            recon_params=params,
            input=input,
            mu=posteriors[0].mu,
            log_var=posteriors[0].log_var,
            latents=tuple(latents),
            posteriors=tuple(posteriors),
            priors=tuple(priors),
        )
        return self.pack(**values)

    def rung_kls(self, output: LadderOutput) -> list[Tensor]:
        """KL(q(z_i|.) || p(z_i|z_{i+1})) per rung, bottom first, (B,) each; the top against N(0, I)."""
        return [q.kl(p) for q, p in zip(output.posteriors, output.priors)]

    def regularizer(
        self, output: Any, kl_weight: float, global_step: int | None = None, **kwargs: Any
    ) -> tuple[Tensor, dict[str, Tensor]]:
        rung_kls = [kl.mean() for kl in self.rung_kls(output)]
        kld = torch.stack(rung_kls).sum()
        warmup = 1.0 if global_step is None else linear_warmup(global_step, self.warmup_steps)
        return warmup * kl_weight * kld, {"KLD": kld, **{f"KLD_z{i}": kl for i, kl in enumerate(rung_kls, 1)}}

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        z = torch.randn(num_samples, self.latent_dims[-1], device=self.device)  # z_L ~ N(0, I)
        for prior_of in reversed(self.top_down):
            z = prior_of(z).rsample()  # z_i ~ p(z_i|z_{i+1})
        return z.to(device)  # z_1, (N, D_1)

    # -- evaluation ------------------------------------------------------------------------------
    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        """KL(q(z_1,d|.) || p(z_1,d|z_2)) per dimension of the bottom rung (what ``embed`` and
        ``decode`` use), (B, D_1), the ladder run on posterior means; higher rungs not included."""
        posteriors, priors, _ = self.ladder(x, stochastic=False)
        return per_dimension(posteriors[0]).kl(per_dimension(priors[0]))

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        """All rungs sampled top-down, S times per input; log p and log q summed over the rungs
        (q(z_i|.) depends on the sampled z_{i+1}). Returns z_1, (B, S, D_1)."""
        estimates = [expand_samples(estimate, num_samples) for estimate in self.bottom_up(x)]
        posteriors, priors, latents = self.top_down_pass(estimates)  # (B, S, D_i) each
        zero = latents[0].new_zeros(())
        log_prior = sum((p.log_prob(z) for p, z in zip(priors, latents)), start=zero)
        log_posterior = sum((q.log_prob(z) for q, z in zip(posteriors, latents)), start=zero)
        return latents[0], log_prior, log_posterior
