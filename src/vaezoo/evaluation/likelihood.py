"""Likelihood bounds: the ELBO and the importance-weighted bound on log p(x), in nats and bits/dim.

With z_1..z_k ~ q(z|x) and log-weights log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) (the
model's ``log_importance_weights``)::

    ELBO   ~ (1/k) sum_i log w_i                    (an unbiased estimate of the ELBO)
    IWAE_k = log (1/k) sum_i w_i  <=  log p(x)      (Burda et al. 2016, "Importance Weighted
                                                      Autoencoders", Eq. 8; Theorem 1: grows with k)

-IWAE_k for large k (1000 by default, as in Burda et al. Sec. 5) is the usual estimate of the
negative log-likelihood. The k samples are drawn ``chunk_size`` at a time and combined with a
running logsumexp, so memory holds B x chunk_size decoded images whatever k is; ``decode_batch``
splits each chunk further into groups of inputs, so one decoder call holds about ``decode_batch``
images (a few hundred stay in a CPU's caches: ~1.3x faster than 5,000 here). Log-weights are fp32
(the model's dtype) and accumulated in float64.

Both are log-likelihoods only when the model's decoder likelihood is normalised
(``model.likelihood_is_normalized``); for the squared error (``mse``) they are reported under
``*_unnormalized`` keys and are not likelihoods. Pure functions, no Lightning, no progress bars.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn

from vaezoo.nn.likelihoods import NUM_LEVELS

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

Nats = TypeVar("Nats", float, Tensor)  # a float in, a float out; a tensor in, a tensor out


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` and no gradients within the block; the previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


ROW_GROUP = 16  # inputs per decoder call come in multiples of this (see rows_per_call)


def rows_per_call(num_rows: int, samples: int, decode_batch: int | None) -> int:
    """How many of ``num_rows`` inputs go through one ``log_importance_weights`` call of ``samples``
    draws so that a call decodes at most ~``decode_batch`` images (None: all rows at once).

    A multiple of 16 rows: then each call's Gaussian draw (rows x samples x D floats) is a multiple
    of 16 values, and torch's CPU normal sampler (16 values per Box-Muller block) gives the same
    numbers for consecutive calls as for one call over all rows -- a model that draws its latents in
    one ``randn`` gets the same bound, bit for bit, whatever ``decode_batch`` is.
    """
    if decode_batch is None or num_rows * samples <= decode_batch:
        return num_rows
    return max(ROW_GROUP, decode_batch // samples // ROW_GROUP * ROW_GROUP)


def _rows(kwargs: dict[str, Any], start: int, stop: int, num_rows: int) -> dict[str, Any]:
    """Keyword arguments for inputs ``start:stop``: per-input tensors (e.g. labels) sliced, rest kept."""

    def rows(value: Any) -> Any:
        per_input = isinstance(value, Tensor) and value.dim() > 0 and len(value) == num_rows
        return value[start:stop] if per_input else value

    return {key: rows(value) for key, value in kwargs.items()}


def importance_weighted_bounds(
    model: BaseVAE,
    x: Tensor,
    num_samples: int = 1000,
    chunk_size: int = 100,
    decode_batch: int | None = None,
    **model_kwargs: Any,
) -> dict[str, Tensor]:
    """Per-example ``"elbo"`` (mean log-weight) and ``"iwae"`` (log mean weight) over ``num_samples``
    draws of q(z|x), both (B,) float64, in nats. The model runs in eval mode without gradients;
    ``model_kwargs`` (e.g. ``labels=`` of a conditional model) go to ``log_importance_weights``.
    ``decode_batch`` bounds the images of one decoder call (see :func:`rows_per_call`)."""
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples ({num_samples}) and chunk_size ({chunk_size}) must be at least 1")
    num_rows = x.shape[0]
    log_sum = torch.full((num_rows,), -math.inf, dtype=torch.float64, device=x.device)
    total = torch.zeros_like(log_sum)
    with evaluation_mode(model), torch.inference_mode():
        for start in range(0, num_samples, chunk_size):
            count = min(chunk_size, num_samples - start)
            step = rows_per_call(num_rows, count, decode_batch)
            log_w = torch.cat(
                [
                    model.log_importance_weights(
                        x[row : row + step], count, **_rows(model_kwargs, row, row + step, num_rows)
                    )
                    for row in range(0, num_rows, step)
                ]
            ).double()  # (B, count)
            log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_w, dim=1))  # running logsumexp
            total = total + log_w.sum(dim=1)
    return {"elbo": total / num_samples, "iwae": log_sum - math.log(num_samples)}


def bits_per_dim(nats: Nats, num_dims: int) -> Nats:
    """A negative log-likelihood in nats per example -> bits per dimension: nats / (D ln 2)."""
    if num_dims < 1:
        raise ValueError(f"num_dims must be at least 1, got {num_dims}")
    return nats / (num_dims * math.log(2.0))


def bin_width(value_range: tuple[float, float] = (0.0, 1.0), num_levels: int = NUM_LEVELS) -> float:
    """The distance between neighbouring levels of ``num_levels``-level data mapped onto
    ``value_range`` with both ends included: 1/255 for 8-bit data in [0, 1] (k / 255), 2/255 in [-1, 1]."""
    low, high = value_range
    if not high > low or num_levels < 2:
        raise ValueError(f"need low < high and at least 2 levels, got {value_range} and {num_levels}")
    return (high - low) / (num_levels - 1)


def discrete_nll(density_nll: Nats, num_dims: int, width: float) -> Nats:
    """-log P(bin) ~ -log p(x) - D log(width): a continuous density's NLL at quantised data as
    the NLL of the quantised values, each bin's mass taken as density x width per dimension.

    For a density (``gaussian``, TwoStageVAE) on 8-bit data in [0, 1] (width 1/255) this adds
    D log 255 nats: the discrete NLL is larger, since a density can exceed 1. It is exact only as
    far as the density is constant over a bin; a proper bound on the discrete NLL needs uniform
    dequantisation (Theis, van den Oord & Bethge 2016, "A note on the evaluation of generative
    models", Sec. 3.1). Not for ``bernoulli`` or ``discretized_logistic``, already masses.
    """
    if not width > 0:
        raise ValueError(f"bin width must be positive, got {width}")
    return density_nll - num_dims * math.log(width)


def split_batch(batch: Any) -> tuple[Tensor, dict[str, Any]]:
    """A batch as (images, model kwargs): a tensor; (images, labels); or (images, {kwargs})."""
    if isinstance(batch, Tensor):
        return batch, {}
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        rest = batch[1] if len(batch) > 1 else None
        if isinstance(rest, dict):
            return batch[0], dict(rest)
        return batch[0], ({} if rest is None else {"labels": rest})
    raise ValueError(
        f"a batch must be images, (images, labels) or (images, kwargs dict), got {type(batch).__name__}"
    )


def bounds_over_batches(
    model: BaseVAE,
    batches: Iterable[Any],
    num_samples: int,
    chunk_size: int,
    max_examples: int | None,
    decode_batch: int | None = None,
) -> tuple[Tensor, Tensor, int, str | None]:
    """Per-example ELBO and IWAE bounds of the first ``max_examples`` examples of ``batches``
    (all if None), each (N,) on the CPU, the number of dimensions D of one example, and why the
    bounds are not log-likelihoods (:func:`unnormalized_reason`; None when they are)."""
    device = next(model.parameters()).device
    elbo, iwae, seen, num_dims = [], [], 0, 0
    reason = None
    for batch in batches:
        images, kwargs = split_batch(batch)
        keep = len(images) if max_examples is None else min(len(images), max_examples - seen)
        if keep <= 0:
            break
        reason = reason or unnormalized_reason(model, images[:keep])
        kwargs = {k: v[:keep].to(device) if isinstance(v, Tensor) else v for k, v in kwargs.items()}
        bounds = importance_weighted_bounds(
            model, images[:keep].to(device), num_samples, chunk_size, decode_batch, **kwargs
        )
        elbo.append(bounds["elbo"].cpu())
        iwae.append(bounds["iwae"].cpu())
        seen, num_dims = seen + keep, images[0].numel()
    if not elbo:
        raise ValueError("likelihood_report got no examples")
    return torch.cat(elbo), torch.cat(iwae), num_dims, reason


MSE_REASON = (
    "the reconstruction loss has no normaliser (e.g. mse), so the bounds are not log-likelihoods; "
    "train with model.likelihood bernoulli, continuous_bernoulli, gaussian, laplace or discretized_logistic "
    "for an NLL"
)


def unnormalized_reason(model: BaseVAE, images: Tensor) -> str | None:
    """Why the bounds of ``model`` on ``images`` are not log-likelihoods, or None when they are:
    a score without a normaliser (``likelihood_is_normalized`` False), or data outside the
    likelihood's support (e.g. grey levels under a Bernoulli: a cross-entropy)."""
    if not getattr(model, "likelihood_is_normalized", False):
        return MSE_REASON
    likelihood = getattr(model, "likelihood", None)
    return likelihood.unnormalized_on(images) if likelihood is not None else None


class LikelihoodReport(dict[str, float]):
    """:func:`likelihood_report`'s numbers; ``unnormalized_reason`` says why they are no
    log-likelihoods (None when they are)."""

    unnormalized_reason: str | None = None


def likelihood_report(
    model: BaseVAE,
    batches: Iterable[Any],
    num_samples: int = 1000,
    chunk_size: int = 100,
    max_examples: int | None = None,
    num_levels: int | None = NUM_LEVELS,
    decode_batch: int | None = None,
) -> LikelihoodReport:
    """Bounds averaged over the examples of ``batches`` (see :func:`split_batch`), in nats.

    Keys: ``num_samples`` (k), ``num_examples``, ``likelihood_normalized`` (1.0 or 0.0), then

    - a normalised likelihood: ``elbo``, ``iwae_bound`` (IWAE_k), ``nll`` (= -iwae_bound) and
      ``bits_per_dim`` (of ``nll``); for a continuous density (not a mass) with a known data range,
      also ``nll_discrete`` and ``bits_per_dim_discrete`` (:func:`discrete_nll` at ``num_levels``
      levels; ``num_levels=None`` leaves them out);
    - otherwise (``mse`` and other scores, or data outside the likelihood's support, e.g. grey
      levels under a Bernoulli): ``elbo_unnormalized`` and ``iwae_bound_unnormalized`` only, with
      the reason in the report's ``unnormalized_reason``.

    ``decode_batch`` bounds the images of one decoder call (:func:`rows_per_call`). Models without
    a posterior raise ``NotImplementedError`` (from ``log_importance_weights``).
    """
    elbo, iwae, num_dims, reason = bounds_over_batches(
        model, batches, num_samples, chunk_size, max_examples, decode_batch
    )
    mean_elbo, mean_iwae = elbo.mean().item(), iwae.mean().item()
    report = LikelihoodReport(num_samples=float(num_samples), num_examples=float(len(elbo)))
    report.unnormalized_reason = reason
    if reason is not None:
        report.update(
            likelihood_normalized=0.0, elbo_unnormalized=mean_elbo, iwae_bound_unnormalized=mean_iwae
        )
        return report
    report.update(likelihood_normalized=1.0, elbo=mean_elbo, iwae_bound=mean_iwae, nll=-mean_iwae)
    report["bits_per_dim"] = bits_per_dim(-mean_iwae, num_dims)
    likelihood = getattr(model, "likelihood", None)
    value_range = getattr(likelihood, "data_range", None)
    if num_levels is not None and value_range is not None and not getattr(likelihood, "discrete", False):
        report["nll_discrete"] = discrete_nll(-mean_iwae, num_dims, bin_width(value_range, num_levels))
        report["bits_per_dim_discrete"] = bits_per_dim(report["nll_discrete"], num_dims)
    return report
