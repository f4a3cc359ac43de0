"""The two-stage VAE of Dai & Wipf, "Diagnosing and Enhancing VAE Models" (ICLR 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vaezoo.losses import squared_error
from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.latent_vae import LatentVAE, learned_variance_nll
from vaezoo.registry import register_model

DEFAULT_STAGE2_WIDTH = 256  # hidden units of vaezoo's stage 2 (one layer in q(u|z), two in p(z|u))


class TwoStageOutput(NamedTuple):
    """``forward``'s result: stage 1's ``(recons, input, mu, log_var, z)``, then stage 2's on z."""

    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D) q(z|x)
    log_var: Tensor  # (B, D)
    z: Tensor  # (B, D)
    z_recons: Tensor  # (B, D) stage 2's reconstruction of z (the mean of p(z|u))
    u_mu: Tensor  # (B, D) stage 2's q(u|z)
    u_log_var: Tensor  # (B, D)


@register_model
class TwoStageVAE(VanillaVAE):
    """Two-stage VAE (Dai & Wipf 2019, "Diagnosing and Enhancing VAE Models", Sec. 4).

    Stage 1 is a Gaussian VAE whose decoder p(x|z) = N(x_hat(z), gamma I) has a learned variance
    gamma (a scalar, log gamma learned); its negative ELBO per example, D = C*H*W::

        loss_1 = ||x - x_hat||^2 / (2 gamma) + (D/2) log gamma + M_N * KL(q(z|x) || N(0, I))

    (with ``recon_reduction="mean"`` the first two terms are divided by D). As gamma -> 0 the
    reconstructions sharpen, but q(z) = E_x q(z|x) drifts from N(0, I). Stage 2 fixes sampling:
    a small MLP VAE over z ~ q(z|x), u ~ N(0, I), p(z|u) = N(z_hat(u), gamma_z I)::

        loss_2 = ||z - z_hat||^2 / (2 gamma_z) + (d/2) log gamma_z + M_N * KL(q(u|z) || N(0, I))

    and ``sample`` draws u ~ N(0, I) -> z_hat(u) -> stage-1 decoder.

    Unlike the paper, which trains stage 1 to convergence and then stage 2 on the fixed encoder's
    latents, both stages are trained in one step on loss = loss_1 + loss_2, so that one run, one
    optimizer, one config and one checkpoint make the whole model. Stage 2 reads ``z.detach()`` and
    its parameters are its own, so its gradient never reaches stage 1: stage 1 is trained exactly
    as in the paper. Stage 2 chases a moving target while stage 1 learns, and becomes the paper's
    stage 2 once stage 1 settles (train long enough for that; its loss keys show when).

    Evaluation (``kl_per_dimension``, ``log_importance_weights``) is stage one's model: q(z|x),
    p(z) = N(0, I) and N(x; x_hat, gamma I) with its constant, a normalised density (so
    ``likelihood_is_normalized`` is True; ``likelihood`` stays ``"mse"``). The bound is not that of
    the sampler through stage 2, whose p(z) has no closed form.

    Arguments in PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, hidden_dims2)``, with
    ``stage2_width`` and VanillaVAE's others by keyword only. ``hidden_dims2`` means what it means in
    PyTorch-VAE: the widths of stage 2's hidden layers, in its encoder in that order and in its
    decoder reversed (``[1024, 1024]``: two of 1024 in each; PyTorch-VAE also adds BatchNorm there,
    vaezoo does not). Left out, stage 2 is vaezoo's: one hidden layer of ``stage2_width`` (256) in
    the encoder and two in the decoder; give one of the two, not both.

    Completes PyTorch-VAE's TwoStageVAE, which was unfinished (only a vanilla-VAE loss, no stage 2,
    not importable). Loss keys: ``loss``, stage 1's ``Reconstruction_Loss`` (the gamma-NLL),
    ``KLD``, ``Log_Gamma``, and stage 2's ``Stage2_Loss``, ``Stage2_Reconstruction_Loss``,
    ``Stage2_KLD``, ``Stage2_Log_Gamma``.
    """

    output_cls: type[NamedTuple] = TwoStageOutput
    own_reconstruction = "its decoder is its own learned-variance Gaussian (log_gamma), already a likelihood"
    loss_keys: tuple[str, ...] = (
        "loss",
        "Reconstruction_Loss",
        "KLD",
        "Log_Gamma",
        "Stage2_Loss",
        "Stage2_Reconstruction_Loss",
        "Stage2_KLD",
        "Stage2_Log_Gamma",
    )

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        hidden_dims2: Sequence[int] | None = None,
        *,
        stage2_width: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        self.log_gamma = nn.Parameter(torch.zeros(()))  # stage 1's log gamma
        if hidden_dims2 is not None and stage2_width is not None:
            raise ValueError(
                "TwoStageVAE takes hidden_dims2 (stage 2's layer widths) or stage2_width (one width "
                "for vaezoo's stage 2), not both"
            )
        width = DEFAULT_STAGE2_WIDTH if stage2_width is None else stage2_width
        self.stage2 = LatentVAE(latent_dim, width if hidden_dims2 is None else list(hidden_dims2))

    def forward(self, input: Tensor, **kwargs: Any) -> NamedTuple:  # TwoStageOutput
        mu, log_var = self.encode(input)  # (B, D) each
        z = self.reparameterize(mu, log_var)  # (B, D)
        u_posterior = self.stage2.encoder(z.detach())  # stage 2 treats z as data: no gradient to stage 1
        z_recons = self.stage2.decoder(u_posterior.rsample())  # (B, D)
        return self.pack(
            recons=self.decode(z),
            input=input,
            mu=mu,
            log_var=log_var,
            z=z,
            z_recons=z_recons,
            u_mu=u_posterior.mu,
            u_log_var=u_posterior.log_var,
        )

    def reconstruction_loss(self, recons: Tensor, input: Tensor) -> Tensor:
        """Stage 1's -log p(x|z) per example, (B,): the learned-variance Gaussian NLL."""
        num_dims = input[0].numel() if self.recon_reduction == "sum" else 1
        return learned_variance_nll(
            squared_error(recons, input, self.recon_reduction), self.log_gamma, num_dims
        )

    def loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        stage1 = super().loss(output, M_N=M_N, **kwargs)  # recon (with gamma) + M_N * KL
        u_posterior = DiagonalGaussian(output.u_mu, output.u_log_var)
        stage2 = self.stage2.loss(output.z.detach(), output.z_recons, u_posterior, M_N)
        return {
            **stage1,
            "loss": stage1["loss"] + stage2["Stage2_Loss"],
            "Log_Gamma": self.log_gamma.detach(),
            **{key: value.detach() for key, value in stage2.items()},
            "Stage2_Log_Gamma": self.stage2.log_gamma.detach(),
        }

    # -- evaluation: stage one's model, p(z) = N(0, I) and the learned-variance Gaussian decoder --
    @property
    def likelihood_is_normalized(self) -> bool:
        return True  # N(x; x_hat, gamma I) with all its constants, see log_likelihood

    def log_likelihood(self, input: Tensor, params: Tensor) -> Tensor:
        """log N(x; x_hat, gamma I) per example, (B,), whatever ``recon_reduction`` training used:
        the NLL above plus the constant (D/2) log 2 pi it leaves out."""
        num_dims = input[0].numel()
        nll = learned_variance_nll(squared_error(params, input, "sum"), self.log_gamma, num_dims)
        return -nll - 0.5 * num_dims * math.log(2 * math.pi)

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        u = torch.randn(num_samples, self.latent_dim, device=self.device)  # u ~ N(0, I)
        return self.stage2.decoder(u).to(device)  # z_hat(u), (N, D)
