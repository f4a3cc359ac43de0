"""What ``vaezoo explore`` computes, with no web framework: trained models side by side, the latent
code of an image in each, decodes of edited codes, prior and ex-post samples, interpolations.

Requests arrive as plain dicts (the JSON bodies) and answers leave as plain dicts, images as PNG data
URIs. A bad request raises :class:`ExploreError` with the message and HTTP status to answer with. Models
run in eval mode under no_grad, one request at a time per model, and nothing is written anywhere:
the runs are only read.
"""

from __future__ import annotations

import base64
import io
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from vaezoo.evaluation.evaluate import EvaluationContext, EvaluationSettings, NotApplicable
from vaezoo.evaluation.samplers import SamplerNotApplicableError
from vaezoo.explore.latents import Slider, build_sliders
from vaezoo.images import to_pil
from vaezoo.io import LoadedRun

SLIDER_LIMIT = 4.0  # a slider moves its latent by at most this many of its spreads
MAX_SLIDERS = 64  # sliders per model (a VQ-VAE's map has thousands of latents: the most active ones)
MAX_IMAGES = 64  # samples or interpolation steps per request
MAX_UPLOAD_BYTES = 8 * 2**20
MAX_UPLOADS = 32  # uploads kept in memory (the oldest goes first)
SAMPLERS = ("prior", "gmm")


class ExploreError(ValueError):
    """A request the explorer refuses: ``status`` is the HTTP status to answer with (400 by default)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ModelCannot(ExploreError):
    """A well-formed request one of the models cannot answer (no prior, no label for a conditional
    model): that model's answer is this message, the others answer as usual."""


class NotExplorable(ValueError):
    """A run whose latents the explorer cannot show; the message says why."""


def refusal(run: LoadedRun, data_kind: str) -> str | None:
    """Why the explorer cannot show ``run`` (None: it can): it draws images and moves latents."""
    model = run.model
    if data_kind != "images":
        return f"{type(model).__name__} was trained on vectors, and the explorer draws images"
    return None


# -- images <-> tensors -------------------------------------------------------------------------------
def to_unit(images: Tensor, value_range: Sequence[float]) -> Tensor:
    """Images in ``value_range`` -> [0, 1], clamped, float32 on the CPU."""
    low, high = value_range
    return ((images.detach().float().cpu() - low) / (high - low)).clamp(0.0, 1.0)


def from_unit(images: Tensor, value_range: Sequence[float]) -> Tensor:
    low, high = value_range
    return images * (high - low) + low


