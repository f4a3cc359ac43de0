"""Metrics during training: small evaluation groups that a callback runs every N training batches.

Each group is a function of a :class:`TrainingEvaluation` (an :class:`EvaluationContext` on a fixed
subset of validation images) returning ``dict[str, float]``; the values are the ones ``vaezoo
evaluate`` computes, from the same functions, on fewer examples. A group that does not apply to
the model raises :class:`~vaezoo.evaluation.evaluate.NotApplicable`, saying why. No Lightning here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from vaezoo.evaluation.evaluate import EvaluationContext, EvaluationSettings, NotApplicable

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

VOTE_SIZE = 64  # observations per vote of the FactorVAE and BetaVAE scores (disentanglement_lib's)
MIN_VOTES = 5


class TrainingEvaluation(EvaluationContext):
    """The context of one evaluation during training: ``images`` and ``labels`` are the subset of
    validation images every evaluation of the run uses (read once, by the caller);
    ``observations`` is how many ground-truth observations the disentanglement groups draw."""

    def __init__(
        self,
        model: BaseVAE,
        datamodule: Any,
        images: Tensor,
        labels: Tensor,
        observations: int,
        seed: int = 0,
    ) -> None:
        settings = EvaluationSettings(num_examples=len(images), seed=seed, progress=False)
        super().__init__(model, datamodule, settings)
        self.examples = (images, labels)  # the cached property, set: nothing is read again
        self.observations = observations


def active_units_group(ctx: TrainingEvaluation) -> dict[str, float]:
    """Active units (Burda et al. 2016, Sec. 5.2): how many latent dimensions the data moves."""
    from vaezoo.evaluation.latent_health import active_units

    values = active_units(ctx.latent_codes)
    return {"active_units": values["active_units"], "active_fraction": values["active_fraction"]}


def kl_group(ctx: TrainingEvaluation) -> dict[str, float]:
    """KL(q(z|x) || p(z)) summed over dimensions, and the share of its largest dimension."""
    from vaezoo.evaluation.latent_health import kl_summary

    return kl_summary(ctx.kl_per_dim)


def elbo_group(ctx: TrainingEvaluation) -> dict[str, float]:
    """The ELBO in nats per image, one posterior draw per image (an unbiased estimate, Burda et al.
    2016, Eq. 8 with k = 1); ``elbo_unnormalized`` when the likelihood has no normaliser (mse)."""
    from vaezoo.evaluation.likelihood import likelihood_report

    batches = ((images, ctx.kwargs(labels)) for images, labels in ctx.batches())
    try:
        report = likelihood_report(ctx.model, batches, num_samples=1, chunk_size=1, num_levels=None)
    except NotImplementedError as err:
        raise NotApplicable(str(err)) from None
    return {key: report[key] for key in ("elbo", "elbo_unnormalized") if key in report}


def codebook_group(ctx: TrainingEvaluation) -> dict[str, float]:
    """Codebook perplexity and usage of a vector-quantised model on the subset."""
    import torch

    from vaezoo.evaluation.latent_health import codebook_metrics

    size = ctx.model.codebook_size
    if size is None:
        raise NotApplicable(f"{type(ctx.model).__name__} has no codebook (codebook_size is None)")
    chosen = [ctx.model.codes(images, **ctx.kwargs(labels)).cpu() for images, labels in ctx.batches()]
    values = codebook_metrics(torch.cat(chosen), size)
    return {"codebook_perplexity": values["codebook_perplexity"], "codebook_usage": values["codebook_usage"]}


def disentanglement_sizes(name: str, subset: int) -> dict[str, int]:
    """Sample sizes of disentanglement metric ``name`` for ``subset`` observations: ``subset`` to
    train on and half as many to test on; votes of 64 for FactorVAE and BetaVAE."""
    votes = max(MIN_VOTES, subset // VOTE_SIZE)
    if name == "factor_vae":
        return {"num_variance_estimate": subset, "num_train": votes, "num_eval": max(MIN_VOTES, votes // 2)}
    if name == "beta_vae":
        return {"num_train": votes, "num_eval": max(MIN_VOTES, votes // 2)}
    if name in ("mig", "irs", "dcimig", "unsupervised"):  # no test split
        return {"num_train": subset}
    if name in ("flatness", "factored_components"):  # traversals of every factor: one per 64 points
        return {"repeats": max(MIN_VOTES, subset // VOTE_SIZE)}
    if name == "fairness":  # its test points are per (target, sensitive class): 1% of the subset each
        return {"num_train": subset, "num_test_points_per_class": max(10, subset // 100)}
    return {"num_train": subset, "num_test": max(2, subset // 2)}


def disentanglement_group(name: str) -> Callable[[TrainingEvaluation], dict[str, float]]:
    """The group of disentanglement metric ``name`` on the mean codes (disentanglement_lib's
    definitions, :mod:`vaezoo.evaluation.disentanglement`), with :func:`disentanglement_sizes`."""

    def group(ctx: TrainingEvaluation) -> dict[str, float]:
        from vaezoo.evaluation.disentanglement import DISENTANGLEMENT_METRICS

        if ctx.conditional:
            raise NotApplicable("a conditional model is given the labels (here the factors) as input")

        def representation(images: Tensor) -> np.ndarray:
            return ctx.embed(images).flatten(start_dim=1).double().numpy()

        options: dict[str, Any] = disentanglement_sizes(name, ctx.observations)
        if name == "dci":
            options["n_jobs"] = 1  # one process: the training run holds the cores
        metric = DISENTANGLEMENT_METRICS[name]
        return metric(ctx.datamodule.ground_truth, representation, random_state=ctx.settings.seed, **options)

    group.__doc__ = f"The {name} disentanglement metric on ground-truth observations."
    return group


@dataclass(frozen=True)
class EvalGroup:
    """One group: its function and whether it needs the data's ground-truth factors."""

    run: Callable[[TrainingEvaluation], dict[str, float]]
    needs_ground_truth: bool = False


DISENTANGLEMENT_GROUPS = (
    "mig",
    "factor_vae",
    "beta_vae",
    "sap",
    "dci",
    "modularity",
    "irs",
    "dcimig",
    "unsupervised",
    "downstream_logreg",
    "downstream_gbt",
    "fairness",
    "flatness",
    "factored_components",
)

EVAL_GROUPS: dict[str, EvalGroup] = {
    "active_units": EvalGroup(active_units_group),
    "kl": EvalGroup(kl_group),
    "elbo": EvalGroup(elbo_group),
    "codebook": EvalGroup(codebook_group),
    **{
        name: EvalGroup(disentanglement_group(name), needs_ground_truth=True)
        for name in DISENTANGLEMENT_GROUPS
    },
}
