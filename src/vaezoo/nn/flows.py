"""Normalizing flows for richer posteriors: planar and radial flows (Rezende & Mohamed 2015) and
inverse autoregressive flow steps on a MADE (Kingma et al. 2016; Germain et al. 2015).

Every step maps latents (..., D) to ``(z', log|det dz'/dz|)`` with the log-determinant (...), and
takes an optional ``context`` (..., F) from the encoder: the IAF steps' MADE reads it, and planar
and radial steps built with ``context_features`` > 0 compute their parameters from it.
:class:`FlowSequence` chains steps and sums their log-determinants; :class:`FlowPosterior` is
q(z_K|x), a diagonal Gaussian q0(z_0|x) pushed through a flow, with the change of variables
(Rezende & Mohamed 2015, Sec. 3.1)::

    log q_K(z_K|x) = log q0(z_0|x) - sum_k log|det dz_k/dz_{k-1}|
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.nn.blocks import GaussianHead
from vaezoo.nn.distributions import DiagonalGaussian, Posterior
from vaezoo.nn.precision import full_precision

# Keeps log(1 + x) finite where the constraints hold only up to rounding (x -> -1 from above).
_LOG1P_FLOOR = -1.0 + 1e-6


class AmortizedParameters(nn.Module):
    """A flow step's parameters: learned and shared by every input, plus, with ``context_features``
    > 0, an offset linear in the encoder's context h, so that each input gets its own (Rezende &
    Mohamed 2015, Sec. 4: the inference network outputs the flow's parameters). The offset starts
    at zero, so the step starts from the shared parameters."""

    def __init__(self, sizes: dict[str, int], context_features: int = 0) -> None:
        super().__init__()
        self.sizes = sizes  # name -> length; 0 is a scalar
        self.shared = nn.ParameterDict(
            {
                name: nn.Parameter(0.1 * torch.randn(size) if size else torch.zeros(()))
                for name, size in sizes.items()
            }
        )
        self.offset = (
            nn.Linear(context_features, sum(max(n, 1) for n in sizes.values())) if context_features else None
        )
        if self.offset is not None:
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)

    def forward(self, context: Tensor | None = None) -> dict[str, Tensor]:
        """name -> (..., size) or (...) for a scalar; (size,) / () without a context."""
        if self.offset is None or context is None:
            return dict(self.shared.items())
        chunks = self.offset(context).split([max(n, 1) for n in self.sizes.values()], dim=-1)
        return {
            name: self.shared[name] + (chunk if size else chunk.squeeze(-1))
            for (name, size), chunk in zip(self.sizes.items(), chunks)
        }


def dot(a: Tensor, b: Tensor) -> Tensor:
    """The inner product over the last dimension, broadcasting the others."""
    return (a * b).sum(-1)


class PlanarFlow(nn.Module):
    """f(z) = z + u_hat h(w^T z + b), h = tanh (Rezende & Mohamed 2015, Eq. 10), with the
    log-determinant log|1 + u_hat^T psi(z)|, psi(z) = h'(w^T z + b) w (Eq. 11-12).

    ``u_hat`` is ``u`` moved along ``w`` until w^T u_hat = -1 + softplus(w^T u) > -1, the condition
    under which f is invertible (Appendix A.1); the determinant 1 + h' w^T u_hat is then positive.
    (u, w, b) are shared, or amortized over a context (:class:`AmortizedParameters`). It runs in
    fp32 under autocast (an amortized step's offsets included): near the constraint,
    1 + h' w^T u_hat is a difference that bf16 would cancel.
    """

    def __init__(self, dim: int, context_features: int = 0) -> None:
        super().__init__()
        self.params = AmortizedParameters({"u": dim, "w": dim, "b": 0}, context_features)

    @staticmethod
    def constrained_u(u: Tensor, w: Tensor) -> Tensor:
        """u_hat = u + (m(w^T u) - w^T u) w / ||w||^2, m(a) = -1 + softplus(a): so w^T u_hat > -1."""
        wu = dot(w, u).unsqueeze(-1)
        squared_norm = dot(w, w).clamp(min=1e-12).unsqueeze(-1)  # an amortized w may come near 0
        return u + (F.softplus(wu) - 1.0 - wu) * w / squared_norm

    @full_precision
    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = self.params(context)
        u_hat = self.constrained_u(p["u"], p["w"])  # (..., D)
        activation = torch.tanh(dot(z, p["w"]) + p["b"])  # (...)
        z_new = z + u_hat * activation.unsqueeze(-1)  # (..., D)
        slope = 1.0 - activation**2  # h'(w^T z + b), in (0, 1]
        log_det = torch.log1p((slope * dot(p["w"], u_hat)).clamp(min=_LOG1P_FLOOR))  # (...)
        return z_new, log_det


class RadialFlow(nn.Module):
    """f(z) = z + beta h(alpha, r) (z - z_0), h = 1 / (alpha + r), r = ||z - z_0|| (Rezende &
    Mohamed 2015, Eq. 14), with the log-determinant of the same equation::

        log|det| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(alpha, r) r)

    alpha = softplus(.) > 0 and beta = -alpha + softplus(.) >= -alpha, the invertibility condition
    of Appendix A.2. (z_0, alpha, beta) are shared, or amortized over a context. In fp32 under
    autocast, as the planar flow.
    """

    def __init__(self, dim: int, context_features: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.params = AmortizedParameters({"z0": dim, "alpha": 0, "beta": 0}, context_features)

    @staticmethod
    def alpha_beta(raw_alpha: Tensor, raw_beta: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha, beta) with alpha > 0 and beta >= -alpha."""
        alpha = F.softplus(raw_alpha)
        return alpha, -alpha + F.softplus(raw_beta)

    @full_precision
    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = self.params(context)
        alpha, beta = self.alpha_beta(p["alpha"], p["beta"])  # (...) or ()
        diff = z - p["z0"]  # (..., D)
        r = diff.norm(dim=-1)  # (...)
        h = 1.0 / (alpha + r)
        z_new = z + (beta * h).unsqueeze(-1) * diff
        # 1 + beta h + beta h' r = 1 + beta alpha / (alpha + r)^2, with h' = -1 / (alpha + r)^2
        radial = torch.log1p((beta * alpha * h**2).clamp(min=_LOG1P_FLOOR))
        log_det = (self.dim - 1) * torch.log1p((beta * h).clamp(min=_LOG1P_FLOOR)) + radial
        return z_new, log_det


