"""A deep hierarchical VAE with spatial latent groups, after NVAE (Vahdat & Kautz 2020) and VDVAE
(Child 2021)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from vaezoo.models.base import BaseVAE, Device, resolve_device
from vaezoo.nn.blocks import output_activation as activation_layer
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.likelihoods import LikelihoodName
from vaezoo.nn.residual import ResidualCell, downsample, upsample
from vaezoo.nn.spectral import SpectralNorms
from vaezoo.registry import register_model

# One group's choice in the top-down pass: (group index, decoder state h, prior) -> (z, posterior).
Chooser = Callable[[int, Tensor, DiagonalGaussian], tuple[Tensor, DiagonalGaussian | None]]


def soft_clamp(x: Tensor, bound: float = 5.0) -> Tensor:
    """bound * tanh(x / bound): a smooth clamp of log-variances (NVAE's soft clamp)."""
    return bound * torch.tanh(x / bound)


def kl_balancing_coefficients(kls: Tensor, group_sizes: Tensor, floor: float = 0.01) -> Tensor:
    """NVAE's KL balancing coefficients (Vahdat & Kautz 2020, Appendix A), (L,) from (B, L) KLs.

    gamma_l is proportional to the batch-mean KL of group l (plus ``floor``) divided by the group's
    size s_l, normalised to mean 1: gamma_l = L r_l / sum_j r_j with r_l = (mean_b |KL_bl| + floor) / s_l.
    Groups that carry little information get a small weight, so none collapses during warm-up.
    """
    ratio = (kls.abs().mean(dim=0) + floor) / group_sizes  # (L,)
    return ratio / ratio.mean()


class GroupSpec(NamedTuple):
    """Where a latent group sits: its scale (0 = the coarsest) and its shape (C, H, W)."""

    scale: int
    shape: tuple[int, int, int]


class HierarchyOutput(NamedTuple):
    """``forward``'s result; the groups are listed top-down (coarsest first)."""

    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D) every group's posterior mean, flattened and concatenated
    log_var: Tensor  # (B, D)
    latents: tuple[Tensor, ...]  # z_l, (B, C_z H_l W_l) each
    posteriors: tuple[DiagonalGaussian, ...]  # q(z_l|x, z_<l)
    priors: tuple[DiagonalGaussian, ...]  # p(z_l|z_<l)


class TopDownGroup(nn.Module):
    """One latent group of the top-down pass: residual cells on h, the prior p(z_l|z_<l) from h, the
    posterior q(z_l|x, z_<l) from h and the encoder's feature, and z merged back into h."""

    def __init__(self, channels: int, latent_channels: int, cells: int) -> None:
        super().__init__()
        self.cells = nn.Sequential(*(ResidualCell(channels) for _ in range(cells)))
        self.prior = nn.Conv2d(channels, 2 * latent_channels, kernel_size=3, padding=1)
        self.posterior = nn.Conv2d(2 * channels, 2 * latent_channels, kernel_size=3, padding=1)
        self.merge = nn.Conv2d(latent_channels, channels, kernel_size=1)
        for head in (self.prior, self.posterior):  # start at the standard normal, q = p
            nn.init.zeros_(head.weight)
            if head.bias is not None:
                nn.init.zeros_(head.bias)

    def prior_of(self, h: Tensor) -> DiagonalGaussian:
        mu, log_var = self.prior(h).chunk(2, dim=1)  # (B, C_z, H, W) each
        return DiagonalGaussian(mu.flatten(1), soft_clamp(log_var).flatten(1))

    def posterior_of(self, h: Tensor, feature: Tensor, prior: DiagonalGaussian) -> DiagonalGaussian:
        """NVAE's residual normal (Sec. 3.2, Eq. 2): q's parameters are offsets from p's."""
        d_mu, d_log_var = self.posterior(torch.cat([h, feature], dim=1)).chunk(2, dim=1)
        return DiagonalGaussian(prior.mu + d_mu.flatten(1), prior.log_var + soft_clamp(d_log_var).flatten(1))


