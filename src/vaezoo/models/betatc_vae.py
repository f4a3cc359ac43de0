"""beta-TCVAE: the KL term split into mutual information, total correlation and dimension-wise KL."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor

from vaezoo.losses.schedules import linear_warmup
from vaezoo.losses.total_correlation import TC_SAMPLINGS, kl_decomposition
from vaezoo.models.vanilla_vae import VAEOutputWithZ, VanillaVAE
from vaezoo.registry import register_model


@register_model
class BetaTCVAE(VanillaVAE):
    """beta-TCVAE: Chen et al. (2018), "Isolating Sources of Disentanglement in Variational
    Autoencoders" (NeurIPS).

    The KL term of the ELBO decomposes (Eq. 2) into the index-code mutual information, the total
    correlation of q(z) and the dimension-wise KL; the beta-TCVAE objective (Eq. 4) weighs them
    apart, each estimated per example and averaged over the batch::

        loss = recon + M_N * (alpha * MI + beta * TC + w(step) * gamma * dimension-wise KL)

    With alpha = beta = gamma = 1 the bracket is a Monte Carlo estimate of the KL, so ``M_N``
    keeps its meaning (the KL weight; 1 with ``recon_reduction="sum"`` is the paper's setting).
    log q(z) and log prod_j q(z_j) are estimated on the minibatch (see
    :mod:`vaezoo.losses.total_correlation`) by minibatch-weighted sampling (``sampling="mws"``,
    Sec. 4.1) or minibatch-stratified sampling (``"mss"``, Appendix C.1), which needs the number
    of training images, ``dataset_size`` (filled in by the trainer from the data). Both take the
    log of a minibatch estimate of q(z), so they are biased low for small batches (the logged TC
    can be negative); the decomposition MI + TC + dimension-wise KL = KL holds exactly regardless.
    ``anneal_steps`` > 0 warms the dimension-wise KL weight w from 0 to 1 over that many training
    steps (PyTorch-VAE's option, not in the paper); 0 turns it off.

    Without ``dataset_size`` (``"mss"`` only), the size is derived as PyTorch-VAE derives it, from
    the KL weight of each ``loss_function`` call: N = round(batch_size / M_N). That is the data set
    size only when M_N = B/N (and N = B in a validation call with M_N = 1), so the constructor warns
    once and recommends passing ``dataset_size``; M_N keeps its meaning as the KL weight.

    Signature: PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, anneal_steps, alpha,
    beta, gamma)``; ``sampling``, ``dataset_size`` and VanillaVAE's arguments are keyword-only.

    Fixed from PyTorch-VAE: it ignored M_N as a weight (and the data-set size derived from it is
    wrong for any kl_weight but B/N); here the warm-up is a function of the trainer's
    ``global_step`` (no ``global_step``: w = 1). Logged: ``MI_Loss``, ``TC_Loss``, ``KLD`` (the
    dimension-wise KL) and a per-image-mean or per-image-sum ``Reconstruction_Loss`` as configured.

    Under DDP the estimates of log q(z) are per process: each mixes the posteriors of its own batch
    only (not gathered), so P processes of batch B estimate with minibatches of B (the bias for small
    batches is that of B, not P * B); ``"mss"``'s weights use the local batch size and the whole
    ``dataset_size``.
    """

    output_cls = VAEOutputWithZ
    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "MI_Loss", "TC_Loss", "KLD")
    kl_terms = ()  # its KLD is the minibatch estimate of the decomposition, not the closed form

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        anneal_steps: int = 0,
        alpha: float = 1.0,
        beta: float = 6.0,
        gamma: float = 1.0,
        *,
        sampling: Literal["mws", "mss"] = "mss",
        dataset_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if sampling not in TC_SAMPLINGS:
            raise ValueError(f"sampling '{sampling}' is not one of {TC_SAMPLINGS}")
        if dataset_size is not None and dataset_size < 1:
            raise ValueError(
                f"BetaTCVAE: dataset_size must be the number of training images, got {dataset_size!r}"
            )
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.sampling = sampling
        self.dataset_size = dataset_size
        self.anneal_steps = anneal_steps
        if sampling == "mss" and dataset_size is None:
            warnings.warn(
                "BetaTCVAE: no dataset_size given, so minibatch-stratified sampling derives it from the KL "
                "weight of each loss_function call, as PyTorch-VAE does (dataset_size = batch_size / M_N), "
                "which is the data set size only when M_N = batch_size / N; pass dataset_size=<number of "
                "training images> (vaezoo's trainer fills it in from the data)",
                UserWarning,
                stacklevel=3,  # the caller of the (config-recording) constructor
            )

    def tc_dataset_size(self, batch_size: int, kl_weight: float) -> int | None:
        """The N of minibatch-stratified sampling: ``dataset_size``, or else PyTorch-VAE's
        round(batch_size / M_N)."""
        if self.sampling != "mss" or self.dataset_size is not None:
            return self.dataset_size
        if not kl_weight > 0:
            raise ValueError(
                f"BetaTCVAE without dataset_size derives it as batch_size / M_N, which needs M_N > 0 "
                f"(got M_N={kl_weight!r}); pass dataset_size=<number of training images>"
            )
        return max(round(batch_size / float(kl_weight)), batch_size)

    def regularizer(
        self, output: Any, kl_weight: float, global_step: int | None = None, **kwargs: Any
    ) -> tuple[Tensor, dict[str, Tensor]]:
        dataset_size = self.tc_dataset_size(output.z.shape[0], kl_weight)
        terms = kl_decomposition(output.z, output.mu, output.log_var, self.sampling, dataset_size)
        mi, tc, dimensionwise_kl = (term.mean() for term in terms)  # batch means of (B,) estimates
        warmup = 1.0 if global_step is None else linear_warmup(global_step, self.anneal_steps)
        penalty = self.alpha * mi + self.beta * tc + warmup * self.gamma * dimensionwise_kl
        return kl_weight * penalty, {"MI_Loss": mi, "TC_Loss": tc, "KLD": dimensionwise_kl}