FLOWS: dict[str, Callable[[int, int], nn.Module]] = {"planar": PlanarFlow, "radial": RadialFlow}


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 ``mask`` (out, in)."""

    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015, Sec. 4): an MLP from
    (..., D) to ``outputs`` tensors (..., D) each, where output i depends only on inputs j < i.

    Degrees: input d has degree d in 1..D, hidden units cycle through 1..D-1, a unit
    sees the units of the layer below with a degree <= its own, and output i sees hidden units of
    degree < i. ``context`` (..., F), if ``context_features`` > 0, enters the first hidden layer
    without a mask: it may inform every output (Kingma et al. 2016's h).

    A layer narrower than D - 1 cycles through degrees 1..width only, so outputs past it see just
    the first ``width`` inputs; ``spread_degrees`` spaces its degrees evenly over 1..D-1 instead
    (for wide codes, e.g. the density samplers on flattened VQ-VAE maps).
    """

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int],
        context_features: int = 0,
        outputs: int = 2,
        spread_degrees: bool = False,
    ) -> None:
        super().__init__()
        if not hidden_dims:
            raise ValueError("MADE needs at least one hidden layer")
        self.dim, self.outputs = dim, outputs
        degrees = [torch.arange(1, dim + 1)]  # the inputs' degrees
        for width in hidden_dims:  # D = 1 leaves one output with no input: all degrees 0
            if spread_degrees and width < dim - 1:
                degrees.append(1 + torch.arange(width) * (dim - 1) // width)
            else:
                degrees.append(torch.arange(width) % max(dim - 1, 1) + min(dim - 1, 1))
        masks = [after[:, None] >= before[None, :] for before, after in zip(degrees[:-1], degrees[1:])]
        output_mask = degrees[0][:, None] > degrees[-1][None, :]  # (D, H): strictly below i
        self.hidden = nn.ModuleList(MaskedLinear(mask) for mask in masks)
        self.context = nn.Linear(context_features, hidden_dims[0]) if context_features > 0 else None
        self.output = MaskedLinear(output_mask.repeat(outputs, 1))  # (outputs * D, H)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, ...]:
        h = self.hidden[0](z)  # (..., H)
        if self.context is not None and context is not None:
            h = h + self.context(context)
        h = F.elu(h)
        for layer in self.hidden[1:]:
            h = F.elu(layer(h))
        return self.output(h).chunk(self.outputs, dim=-1)  # ``outputs`` x (..., D)


class IAFStep(nn.Module):
    """One inverse autoregressive flow step (Kingma et al. 2016, Eq. 10-14, Algorithm 1)::

        [m, s] = MADE(z, h);   sigma = sigmoid(s + gate_bias);   z' = sigma * z + (1 - sigma) * m

    The LSTM-like gated update is the numerically stable form of Eq. 10; since dz'_i/dz_j = 0 for
    j > i, the Jacobian is triangular with diagonal sigma and log|det| = sum_i log sigma_i
    (log-sigmoid, finite for any s). ``gate_bias`` starts sigma near 1 (z' near z), as the paper
    advises.
    """

    def __init__(
        self, dim: int, hidden_dims: Sequence[int], context_features: int = 0, gate_bias: float = 1.0
    ) -> None:
        super().__init__()
        self.made = MADE(dim, hidden_dims, context_features, outputs=2)
        self.gate_bias = gate_bias

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # (..., D) each; the gate in at least fp32 (bf16 / fp16 under autocast are cast up)
        m, s = (t.to(torch.promote_types(t.dtype, torch.float32)) for t in self.made(z, context))
        s = s + self.gate_bias
        sigma = torch.sigmoid(s)
        z_new = sigma * z + (1.0 - sigma) * m
        return z_new, F.logsigmoid(s).sum(-1)


class Reverse(nn.Module):
    """Reverses the order of the latent dimensions (log|det| = 0), between IAF steps so that each
    variable is early in one step's order and late in the next's, as Kingma et al. 2016 do."""

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z.flip(-1), z.new_zeros(z.shape[:-1])


class FlowSequence(nn.Module):
    """Steps applied in order; returns z_K and sum_k log|det dz_k/dz_{k-1}| (...)."""

    def __init__(self, steps: Sequence[nn.Module]) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[:-1])
        for step in self.steps:
            z, log_det = step(z, context)
            total = total + log_det
        return z, total


