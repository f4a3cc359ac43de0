"""beta-VAE, in its two forms: a heavier KL weight, or a KL pinned to a growing capacity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from torch import Tensor

from vaezoo.arguments import Alias, as_int
from vaezoo.losses.schedules import linear_capacity
from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.registry import register_model

LOSS_TYPES = ("H", "B")


@register_model
class BetaVAE(VanillaVAE):
    """beta-VAE: the Gaussian VAE with a reweighted or capacity-constrained KL term.

    ``loss_type="H"`` -- Higgins et al. (2017), "beta-VAE: Learning Basic Visual Concepts with a
    Constrained Variational Framework" (ICLR), Eq. 4::

        loss = recon + beta * M_N * KL

    ``loss_type="B"`` -- Burgess et al. (2018), "Understanding disentangling in beta-VAE", Eq. 8::

        loss = recon + gamma * M_N * |KL - C|,   C = linear_capacity(global_step, max_capacity,
                                                                      capacity_anneal_steps)

    The capacity C (nats) rises linearly from 0 to ``max_capacity`` over ``capacity_anneal_steps``
    training steps. KL is the batch mean of the per-example KL, as in disentanglement_lib's
    AnnealedVAE. With ``recon_reduction="sum"`` and ``M_N = 1`` the papers' beta, gamma and C hold.

    Fixed from PyTorch-VAE: the capacity schedule counted a class attribute bumped by every loss
    call (validation included) and lost on resume; here it is a pure function of the trainer's
    ``global_step`` (training batches so far). Called without ``global_step`` (plain Python use),
    the end of the schedule, C = ``max_capacity``, is used. Logged: ``KLD`` (true sign) and, for
    "B", the current ``Capacity``.

    Signature: PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, beta, gamma,
    max_capacity, capacity_anneal_steps, loss_type)``, then VanillaVAE's keyword-only arguments.
    PyTorch-VAE's ``Capacity_max_iter`` is accepted for ``capacity_anneal_steps`` (the same number of
    steps over which C reaches ``max_capacity``; its float default ``1e5`` becomes the int 100000).
    """

    loss_keys: tuple[str, ...] = ("loss", "Reconstruction_Loss", "KLD", "Capacity")  # "H": no Capacity
    argument_aliases: ClassVar[dict[str, str | Alias]] = {
        "Capacity_max_iter": Alias("capacity_anneal_steps", as_int)
    }

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        beta: float = 4.0,
        gamma: float = 1000.0,
        max_capacity: float = 25.0,
        capacity_anneal_steps: int = 100_000,
        loss_type: Literal["H", "B"] = "B",
        **kwargs: Any,
    ) -> None:
        if loss_type not in LOSS_TYPES:
            raise ValueError(
                f"loss_type '{loss_type}' is not one of {LOSS_TYPES} (H: Higgins et al., B: Burgess et al.)"
            )
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        self.beta = beta
        self.gamma = gamma
        self.max_capacity = max_capacity
        self.capacity_anneal_steps = as_int(capacity_anneal_steps)  # 1e5, given positionally, is 100000
        self.loss_type = loss_type
        if loss_type == "H":
            self.loss_keys = VanillaVAE.loss_keys

    def capacity(self, global_step: int | None = None) -> float:
        """C at a training step, in nats; the final value when no step is given."""
        if global_step is None:
            return float(self.max_capacity)
        return linear_capacity(global_step, self.max_capacity, self.capacity_anneal_steps)

    def regularizer(
        self, output: Any, kl_weight: float, global_step: int | None = None, **kwargs: Any
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.loss_type == "H":
            return super().regularizer(output, self.beta * kl_weight)
        _, terms = super().regularizer(output, kl_weight)
        kld = terms["KLD"]  # batch mean of KL(q(z|x) || p(z))
        capacity = kld.new_tensor(self.capacity(global_step))
        return self.gamma * kl_weight * (kld - capacity).abs(), {"KLD": kld, "Capacity": capacity}