def png_uri(image: Tensor) -> str:
    """A (C, H, W) image in [0, 1] as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def read_upload(data: bytes, channels: int, size: int) -> Tensor:
    """An uploaded image file -> (C, size, size) in [0, 1]: channels converted, centre-cropped, resized
    as the image-folder datasets do. Anything Pillow cannot read is an ExploreError."""
    from vaezoo.data.errors import DataError
    from vaezoo.data.transforms import ImagePipeline

    if not data:
        raise ExploreError("the upload is empty: send the bytes of an image file (PNG, JPEG, ...)")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ExploreError(f"the upload has {len(data)} bytes; at most {MAX_UPLOAD_BYTES} are taken", 413)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return ImagePipeline(image_size=size, channels=channels)(image)
    except (UnidentifiedImageError, OSError, ValueError, DataError, Image.DecompressionBombError) as err:
        start = data[:8]
        raise ExploreError(
            f"the upload is not an image Pillow can read ({len(data)} bytes starting {start!r}): {err}"
        ) from None


# -- one model --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewSettings:
    stats_examples: int = 1000  # validation images for the sliders' statistics
    fit_examples: int = 2000  # training images whose codes fit the GMM sampler
    seed: int = 0


class ModelView:
    """One trained model in the explorer: its sliders and its encode / decode / sample, batched."""

    def __init__(
        self, key: str, source: str, run: LoadedRun, datamodule: Any, settings: ViewSettings
    ) -> None:
        why = refusal(run, datamodule.kind)
        if why is not None:
            raise NotExplorable(f"{source}: {why}")
        self.key, self.source, self.run, self.model = key, source, run, run.model.eval()
        self.name = type(run.model).__name__
        self.datamodule = datamodule
        self.value_range = tuple(datamodule.value_range)
        self.context = EvaluationContext(
            self.model,
            datamodule,
            EvaluationSettings(
                metrics=(),
                num_examples=settings.stats_examples,
                sampler="gmm",
                sampler_fit_examples=settings.fit_examples,
                progress=False,
                seed=settings.seed,
            ),
        )
        self.lock = threading.Lock()  # one forward pass at a time through this model
        # encodes and decodes through a copy with batch norms folded: 2.6 -> 1.8 ms per decode of the
        # default dSprites model here, the same images up to float rounding
        self.fast = self.context.inference_model
        with torch.no_grad():
            codes = self.context.codes  # (N, *code_shape)
        self.code_shape = tuple(codes.shape[1:])
        self.width = math.prod(self.code_shape)  # the flattened code's length
        self.sliders = self._sliders()

    def _sliders(self) -> list[Slider]:
        latents = self.context.latent_codes  # (N, D): a conditional model's code without its label columns
        try:
            kl: Tensor | None = self.context.kl_per_dim.double().mean(dim=0)
        except NotApplicable:
            kl = None
        if kl is not None and kl.numel() != latents.shape[1]:
            kl = None  # a KL per dimension of another latent than the one decoded (order by activity)
        truth = self.datamodule.ground_truth
        factors = self.context.examples[1].numpy() if truth is not None else None
        names = list(truth.factor_names) if truth is not None else None
        return build_sliders(latents, kl, factors, names, MAX_SLIDERS)

    @property
    def sampler_notes(self) -> dict[str, str | None]:
        """Sampler -> why it does not apply (None: it does)."""
        prior = None if self.model.samples_from_prior else f"{self.name} has no prior to sample from"
        return {"prior": prior, "gmm": None}

    def describe(self) -> dict[str, Any]:
        collapsed = sum(slider.collapsed for slider in self.sliders)
        return {
            "key": self.key,
            "name": self.name,
            "source": self.source,
            "step": self.run.global_step,
            "data": self.datamodule.config.name,
            "code_shape": list(self.code_shape),
            "latents": self.width,
            "sliders": [slider.to_json() for slider in self.sliders],
            "sliders_note": (
                f"the {len(self.sliders)} most informative of {self.context.latent_codes.shape[1]} latents"
                if len(self.sliders) < self.context.latent_codes.shape[1]
                else None
            ),
            "collapsed": collapsed,
            "samplers": self.sampler_notes,
            "conditional": self.model.is_conditional,
        }

    # -- computations on flattened codes (B, M) ---------------------------------------------------
    def encode(self, images: Tensor, labels: Tensor | None) -> Tensor:
        """Codes (B, M) of images (B, C, H, W) in [0, 1]: the posterior means, ``model.embed``."""
        extra = {} if labels is None or not self.model.is_conditional else {"labels": labels}
        with self.lock, torch.no_grad():
            codes = self.fast.embed(from_unit(images, self.value_range), **extra)
        return codes.detach().float().cpu().reshape(len(images), -1)

    def decode(self, codes: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] of flattened codes (B, M), in one batch."""
        with self.lock, torch.no_grad():
            images = self.fast.decode(codes.reshape(len(codes), *self.code_shape))
        return to_unit(images, self.value_range)

    def moved(self, base: Tensor, sliders: Sequence[float]) -> Tensor:
        """``base`` (M,) with slider r's latent moved by ``sliders[r]`` of its spreads."""
        code = base.clone()
        for slider, value in zip(self.sliders, sliders, strict=False):
            code[slider.dim] += value * slider.unit
        return code

    def sample_codes(self, sampler: str, n: int, seed: int, condition: Tensor | None) -> Tensor:
        """``n`` codes (n, M) from the prior or a GMM fitted on training codes (fitted once, on first use).
        ``condition``: the label columns a conditional model's prior draws are decoded under."""
        from vaezoo.evaluation.samplers import fit_sampler

        why = self.sampler_notes.get(sampler)
        if why is not None:
            raise ModelCannot(f"{self.name}: {why}")
        with self.lock, torch.no_grad():
            if sampler == "gmm":
                drawn = self.context.sampler.sample(n, seed)
            else:
                drawn = fit_sampler("prior", self.model, None).sample(n, seed)
        drawn = drawn.detach().float().cpu().reshape(n, -1)
        if self.model.is_conditional and sampler == "prior" and condition is not None:
            drawn = torch.cat([drawn, condition.expand(n, -1)], dim=1)
        if drawn.shape[1] != self.width:
            raise ModelCannot(
                f"{self.name}: its {sampler} draws have {drawn.shape[1]} values, not {self.width}"
            )
        return drawn