def planar_radial_flow(names: Sequence[str], dim: int, context_features: int = 0) -> FlowSequence:
    """The flow of ``names`` (each ``"planar"`` or ``"radial"``) over ``dim`` latents, its
    parameters amortized over a context of ``context_features`` (0: shared)."""
    if isinstance(names, str):
        raise ValueError(
            f"flows must be a list of flow types, e.g. [{names!r}, {names!r}], not the string {names!r}"
        )
    unknown = sorted(set(names) - set(FLOWS))
    if unknown:
        raise ValueError(f"unknown flow type(s) {unknown}; the flows are {sorted(FLOWS)}")
    return FlowSequence([FLOWS[name](dim, context_features) for name in names])


def inverse_autoregressive_flow(
    num_steps: int, dim: int, hidden_dims: Sequence[int], context_features: int = 0
) -> FlowSequence:
    """``num_steps`` IAF steps on MADEs of ``hidden_dims``, the order reversed between steps."""
    steps: list[nn.Module] = []
    for index in range(num_steps):
        if index > 0:
            steps.append(Reverse())
        steps.append(IAFStep(dim, hidden_dims, context_features))
    return FlowSequence(steps)


class ContextGaussianHead(nn.Module):
    """Flat features -> (mu, log_var, h): the base Gaussian's parameters and the context h the flow
    reads (ELU features, Kingma et al. 2016's h)."""

    def __init__(self, in_features: int, latent_dim: int, context_features: int) -> None:
        super().__init__()
        self.gaussian = GaussianHead(in_features, latent_dim)
        self.context = nn.Sequential(nn.Linear(in_features, context_features), nn.ELU())

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, log_var = self.gaussian(h)
        return mu, log_var, self.context(h)  # (B, D), (B, D), (B, F)


class FlowPosterior(Posterior):
    """q(z_K|x): z_0 ~ q0 = N(mu, diag sigma^2) pushed through ``flow``, which reads ``context``
    from the encoder if it has one. It unpacks as ``[mu, log_var]``, the base Gaussian's parameters.

    Its density is known only at its own samples (the flows have no closed-form inverse), so
    :meth:`sample` returns each z_K with its log q; :meth:`log_prob` of an arbitrary z is refused.
    """

    def __init__(self, base: DiagonalGaussian, flow: FlowSequence, context: Tensor | None = None) -> None:
        self.base, self.flow, self.context = base, flow, context

    def sample(self) -> tuple[Tensor, Tensor, Tensor]:
        """(z_0, z_K, sum log|det|): one reparameterised draw through the flow."""
        z0 = self.base.rsample()
        z, log_det = self.flow(z0, self.context)
        return z0, z, log_det

    def log_prob_of_sample(self, z0: Tensor, log_det: Tensor) -> Tensor:
        """log q_K(z_K|x) = log q0(z_0|x) - sum log|det| (Rezende & Mohamed 2015, Sec. 3.1), (...)."""
        return self.base.log_prob(z0) - log_det

    def rsample(self, global_step: int | None = None) -> Tensor:
        return self.sample()[1]

    def mode(self) -> Tensor:
        """The flow's image of the base mean: a deterministic code (not the exact mode of q_K)."""
        return self.flow(self.base.mu, self.context)[0]

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError(
            "a flow posterior's density is known only at its own samples (the flow has no closed-form "
            "inverse): use sample() and log_prob_of_sample()"
        )

    def expand(self, num_samples: int) -> FlowPosterior:
        """The same posterior over (B, S, D): ``num_samples`` independent draws per input."""

        def repeat(t: Tensor) -> Tensor:
            return t.unsqueeze(1).expand(t.shape[0], num_samples, *t.shape[1:])

        base = DiagonalGaussian(repeat(self.base.mu), repeat(self.base.log_var))
        context = None if self.context is None else repeat(self.context)
        return FlowPosterior(base, self.flow, context)

    def as_list(self) -> list[Tensor]:
        return self.base.as_list()

    def fields(self) -> dict[str, Tensor]:
        return self.base.fields()

    def map(self, fn: Callable[[Tensor], Tensor]) -> FlowPosterior:
        context = None if self.context is None else fn(self.context)
        return FlowPosterior(self.base.map(fn), self.flow, context)