@register_model(aliases=("DeepHVAE", "NVAE"))
class DeepHierarchicalVAE(BaseVAE):
    """A deep hierarchical VAE (Vahdat & Kautz 2020, "NVAE: A Deep Hierarchical Variational
    Autoencoder"; Child 2021, "Very Deep VAEs Generalize Autoregressive Models and Can Outperform
    Them on Images").

    Generative model (NVAE Eq. 1): p(z) = prod_l p(z_l | z_<l) over L spatial latent groups of
    ``latent_channels`` channels, ``groups_per_scale[s]`` of them at scale s (coarsest first; scale s
    has resolution image_size / 2^(preprocess_downsamples + S - 1 - s)). A decoder state h starts as a
    learned tensor at the coarsest scale; each group runs residual cells on h, reads its prior
    N(mu_p(h), sigma_p^2(h)), and adds a 1x1 projection of z_l to h; h is upsampled between scales and
    to the image, where p(x|z) is the likelihood (e.g. ``discretized_logistic``).

    Inference is bidirectional (NVAE Sec. 3.1): a bottom-up residual encoder leaves one feature map
    per group; the same top-down pass then draws z_l ~ q(z_l|x, z_<l), whose mean and log-variance are
    offsets from the prior's (the residual normal, Sec. 3.2, Eq. 2), so
    KL_l = KL(q(z_l|x, z_<l) || p(z_l|z_<l)) is closed-form and the ELBO is
    log p(x|z) - sum_l KL_l.

    Loss::

        loss = recon + M_N * sum_l gamma_l KL_l + spectral_coefficient * sum_i s(W_i)

    - KL warm-up: ``M_N`` is ``train.kl_weight`` times ``train.kl_schedule``'s factor; use
      ``kl_schedule: linear`` with ``kl_schedule_steps`` a fraction of the run (NVAE Sec. 3.2).
    - KL balancing (NVAE Appendix A, ``kl_balance``): while M_N < 1 the group KLs are weighted by
      :func:`kl_balancing_coefficients` (mean 1, no gradient through them); afterwards gamma_l = 1,
      the plain ELBO.
    - Spectral regularisation (NVAE Sec. 3.2): the largest singular value of every convolution,
      by power iteration (:class:`~vaezoo.nn.spectral.SpectralNorms`), off when
      ``spectral_coefficient`` is 0.
    - Skipping updates with huge gradient norms (VDVAE Sec. 4): ``train.skip_grad_norm``.

    ``sample(n, device, temperature=t)`` draws z_l = mu_p + t sigma_p eps (t = 0: the prior means,
    deterministic). ``decode`` takes every group's z flattened and concatenated, (B, D), D =
    ``latent_dim``; ``embed`` is that code on the posterior-mean path. ``log_importance_weights`` weigh
    the whole hierarchy, log p(x|z) + sum_l [log p(z_l|z_<l) - log q(z_l|x, z_<l)].

    Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD`` (the sum, unweighted), ``KLD_group1`` ..
    ``KLD_groupL`` (top-down order), ``Spectral_Reg``.
    """

    output_cls: type[NamedTuple] = HierarchyOutput
    group_sizes: Tensor  # (L,) latents per group, a buffer
    kl_terms = ()  # KLs against the learned top-down priors, not against N(0, I)
    samples_with_temperature = True

    def __init__(
        self,
        in_channels: int,
        latent_dim: int | None = None,
        *,
        image_size: int = 32,
        channels: int = 32,
        groups_per_scale: Sequence[int] = (4, 4),
        latent_channels: int = 4,
        cells_per_group: int = 1,
        preprocess_downsamples: int = 2,
        kl_balance: bool = True,
        spectral_coefficient: float = 0.0,
        power_iterations: int = 1,
        output_activation: Literal["sigmoid", "tanh", "none"] = "sigmoid",
        recon_reduction: Literal["mean", "sum"] | None = None,
        likelihood: LikelihoodName = "discretized_logistic",
        likelihood_scale: Literal["fixed", "learned"] = "learned",
        likelihood_std: float = 0.1,
        architecture: str = "conv",
    ) -> None:
        super().__init__()
        # images only: architecture "mlp" is refused, naming the models that take vectors
        self.check_architecture(architecture)
        self.groups = self.group_specs(image_size, groups_per_scale, latent_channels, preprocess_downsamples)
        total = sum(math.prod(spec.shape) for spec in self.groups)
        if latent_dim is not None and latent_dim != total:
            raise ValueError(
                f"latent_dim = {latent_dim}, but the groups hold {total} latents (groups_per_scale = "
                f"{list(groups_per_scale)}, latent_channels = {latent_channels}); leave latent_dim out"
            )
        for key, value in dict(channels=channels, cells_per_group=cells_per_group).items():
            if value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value}")
        if spectral_coefficient < 0 or power_iterations < 1:
            raise ValueError(
                f"spectral_coefficient must be >= 0 and power_iterations >= 1, got "
                f"{spectral_coefficient} and {power_iterations}"
            )
        self.latent_dim, self.image_size, self.in_channels = total, image_size, in_channels
        self.kl_balance, self.spectral_coefficient = kl_balance, spectral_coefficient
        self.power_iterations = power_iterations
        self.loss_keys = (
            "loss",
            "Reconstruction_Loss",
            "KLD",
            *(f"KLD_group{i}" for i in range(1, len(self.groups) + 1)),
            "Spectral_Reg",
        )
        activation = self.setup_likelihood(
            likelihood, output_activation, recon_reduction, likelihood_scale, likelihood_std
        )
        self.build_encoder(in_channels, channels, cells_per_group, preprocess_downsamples)
        self.build_decoder(in_channels, channels, latent_channels, cells_per_group, preprocess_downsamples)
        self.out_activation = activation_layer(activation)
        self.register_buffer(
            "group_sizes", torch.tensor([float(math.prod(spec.shape)) for spec in self.groups])
        )
        self.spectral = SpectralNorms(self.conv_weights())

    @staticmethod
    def group_specs(
        image_size: int, groups_per_scale: Sequence[int], latent_channels: int, preprocess: int
    ) -> list[GroupSpec]:
        """Every group's scale and (C, H, W), top-down; checks the sizes fit together."""
        counts = list(groups_per_scale)
        if not counts or min(counts) < 1 or latent_channels < 1 or preprocess < 0:
            raise ValueError(
                f"groups_per_scale needs positive counts (got {counts}), latent_channels a positive "
                f"integer (got {latent_channels}), preprocess_downsamples >= 0 (got {preprocess})"
            )
        factor = 2 ** (preprocess + len(counts) - 1)
        if image_size % factor or image_size < factor:
            raise ValueError(
                f"image_size = {image_size} must be a multiple of 2^(preprocess_downsamples + scales - 1) "
                f"= {factor} for groups_per_scale = {counts}"
            )
        coarsest = image_size // factor
        return [
            GroupSpec(s, (latent_channels, coarsest * 2**s, coarsest * 2**s))
            for s, count in enumerate(counts)
            for _ in range(count)
        ]

    def build_encoder(self, in_channels: int, channels: int, cells: int, preprocess: int) -> None:
        """The bottom-up pass: a stem and ``preprocess`` strided convolutions, then per scale (finest first) one
        stack of residual cells per group, whose outputs are the groups' features."""
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)]
        for _ in range(preprocess):  # plain strided convolutions: cells at full size cost too much
            layers += [nn.SiLU(), downsample(channels)]
        self.pre_down = nn.Sequential(*layers)
        self.up_cells = nn.ModuleList(
            nn.Sequential(*(ResidualCell(channels) for _ in range(cells))) for _ in self.groups
        )
        self.up_down = nn.ModuleList(downsample(channels) for _ in range(self.groups[-1].scale))

    def build_decoder(
        self, in_channels: int, channels: int, z_channels: int, cells: int, preprocess: int
    ) -> None:
        """The top-down pass: h_0, one :class:`TopDownGroup` per group, upsamplings between scales,
        transposed convolutions to the image."""
        top = self.groups[0].shape[1]
        self.h_top = nn.Parameter(torch.zeros(1, channels, top, top))
        self.down_groups = nn.ModuleList(TopDownGroup(channels, z_channels, cells) for _ in self.groups)
        self.scale_up = nn.ModuleList(upsample(channels) for _ in range(self.groups[-1].scale))
        widths = [channels] * preprocess + [in_channels]
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):  # transposed convolutions up to the image
            layers += [nn.SiLU(), nn.ConvTranspose2d(a, b, kernel_size=4, stride=2, padding=1)]
        if not preprocess:
            layers += [nn.SiLU(), nn.Conv2d(channels, in_channels, kernel_size=3, padding=1)]
        self.post_up = nn.Sequential(*layers)

    def conv_weights(self) -> list[Tensor]:
        """The weights the spectral regulariser bounds: every convolution's."""
        return [m.weight for m in self.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]

    # -- the two passes ------------------------------------------------------------------------
    def bottom_up(self, x: Tensor) -> list[Tensor]:
        """One feature map per group, top-down order, (B, channels, H_l, W_l) each."""
        d = self.pre_down(x)
        features = []
        for index in reversed(range(len(self.groups))):  # finest group first
            d = self.up_cells[index](d)
            features.append(d)
            scale = self.groups[index].scale
            if index and self.groups[index - 1].scale < scale:  # on to the next coarser scale
                d = self.up_down[scale - 1](d)
        return features[::-1]

    def top_down(
        self, batch: int, choose: Chooser
    ) -> tuple[Tensor, list[Tensor], list[Any], list[DiagonalGaussian]]:
        """Run the decoder, ``choose`` giving each group's z (and posterior): the likelihood
        parameters (B, C, H, W), and per group z_l, q (or None) and p, top-down."""
        h = self.h_top.expand(batch, -1, -1, -1)
        latents, posteriors, priors = [], [], []
        groups: list[TopDownGroup] = list(self.down_groups)  # type: ignore[arg-type]
        for index, (spec, group) in enumerate(zip(self.groups, groups)):
            if index and spec.scale > self.groups[index - 1].scale:
                h = self.scale_up[spec.scale - 1](h)
            h = group.cells(h)
            prior = group.prior_of(h)
            z, posterior = choose(index, h, prior)  # (B, C_z H W)
            h = h + group.merge(z.view(batch, *spec.shape))
            latents.append(z)
            posteriors.append(posterior)
            priors.append(prior)
        params = self.out_activation(self.post_up(h))
        return params, latents, posteriors, priors

    def infer(
        self, x: Tensor, stochastic: bool = True, repeats: int = 1
    ) -> tuple[Tensor, list[Tensor], list[Any], list[DiagonalGaussian]]:
        """The top-down pass under q(z|x): z_l ~ q (or its mean), each input ``repeats`` times."""
        features = [f.repeat_interleave(repeats, dim=0) for f in self.bottom_up(x)]

        def posterior(index: int, h: Tensor, prior: DiagonalGaussian) -> tuple[Tensor, DiagonalGaussian]:
            group: TopDownGroup = self.down_groups[index]  # type: ignore[assignment]
            q = group.posterior_of(h, features[index], prior)
            return (q.rsample() if stochastic else q.mu), q

        return self.top_down(x.shape[0] * repeats, posterior)

    # -- the BaseVAE API -----------------------------------------------------------------------
    def encode(self, input: Tensor) -> DiagonalGaussian:
        """Every group's q(z_l|x, z_<l) on the posterior-mean path, flattened and concatenated (B, D)."""
        _, _, posteriors, _ = self.infer(input, stochastic=False)
        return DiagonalGaussian(
            torch.cat([q.mu for q in posteriors], dim=1), torch.cat([q.log_var for q in posteriors], dim=1)
        )

    def split(self, z: Tensor) -> list[Tensor]:
        """(B, D) codes -> every group's (B, C_z H_l W_l), top-down."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"codes must be (B, {self.latent_dim}), got {tuple(z.shape)}")
        return list(z.split([math.prod(spec.shape) for spec in self.groups], dim=1))

    def decode_params(self, z: Tensor) -> Tensor:
        parts = self.split(z)
        return self.top_down(z.shape[0], lambda index, h, prior: (parts[index], None))[0]

    def forward(self, input: Tensor, **kwargs: Any) -> NamedTuple:  # HierarchyOutput (+ recon_params)
        params, latents, posteriors, priors = self.infer(input)
        values: dict[str, Any] = dict(  # tensors, and per-group tuples of latents and distributions
            recons=self.likelihood.mean(params),
            recon_params=params,
            input=input,
            mu=torch.cat([q.mu for q in posteriors], dim=1),
            log_var=torch.cat([q.log_var for q in posteriors], dim=1),
            latents=tuple(latents),
            posteriors=tuple(posteriors),
            priors=tuple(priors),
        )
        return self.pack(**values)

    def loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        recon = self.reconstruction_loss(self.recon_params(output), output.input).mean()
        kls = torch.stack([q.kl(p) for q, p in zip(output.posteriors, output.priors)], dim=1)  # (B, L)
        weights = torch.ones_like(self.group_sizes)
        if self.kl_balance and M_N < 1:
            weights = kl_balancing_coefficients(kls.detach(), self.group_sizes)
        spectral = recon.new_zeros(())
        if self.spectral_coefficient > 0 and self.training:
            spectral = self.spectral(self.conv_weights(), self.power_iterations).sum()
        loss = recon + M_N * (kls * weights).sum(dim=1).mean() + self.spectral_coefficient * spectral
        group_kls = kls.mean(dim=0)
        return {
            "loss": loss,
            "Reconstruction_Loss": recon,
            "KLD": group_kls.sum(),
            **{f"KLD_group{i}": kl for i, kl in enumerate(group_kls, 1)},
            "Spectral_Reg": spectral,
        }

    def sample(
        self, num_samples: int, current_device: Device = None, temperature: float = 1.0, **kwargs: Any
    ) -> Tensor:
        """Images from the prior with z_l = mu_p + ``temperature`` sigma_p eps (NVAE Sec. 5)."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")

        def from_prior(index: int, h: Tensor, prior: DiagonalGaussian) -> tuple[Tensor, None]:
            return prior.mu + temperature * prior.std * torch.randn_like(prior.mu), None

        params = self.top_down(num_samples, from_prior)[0]
        return self.likelihood.mean(params).to(resolve_device(current_device, self.device))

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        """Codes z ~ p(z) (B, D), drawn group by group through the top-down priors."""
        _, latents, _, _ = self.top_down(num_samples, lambda index, h, prior: (prior.rsample(), None))
        return torch.cat(latents, dim=1).to(device)

    # -- evaluation ------------------------------------------------------------------------------
    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        """KL(q(z_d|x, z_<l) || p(z_d|z_<l)) per latent dimension on the posterior-mean path, (B, D)."""
        _, _, posteriors, priors = self.infer(x, stochastic=False)
        q_mu, q_lv = (torch.cat([getattr(q, k) for q in posteriors], 1) for k in ("mu", "log_var"))
        p_mu, p_lv = (torch.cat([getattr(p, k) for p in priors], 1) for k in ("mu", "log_var"))
        return 0.5 * (torch.exp(q_lv - p_lv) + (q_mu - p_mu) ** 2 * torch.exp(-p_lv) - 1.0 - q_lv + p_lv)

    def log_importance_weights(self, x: Tensor, num_samples: int, **kwargs: Any) -> Tensor:
        """log p(x|z) + sum_l [log p(z_l|z_<l) - log q(z_l|x, z_<l)], z ~ q, (B, S) in nats; the
        encoder runs once per input, the top-down pass once per draw."""
        params, latents, posteriors, priors = self.infer(x, repeats=num_samples)
        targets = x.repeat_interleave(num_samples, dim=0)
        log_w = self.log_likelihood(targets, params)
        for z, q, p in zip(latents, posteriors, priors):
            log_w = log_w + p.log_prob(z) - q.log_prob(z)
        return log_w.view(x.shape[0], num_samples)
