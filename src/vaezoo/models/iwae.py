"""The importance weighted autoencoder of Burda, Grosse & Salakhutdinov (ICLR 2016)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from torch import Tensor

from vaezoo.losses.importance import log_importance_weights, multi_sample_bound
from vaezoo.models.vanilla_vae import VanillaVAE, expand_samples
from vaezoo.nn.distributions import DiagonalGaussian, log_standard_normal
from vaezoo.registry import register_model


class ImportanceOutput(NamedTuple):
    """``forward``'s result: the shared ``(recons, input, mu, log_var)`` prefix, then every sample."""

    recons: Tensor  # (B, C, H, W) the reconstruction from the first latent sample
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D)
    log_var: Tensor  # (B, D)
    z: Tensor  # (B, S, D) S latent samples per input
    all_recons: Tensor  # (B, S, C, H, W) their reconstructions


@register_model
class IWAE(VanillaVAE):
    """Importance weighted autoencoder (Burda et al. 2016, "Importance Weighted Autoencoders").

    The VAE's networks, trained on the k-sample bound of Eq. 8 instead of the ELBO::

        log w_i = log p(x|z_i) + M_N * (log p(z_i) - log q(z_i|x)),    z_1..z_k ~ q(z|x)
        loss    = -mean_batch log (1/k) sum_i w_i

    ``log p(x|z)`` is minus the model's reconstruction loss (per example, at ``recon_reduction``'s
    scale: ``"sum"`` with ``M_N = 1`` is the paper's bound), p(z) = N(0, I). The bound is computed
    with logsumexp, so its gradient is sum_i w~_i grad log w_i with w~ = softmax(log w) (Eq. 14):
    the samples that explain x best get the largest weights. With k = 1 it is the one-sample ELBO.

    Fixes PyTorch-VAE's IWAE, whose weights were the softmax of the per-sample *loss* (so the worst
    samples were up-weighted) and whose ``eps = (z - mu) / log_var`` was wrong.

    ``forward`` decodes all k samples (``all_recons``, (B, k, C, H, W)); item 0 is the first one.
    With a ``likelihood`` other than mse, log p(x|z) is that likelihood (``recon_reduction="sum"``)
    and the output's last field ``recon_params`` holds the parameters of all k reconstructions.
    Loss keys: ``loss``; ``Reconstruction_Loss`` and ``KLD`` (the Monte Carlo estimate
    log q - log p) averaged over samples; ``ELBO``, the mean log-weight, a bound that ``-loss``
    always meets or beats.

    Signature: PyTorch-VAE's ``(in_channels, latent_dim, hidden_dims, num_samples)``, then
    VanillaVAE's keyword-only arguments.
    """

    output_cls: type[NamedTuple] = ImportanceOutput
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD", "ELBO")
    kl_terms = ()  # its KLD is the importance-weighted estimate of log q - log p
    num_estimates: int = 1  # groups the samples are averaged in (MIWAE's M); the IWAE has one

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        num_samples: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        self.num_samples = num_samples

    @property
    def samples_per_input(self) -> int:
        return self.num_estimates * self.num_samples

    def forward(self, input: Tensor, **kwargs: Any) -> NamedTuple:  # ImportanceOutput (+ recon_params)
        mu, log_var = self.encode(input)  # (B, D) each
        z = expand_samples(DiagonalGaussian(mu, log_var), self.samples_per_input).rsample()  # (B, S, D)
        all_recons, all_params = self.decode_with_params(z.flatten(0, 1))  # (B*S, C, H, W) each
        all_recons, all_params = (t.unflatten(0, z.shape[:2]) for t in (all_recons, all_params))
        return self.pack(
            recons=all_recons[:, 0],
            input=input,
            mu=mu,
            log_var=log_var,
            z=z,
            all_recons=all_recons,
            recon_params=all_params,  # (B, S, C, H, W), with a likelihood other than mse
        )

    def sample_terms(self, output: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Per example and sample, (B, S) each: the reconstruction loss (-log p(x|z_s), up to a
        constant for mse), log p(z_s) and log q(z_s|x). ``output``: the model's ``output_cls``
        (:class:`ImportanceOutput`, with ``recon_params`` for a likelihood other than mse)."""
        batch, samples = output.z.shape[:2]
        params = self.recon_params(output, "all_recons")  # (B, S, C, H, W)
        targets = output.input.unsqueeze(1).expand_as(params)  # (B, S, C, H, W)
        recon = self.reconstruction_loss(params.flatten(0, 1), targets.flatten(0, 1))
        posterior = DiagonalGaussian(output.mu.unsqueeze(1), output.log_var.unsqueeze(1))  # broadcast over S
        return recon.view(batch, samples), log_standard_normal(output.z), posterior.log_prob(output.z)

    def bound(self, log_w: Tensor) -> Tensor:
        """The objective per example, (B,), from the (B, S) log-weights: the IWAE-k bound (MIWAE:
        the mean of its M bounds). The hook CIWAE overrides."""
        return multi_sample_bound(log_w, self.num_estimates)

    def loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        recon, log_prior, log_posterior = self.sample_terms(output)  # (B, S) each
        log_w = log_importance_weights(-recon, log_prior, log_posterior, M_N)  # (B, S)
        loss = -self.bound(log_w).mean()
        return {
            "loss": loss,
            "Reconstruction_Loss": recon.mean().detach(),
            "KLD": (log_posterior - log_prior).mean().detach(),
            "ELBO": log_w.mean().detach(),
        }