# -- requests --------------------------------------------------------------------------------------
def field(body: Any, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """``body[key]``, checked to be a ``kind``; missing: ``default`` (an error if that is None)."""
    if not isinstance(body, dict):
        raise ExploreError(f"the request body must be a JSON object, got {type(body).__name__}")
    if key not in body:
        if default is None:
            raise ExploreError(f"the request has no '{key}'")
        return default
    value = body[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ExploreError(f"'{key}' must be {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ExploreError(f"'{key}' must be {_kind_name(kind)}, got {type(value).__name__} {value!r:.60}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    words = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return " or ".join(dict.fromkeys(words.get(k, k.__name__) for k in kinds))


def bounded_int(body: Any, key: str, low: int, high: int, default: int) -> int:
    value = field(body, key, int, default)
    if not low <= value <= high:
        raise ExploreError(f"'{key}' must be between {low} and {high}, got {value}")
    return value


def numbers(value: Any, what: str, length: int | None = None, limit: float | None = None) -> Tensor:
    """A JSON list of finite numbers as a float32 tensor, checked for ``length`` and ``|x| <= limit``."""
    if not isinstance(value, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
    ):
        raise ExploreError(f"{what} must be a list of numbers")
    if length is not None and len(value) != length:
        raise ExploreError(f"{what} has {len(value)} values; expected {length}")
    tensor = torch.tensor(value, dtype=torch.float64)
    if not torch.isfinite(tensor).all():
        raise ExploreError(f"{what} holds a value that is not finite")
    if limit is not None and len(value) and tensor.abs().max() > limit:
        worst = int(tensor.abs().argmax())
        raise ExploreError(
            f"{what}[{worst}] = {value[worst]} is out of range: sliders go from -{limit:g} to {limit:g}"
        )
    return tensor.float()


def timed(compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()``'s answer with ``ms``: the server's time for it, in milliseconds."""
    start = time.perf_counter()
    answer = compute()
    return {**answer, "ms": round((time.perf_counter() - start) * 1000.0, 2)}


# -- several models over one gallery ------------------------------------------------------------------
class Explorer:
    """The models of a session, the gallery of validation images they share, and the uploads."""

    def __init__(
        self, views: list[ModelView], gallery: Tensor, labels: Tensor, factor_names: list[str] | None
    ) -> None:
        if not views:
            raise NotExplorable("nothing to explore: give at least one run, checkpoint or exported folder")
        shapes = {view.source: (view.datamodule.channels, view.datamodule.image_size) for view in views}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{source} {c}x{s}x{s}" for source, (c, s) in shapes.items())
            raise NotExplorable(
                f"side by side, the models must take images of one shape; these take {listed}"
            )
        self.views = {view.key: view for view in views}
        self.gallery, self.labels = gallery, labels  # (N, C, H, W) in [0, 1], (N, ...)
        self.factor_names = factor_names
        self.channels, self.image_size = next(iter(shapes.values()))
        self.uploads: OrderedDict[str, Tensor] = OrderedDict()
        self.uploads_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {
            "models": [view.describe() for view in self.views.values()],
            "gallery": len(self.gallery),
            "image_shape": [self.channels, self.image_size, self.image_size],
            "factor_names": self.factor_names,
            "slider_limit": SLIDER_LIMIT,
            "max_images": MAX_IMAGES,
            "samplers": list(SAMPLERS),
        }

    def gallery_png(self, index: int) -> bytes:
        if not 0 <= index < len(self.gallery):
            raise ExploreError(
                f"no gallery image {index}: there are {len(self.gallery)} (0 to {len(self.gallery) - 1})", 404
            )
        buffer = io.BytesIO()
        to_pil(self.gallery[index]).save(buffer, format="PNG")
        return buffer.getvalue()

    def upload(self, data: bytes) -> dict[str, Any]:
        image = read_upload(data, self.channels, self.image_size)
        key = secrets.token_hex(8)
        with self.uploads_lock:
            self.uploads[key] = image
            while len(self.uploads) > MAX_UPLOADS:
                self.uploads.popitem(last=False)
        return {"image": f"upload:{key}", "png": png_uri(image)}

    def image(self, ref: Any, what: str = "image") -> tuple[Tensor, Tensor | None]:
        """A gallery index or ``"upload:KEY"`` -> the image (1, C, H, W) in [0, 1] and its label (1, ...) or None."""
        if isinstance(ref, int) and not isinstance(ref, bool):
            if not 0 <= ref < len(self.gallery):
                raise ExploreError(
                    f"'{what}' = {ref}: there are {len(self.gallery)} gallery images (0 to {len(self.gallery) - 1})"
                )
            return self.gallery[ref : ref + 1], self.labels[ref : ref + 1]
        if isinstance(ref, str) and ref.startswith("upload:"):
            with self.uploads_lock:
                image = self.uploads.get(ref.removeprefix("upload:"))
            if image is None:
                raise ExploreError(
                    f"'{what}' = {ref!r}: no such upload (uploads are kept in memory, {MAX_UPLOADS} at most)",
                    404,
                )
            return image[None], None
        raise ExploreError(
            f"'{what}' must be a gallery index (0 to {len(self.gallery) - 1}) or an upload's 'upload:KEY', got {ref!r:.60}"
        )

    def view(self, key: Any) -> ModelView:
        if not isinstance(key, str) or key not in self.views:
            raise ExploreError(f"unknown model {key!r:.60}; the models are {', '.join(self.views)}", 404)
        return self.views[key]

    def factors(self, ref: Any) -> dict[str, float] | None:
        """The ground-truth factor values of a gallery image (None for uploads and data without factors)."""
        if self.factor_names is None or not isinstance(ref, int):
            return None
        return dict(zip(self.factor_names, map(float, self.labels[ref].flatten().tolist()), strict=False))

    def each_model(self, compute: Callable[[ModelView], dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """``compute(view)`` per model; a model that cannot answer gets its reason, the others still answer."""
        answers = {}
        for key, view in self.views.items():
            try:
                answers[key] = compute(view)
            except ModelCannot as err:
                answers[key] = {"error": str(err)}
            except (NotImplementedError, NotApplicable, SamplerNotApplicableError) as err:
                answers[key] = {"error": f"{view.name}: {err}"}
        return answers

    # -- the endpoints' work ----------------------------------------------------------------------
    def encode(self, body: Any) -> dict[str, Any]:
        """``{"image": REF}`` -> per model its code and the decode of it (the reconstruction)."""
        ref = field(body, "image", (int, str))
        image, label = self.image(ref)

        def one(view: ModelView) -> dict[str, Any]:
            if view.model.is_conditional and label is None:
                raise ModelCannot(
                    f"{view.name} is conditional: it needs the image's label; uploads have none, pick a gallery image"
                )
            code = view.encode(image, label)
            return {"code": code[0].tolist(), "png": png_uri(view.decode(code)[0])}

        return timed(
            lambda: {"models": self.each_model(one), "factors": self.factors(ref), "input": png_uri(image[0])}
        )

    def decode(self, body: Any) -> dict[str, Any]:
        """``{"codes": {MODEL: [M numbers]}, "sliders": [v_0, v_1, ...]}`` -> per model the decode of
        its code with slider r's latent moved by ``v_r`` spreads (the same slider positions for all)."""
        codes = field(body, "codes", dict)
        sliders = numbers(field(body, "sliders", list, []), "'sliders'", limit=SLIDER_LIMIT)
        most = max(len(view.sliders) for view in self.views.values())
        if len(sliders) > most:
            raise ExploreError(f"'sliders' has {len(sliders)} values; the models have at most {most} sliders")
        bases = {}  # every code checked before any is decoded
        for key, code in codes.items():
            view = self.view(key)
            bases[key] = numbers(code, f"'codes.{key}'", length=view.width)
        missing = [key for key in self.views if key not in bases]
        if missing:
            raise ExploreError(f"'codes' has no code for {', '.join(missing)}: give one per model")

        def one(view: ModelView) -> dict[str, Any]:
            return {"png": png_uri(view.decode(view.moved(bases[view.key], sliders.tolist())[None])[0])}

        return timed(lambda: {"models": self.each_model(one)})

    def sample(self, body: Any) -> dict[str, Any]:
        """``{"sampler": "prior"|"gmm", "n": 8, "seed": 0}`` -> per model n decoded draws and their codes.
        Prior draws use one seed for every model: models with the same latent size decode the same z."""
        sampler = field(body, "sampler", str, "prior")
        if sampler not in SAMPLERS:
            raise ExploreError(f"unknown sampler {sampler!r:.40}; choose from {', '.join(SAMPLERS)}")
        n = bounded_int(body, "n", 1, MAX_IMAGES, 8)
        seed = bounded_int(body, "seed", 0, 2**31 - 1, 0)
        ref = field(body, "image", (int, str), 0)  # the label a conditional model samples under

        def one(view: ModelView) -> dict[str, Any]:
            condition = None
            if view.model.is_conditional:
                image, label = self.image(ref)
                if label is None:
                    raise ModelCannot(f"{view.name} is conditional: it samples under a gallery image's label")
                condition = view.encode(image, label)[:, view.model.latent_dim :]
            codes = view.sample_codes(sampler, n, seed, condition)
            return {"codes": codes.tolist(), "png": [png_uri(image) for image in view.decode(codes)]}

        return timed(lambda: {"models": self.each_model(one)})

    def interpolate(self, body: Any) -> dict[str, Any]:
        """``{"from": REF, "to": REF, "steps": 8, "method": "linear"|"slerp"}`` -> per model the strip of
        decodes between the two images' codes, and the codes."""
        from vaezoo.evaluation.pictures import lerp, slerp

        method = field(body, "method", str, "linear")
        if method not in ("linear", "slerp"):
            raise ExploreError(f"'method' must be 'linear' or 'slerp', got {method!r:.40}")
        steps = bounded_int(body, "steps", 2, MAX_IMAGES, 8)
        (start, label_a), (end, label_b) = (
            self.image(field(body, "from", (int, str)), "from"),
            self.image(field(body, "to", (int, str)), "to"),
        )
        t = torch.linspace(0.0, 1.0, steps)[:, None]  # (S, 1)

        def one(view: ModelView) -> dict[str, Any]:
            if view.model.is_conditional and (label_a is None or label_b is None):
                raise ModelCannot(
                    f"{view.name} is conditional: interpolate between gallery images, which have labels"
                )
            a, b = view.encode(start, label_a), view.encode(end, label_b)  # (1, M) each
            codes = lerp(a, b, t) if method == "linear" else slerp(a, b, t)  # (S, M)
            return {"codes": codes.tolist(), "png": [png_uri(image) for image in view.decode(codes)]}

        return timed(lambda: {"models": self.each_model(one)})


def explorer_from_runs(
    runs: Sequence[tuple[str, LoadedRun, Any]],
    settings: ViewSettings | None = None,
    gallery_size: int = 48,
    log: Callable[[str], Any] = print,
) -> Explorer:
    """An explorer of ``(source, run, datamodule)`` triples (each run with its own data, set up); the
    gallery is the first one's validation split."""
    settings = settings or ViewSettings()
    views = []
    for index, (source, run, datamodule) in enumerate(runs):
        name = type(run.model).__name__
        log(
            f"explore: {source}: {name}, measuring its latents on {settings.stats_examples} validation images"
        )
        views.append(ModelView(f"m{index}", str(source), run, datamodule, settings))
    if not views:
        raise NotExplorable("nothing to explore: give at least one run, checkpoint or exported folder")
    first = views[0].datamodule
    images, labels = first.fixed_batch(gallery_size, split="val")
    truth = first.ground_truth
    names = list(truth.factor_names) if truth is not None else None
    return Explorer(views, to_unit(images, first.value_range), labels.cpu(), names)
