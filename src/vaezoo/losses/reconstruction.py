"""Reconstruction errors, reduced per example."""

from __future__ import annotations

from torch import Tensor

RECON_REDUCTIONS = ("mean", "sum")


def check_recon_reduction(reduction: str) -> str:
    """``reduction`` if it is one of RECON_REDUCTIONS, else a ValueError naming the valid ones."""
    if reduction not in RECON_REDUCTIONS:
        raise ValueError(f"recon_reduction '{reduction}' is not one of {RECON_REDUCTIONS}")
    return reduction


def resolve_recon_reduction(reduction: str | None, likelihood: str = "mse") -> str:
    """The reconstruction scale of a model: ``None`` means ``"mean"`` for the squared error
    (PyTorch-VAE's scale) and ``"sum"`` for a likelihood, whose reconstruction term is the negative
    log-likelihood summed over pixels (so ``M_N = 1`` is the exact negative ELBO); a likelihood with
    ``"mean"`` is an error."""
    if reduction is None:
        return "mean" if likelihood == "mse" else "sum"
    check_recon_reduction(reduction)
    if likelihood != "mse" and reduction != "sum":
        raise ValueError(
            f"recon_reduction '{reduction}' with likelihood '{likelihood}': a likelihood's term is "
            "-log p(x|z) summed over pixels; set recon_reduction to 'sum' or leave it out (null)"
        )
    return reduction


def squared_error(recons: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Squared error per example, (B, ...) -> (B,).

    ``"mean"`` averages over pixels (PyTorch-VAE's ``F.mse_loss`` scale); ``"sum"`` adds them up,
    which is the negative log-likelihood of a Gaussian decoder with variance 1/2 up to a constant,
    the scale at which the papers' beta, gamma and capacity values hold.
    """
    error = (recons - target).pow(2).flatten(start_dim=1)
    if reduction == "mean":
        return error.mean(dim=1)
    if reduction == "sum":
        return error.sum(dim=1)
    raise ValueError(f"recon_reduction '{reduction}' is not one of {RECON_REDUCTIONS}")
