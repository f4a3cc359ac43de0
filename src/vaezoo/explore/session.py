"""What ``vaezoo explore`` computes, with no web framework: trained models side by side over one gallery
of validation images (and uploads), the latent code of an image in each, decodes of edited codes,
prior and ex-post samples, interpolations.

Requests arrive as plain dicts (the JSON bodies) and answers leave as plain dicts, images as PNG data
URIs. A bad request raises :class:`ExploreError` with the message and HTTP status to answer with.
Nothing is written anywhere: the runs are only read.
"""

from __future__ import annotations

import io
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from vaezoo.evaluation.evaluate import NotApplicable
from vaezoo.evaluation.samplers import SamplerNotApplicableError
from vaezoo.explore.requests import ExploreError, ModelCannot, bounded_int, field, numbers, timed
from vaezoo.explore.view import MAX_SLIDERS, SLIDER_LIMIT, ModelView, NotExplorable, ViewSettings
from vaezoo.images import png_bytes, png_uri, to_unit
from vaezoo.io import LoadedRun

__all__ = [
    "MAX_SLIDERS",
    "SLIDER_LIMIT",
    "ExploreError",
    "Explorer",
    "ModelCannot",
    "ModelView",
    "NotExplorable",
    "ViewSettings",
    "explorer_from_runs",
]

MAX_IMAGES = 64  # samples or interpolation steps per request
MAX_UPLOAD_BYTES = 8 * 2**20
MAX_UPLOADS = 32  # uploads kept in memory (the oldest goes first)
SAMPLERS = ("prior", "gmm")


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
        return png_bytes(self.gallery[index])

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
