"""Regularised autoencoders (Ghosh et al. 2020): the deterministic :class:`~vaezoo.models.ae.AE`
with a latent-norm term and a smoothness penalty on the decoder. :class:`RAE` is the shared
objective; RAE_L2 and RAE_GP differ only in :meth:`RAE.decoder_penalty`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from vaezoo.models.ae import AE
from vaezoo.registry import register_model

Probe = Literal["gaussian", "ones"]
PROBES = ("gaussian", "ones")


def latent_norm(z: Tensor) -> Tensor:
    """L_z = 0.5 * ||z||^2 per example, (B,): Ghosh et al.'s Eq. 11 stand-in for the KL."""
    return 0.5 * z.pow(2).sum(dim=-1)


def squared_weights(module: torch.nn.Module) -> Tensor:
    """||theta||^2: the sum of the squares of every parameter of ``module`` (a scalar)."""
    return torch.stack([p.pow(2).sum() for p in module.parameters()]).sum()


def gradient_penalty(decoder: Callable[[Tensor], Tensor], z: Tensor, probe: Probe = "gaussian") -> Tensor:
    """||J^T v||^2 per example, (B,), where J = d decoder(z) / d z is the decoder's Jacobian at the
    codes z (B, D) and v a probe of the decoder's output shape.

    With ``probe="gaussian"`` (v ~ N(0, I)) its expectation is ||J||_F^2, the squared gradient norm
    of Sec. 3.1, at the cost of one vector-Jacobian product (Hutchinson's estimator); with
    ``"ones"`` it is the gradient of the summed output (what the authors' code and pythae compute),
    for a linear decoder W z + b the squared column sums of W. The decoder runs once more here, on
    z itself when it carries a graph (so the penalty reaches the encoder too) and on a detached
    copy otherwise (validation under ``no_grad``), where the result carries no graph.
    """
    if probe not in PROBES:
        raise ValueError(f"probe '{probe}' is not one of {PROBES}")
    build_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        if not (build_graph and z.requires_grad):
            z = z.detach().requires_grad_(True)
        outputs = decoder(z)  # (B, C, H, W) or (B, D_x)
        v = torch.randn_like(outputs) if probe == "gaussian" else torch.ones_like(outputs)
        (grad,) = torch.autograd.grad(outputs, z, grad_outputs=v, create_graph=build_graph)
    return grad.float().pow(2).flatten(1).sum(dim=1)  # (B,)


class RAE(AE):
    """The regularised-autoencoder objective of Ghosh et al. 2020, "From Variational to
    Deterministic Autoencoders" (ICLR), Eq. 11, with a deterministic encoder z = E(x):

        loss = mean_batch[ recon(x, D(z)) + beta * 0.5 * ||z||^2 ] + reg_weight * L_REG

    ``beta`` is the paper's beta (pythae's ``embedding_weight``), ``reg_weight`` its lambda and
    L_REG the subclass's :meth:`decoder_penalty`. The latent term only bounds the codes' scale: it
    is no prior to sample from, so ``samples_from_prior`` is False, as for :class:`AE`, and samples
    come from the ex-post Gaussian mixture the paper fits on training codes (Sec. 4; ``--sampler
    gmm``). ``M_N`` plays no part. Loss keys: ``loss``, ``Reconstruction_Loss``, ``Latent_Norm``
    (the batch mean of 0.5 ||z||^2) and the penalty's key.
    """

    penalty_key: ClassVar[str] = "Decoder_Penalty"

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        beta: float = 1.0,
        reg_weight: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        if beta < 0 or reg_weight < 0:
            raise ValueError(f"beta and reg_weight must be non-negative, got {beta} and {reg_weight}")
        self.beta = beta
        self.reg_weight = reg_weight

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        norm = latent_norm(output.z).mean()
        penalty = self.decoder_penalty(output)
        return self.beta * norm + self.reg_weight * penalty, {"Latent_Norm": norm, self.penalty_key: penalty}

    def decoder_penalty(self, output: Any) -> Tensor:
        """L_REG, the decoder's smoothness penalty (a scalar)."""
        raise NotImplementedError(f"{type(self).__name__} defines no decoder penalty")


@register_model
class RAE_L2(RAE):
    """RAE-L2 (Ghosh et al. 2020, Eq. 11 with the L2 regulariser of Sec. 3.1): L_REG = ||theta||^2,
    the sum of the squares of the decoder's parameters (weights, biases, normalisation scales).

    It is a loss term, not optimizer weight decay on the decoder (pythae's two optimizers): the
    objective stays the paper's equation whatever the optimizer (with Adam it equals weight decay
    2 * reg_weight on the decoder alone; with AdamW's decoupled decay it would not), it is logged
    as ``Decoder_L2``, and the one optimizer of the generic trainer needs no per-module hook.
    Loss keys: ``loss``, ``Reconstruction_Loss``, ``Latent_Norm``, ``Decoder_L2``.
    """

    penalty_key = "Decoder_L2"
    loss_keys = ("loss", "Reconstruction_Loss", "Latent_Norm", "Decoder_L2")

    def decoder_penalty(self, output: Any) -> Tensor:
        return squared_weights(self.decoder)


@register_model
class RAE_GP(RAE):
    """RAE-GP (Ghosh et al. 2020, Eq. 11 with the gradient penalty of Sec. 3.1): L_REG =
    mean_batch ||grad_z D(z)||^2 at the codes z = E(x), by autograd with ``create_graph=True`` so
    the penalty is itself trained through (:func:`gradient_penalty`). ``probe`` picks the estimate:
    ``"gaussian"`` (default) the unbiased one-product estimate of the Jacobian's squared Frobenius
    norm, ``"ones"`` the gradient of the summed output as in the authors' code. (pythae's RAE_GP
    differentiates with respect to the input x instead of z.) It costs one more decoder pass and a
    double backward per step; in training mode that pass updates BatchNorm's running statistics a
    second time, on the same codes. Loss keys: ``loss``, ``Reconstruction_Loss``, ``Latent_Norm``,
    ``Gradient_Penalty``.
    """

    penalty_key = "Gradient_Penalty"
    loss_keys = ("loss", "Reconstruction_Loss", "Latent_Norm", "Gradient_Penalty")

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        beta: float = 1.0,
        reg_weight: float = 1e-3,
        probe: Probe = "gaussian",
        **kwargs: Any,
    ) -> None:
        if probe not in PROBES:
            raise ValueError(f"probe '{probe}' is not one of {PROBES}")
        super().__init__(in_channels, latent_dim, hidden_dims, beta, reg_weight, **kwargs)
        self.probe = probe

    def decoder_penalty(self, output: Any) -> Tensor:
        return gradient_penalty(self.decode_params, output.z, self.probe).mean()
