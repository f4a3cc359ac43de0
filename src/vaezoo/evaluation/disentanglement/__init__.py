"""Disentanglement metrics on data with ground-truth factors, with disentanglement_lib's defaults.

Each metric has a ground-truth-level function ``metric(ground_truth, representation_fn, *, ...)``
that samples observations with a fixed seed, and an array-level core (``*_from_codes``,
``*_from_features``, ``*_from_votes``) for codes already in hand. ``representation_fn`` maps images
``(N, C, H, W)`` to codes ``(N, D)`` (e.g. ``mean_representation(model)``). Result keys:

=====================  ==============================================================================
metric name            keys
=====================  ==============================================================================
``beta_vae``           ``beta_vae_score`` (evaluation accuracy), ``beta_vae_train_accuracy``
``factor_vae``         ``factor_vae_score`` (evaluation accuracy), ``factor_vae_train_accuracy``,
                       ``factor_vae_active_dims``
``mig``                ``mig``
``dci``                ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness_train``,
                       ``dci_informativeness_test``
``sap``                ``sap``
``modularity``         ``modularity``, ``explicitness_train``, ``explicitness_test``
``downstream_logreg``  ``downstream_logreg_<N>_{mean,min}_{train,test}_accuracy`` per training size N
``downstream_gbt``     ``downstream_gbt_<N>_{mean,min}_{train,test}_accuracy``
``fairness``           ``{mean,max}_fairness_{mean,max}_pred_{mean,max}_sens``, ``..._sens_..._pred``
``irs``                ``irs``, ``irs_num_active_dims``
``dcimig``             ``dcimig``
``unsupervised``       ``gaussian_total_correlation``, ``gaussian_wasserstein_correlation``,
                       ``gaussian_wasserstein_correlation_norm``, ``mutual_info_score``
``flatness``           ``flatness``, ``flatness_l1``, ``flatness_l2``, ``flatness_{width,length}_{l1,l2}``
``factored_components`` ``linearity_{axis_ratio,linear_ratio,axis_alignment,axis_ratio_ave}``,
                       ``distances_{rsame,rcorr,lcorr}_ground_latent_{l1,l2}_{factor,global}``
=====================  ==============================================================================

UDR (:mod:`.udr`) compares several models, so it is not in ``DISENTANGLEMENT_METRICS``: call
``udr`` / ``udr_from_codes`` with one representation per model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from vaezoo.evaluation.disentanglement.beta_vae import beta_vae_from_features, beta_vae_score, beta_vae_votes
from vaezoo.evaluation.disentanglement.common import (
    MemoizedCodes,
    RepresentationFn,
    encode_factors,
    factor_entropy,
    generate_batch,
    histogram_discretize,
    mean_representation,
    mutual_info_matrix,
    sample_factors,
)
from vaezoo.evaluation.disentanglement.dci import completeness, dci, dci_from_codes, disentanglement
from vaezoo.evaluation.disentanglement.dcimig import dcimig, dcimig_from_codes, dcimig_from_info
from vaezoo.evaluation.disentanglement.downstream import (
    downstream_from_codes,
    downstream_gbt,
    downstream_logreg,
    downstream_task,
)
from vaezoo.evaluation.disentanglement.factor_vae import (
    factor_vae_from_votes,
    factor_vae_score,
    factor_vae_votes,
)
from vaezoo.evaluation.disentanglement.factored_components import (
    factored_components,
    factored_components_from_traversals,
    linearity_from_traversals,
)
from vaezoo.evaluation.disentanglement.fairness import fairness, fairness_summary, inter_group_fairness
from vaezoo.evaluation.disentanglement.flatness import (
    all_factor_traversals,
    factor_traversals,
    flatness,
    flatness_from_traversals,
)
from vaezoo.evaluation.disentanglement.ground_truth import (
    DATASETS_WITH_FACTORS,
    GroundTruth,
    MissingFactorsError,
    TableGroundTruth,
    check_ground_truth,
)
from vaezoo.evaluation.disentanglement.irs import irs, irs_from_codes, irs_matrix
from vaezoo.evaluation.disentanglement.mig import mig, mig_from_codes
from vaezoo.evaluation.disentanglement.modularity import (
    explicitness,
    modularity,
    modularity_explicitness,
    modularity_explicitness_from_codes,
)
from vaezoo.evaluation.disentanglement.sap import sap_from_codes, sap_score, sap_score_matrix
from vaezoo.evaluation.disentanglement.udr import UDRResult, relative_strength, udr, udr_from_codes
from vaezoo.evaluation.disentanglement.unsupervised import (
    gaussian_total_correlation,
    gaussian_wasserstein_correlation,
    mutual_info_score,
    unsupervised_from_codes,
    unsupervised_scores,
)

DISENTANGLEMENT_METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "beta_vae": beta_vae_score,
    "factor_vae": factor_vae_score,
    "mig": mig,
    "dci": dci,
    "sap": sap_score,
    "modularity": modularity_explicitness,
    "irs": irs,
    "dcimig": dcimig,
    "unsupervised": unsupervised_scores,
    "downstream_logreg": downstream_logreg,
    "downstream_gbt": downstream_gbt,
    "fairness": fairness,
    "flatness": flatness,
    "factored_components": factored_components,
}

# Computed only when asked for by name: each fits classifiers per factor at several sizes (dlib runs
# them as evaluations of their own): boosted trees fit one tree per class and round (4,000 for
# dSprites' 40 orientations), logistic regression 10 strengths x 5 folds per factor and size.
# disent's flatness and factored components encode 1024 traversals of every factor (116,736
# observations on dSprites, one eigendecomposition per traversal) and need a full factor grid.
OPT_IN_METRICS = ("downstream_logreg", "downstream_gbt", "fairness", "flatness", "factored_components")
DEFAULT_METRICS = tuple(name for name in DISENTANGLEMENT_METRICS if name not in OPT_IN_METRICS)

AUTO_MEMOIZE_CELLS = 2_000_000  # dSprites has 737,280 combinations: 59 MB of float64 codes for D = 10

# How compute_disentanglement's num_train / num_eval map onto each metric's sample sizes.
_SIZE_ARGUMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "beta_vae": (("num_train",), ("num_eval",)),
    "factor_vae": (("num_train", "num_variance_estimate"), ("num_eval",)),
    "mig": (("num_train",), ()),
    "dci": (("num_train",), ("num_test",)),
    "sap": (("num_train",), ("num_test",)),
    "modularity": (("num_train",), ("num_test",)),
    "irs": (("num_train",), ()),
    "dcimig": (("num_train",), ()),
    "unsupervised": (("num_train",), ()),
    "downstream_logreg": (("num_train",), ("num_test",)),
    "downstream_gbt": (("num_train",), ("num_test",)),
    "fairness": (("num_train",), ()),
    "flatness": ((), ()),  # sized by repeats (traversals per factor), not by points
    "factored_components": ((), ()),
}


def _metric_names(metrics: Sequence[str] | str | None) -> list[str]:
    names = (
        list(DEFAULT_METRICS) if metrics is None else [metrics] if isinstance(metrics, str) else list(metrics)
    )
    unknown = [name for name in names if name not in DISENTANGLEMENT_METRICS]
    if unknown:
        raise ValueError(
            f"unknown disentanglement metric(s) {', '.join(map(repr, unknown))}; "
            f"valid names: {', '.join(DISENTANGLEMENT_METRICS)}"
        )
    return names


def compute_disentanglement(
    ground_truth: GroundTruth | None,
    representation_fn: RepresentationFn,
    metrics: Sequence[str] | str | None = None,
    random_state: int = 0,
    num_train: int | None = None,
    num_eval: int | None = None,
    *,
    data_name: str | None = None,
    memoize: bool | None = None,
    n_jobs: int | None = 1,
) -> dict[str, float]:
    """Run the named metrics (default: ``DEFAULT_METRICS``, all of ``DISENTANGLEMENT_METRICS`` but the
    slow ``OPT_IN_METRICS``) and merge their results.

    ``num_train`` / ``num_eval`` override every metric's training and evaluation sizes (FactorVAE's
    variance estimate follows ``num_train``); None keeps disentanglement_lib's 10,000 / 5,000.
    ``memoize=True`` encodes each factor combination once across all metrics (``MemoizedCodes``):
    the same scores for a deterministic representation such as the mean, at a quarter of the
    encoder passes on dSprites. None (default) memoizes grids (not tables) of at most
    ``AUTO_MEMOIZE_CELLS`` combinations; pass False for a sampled representation. ``n_jobs`` is
    passed to DCI. A missing ground truth raises MissingFactorsError naming ``data_name``.
    """
    names = _metric_names(metrics)
    ground_truth = check_ground_truth(ground_truth, data_name)
    if memoize is None:
        cells = math.prod(int(size) for size in ground_truth.factor_sizes)
        memoize = not hasattr(ground_truth, "sample_factors_matching") and cells <= AUTO_MEMOIZE_CELLS
    if memoize:
        memo = MemoizedCodes(ground_truth, representation_fn)
        ground_truth, representation_fn = memo.ground_truth, memo.representation_fn
    results: dict[str, float] = {}
    for name in names:
        train_keys, eval_keys = _SIZE_ARGUMENTS[name]
        options: dict[str, int | None] = {"n_jobs": n_jobs} if name == "dci" else {}
        options |= {key: num_train for key in train_keys if num_train is not None}
        options |= {key: num_eval for key in eval_keys if num_eval is not None}
        results |= DISENTANGLEMENT_METRICS[name](
            ground_truth, representation_fn, random_state=random_state, **options
        )
    return results


__all__ = [
    "udr_from_codes",
    "udr",
    "relative_strength",
    "linearity_from_traversals",
    "flatness_from_traversals",
    "flatness",
    "factored_components_from_traversals",
    "factored_components",
    "factor_traversals",
    "all_factor_traversals",
    "UDRResult",
    "DEFAULT_METRICS",
    "OPT_IN_METRICS",
    "DATASETS_WITH_FACTORS",
    "DISENTANGLEMENT_METRICS",
    "GroundTruth",
    "MemoizedCodes",
    "MissingFactorsError",
    "RepresentationFn",
    "TableGroundTruth",
    "beta_vae_from_features",
    "beta_vae_score",
    "beta_vae_votes",
    "check_ground_truth",
    "completeness",
    "compute_disentanglement",
    "dci",
    "dci_from_codes",
    "dcimig",
    "dcimig_from_codes",
    "dcimig_from_info",
    "disentanglement",
    "downstream_from_codes",
    "downstream_gbt",
    "downstream_logreg",
    "downstream_task",
    "encode_factors",
    "explicitness",
    "factor_entropy",
    "factor_vae_from_votes",
    "factor_vae_score",
    "factor_vae_votes",
    "fairness",
    "fairness_summary",
    "gaussian_total_correlation",
    "gaussian_wasserstein_correlation",
    "generate_batch",
    "histogram_discretize",
    "inter_group_fairness",
    "irs",
    "irs_from_codes",
    "irs_matrix",
    "mean_representation",
    "mig",
    "mig_from_codes",
    "modularity",
    "modularity_explicitness",
    "modularity_explicitness_from_codes",
    "mutual_info_matrix",
    "mutual_info_score",
    "sample_factors",
    "sap_from_codes",
    "sap_score",
    "sap_score_matrix",
    "unsupervised_from_codes",
    "unsupervised_scores",
]
