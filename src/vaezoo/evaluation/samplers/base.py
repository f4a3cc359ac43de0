"""The sampler interface, its registry, and fitting, saving, loading and decoding samplers.

A sampler gives latent codes for ``model.decode``: ``fit(codes) -> self`` on the codes of training
images (``model.embed``), then ``sample(n, seed)``. Samplers that are the model's own way of sampling
(:class:`ModelSampler`, e.g. its prior) are built from the model and need no codes.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from vaezoo.fileio import atomic_path

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

SeedLike = int | torch.Generator | None
ModuleT = TypeVar("ModuleT", bound=nn.Module)
SamplerT = TypeVar("SamplerT", bound="type[LatentSampler]")


class SamplerNotApplicableError(ValueError):
    """The sampler does not apply to this model (e.g. a hyperspherical sampler for a Gaussian latent)."""


class SamplerNotFittedError(RuntimeError):
    """``sample`` was called on a sampler that has not been fitted (or loaded) yet."""


@contextmanager
def evaluating(model: ModuleT) -> Iterator[ModuleT]:
    """Within the block: ``model`` in eval mode and no gradients; its training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def as_generator(seed: SeedLike) -> torch.Generator | None:
    """An int seeds a fresh CPU generator; a generator is used as is; None means the global RNG."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


def flatten_codes(codes: Tensor) -> Tensor:
    """Check latent codes (N, D, ...) and flatten them to float64 (N, D*...) for fitting."""
    if not isinstance(codes, Tensor) or codes.dim() < 2 or codes.shape[0] < 2:
        shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
        raise ValueError(f"codes must be a tensor (N, D, ...) with N >= 2 examples, got {shape}")
    flat = codes.detach().cpu().reshape(codes.shape[0], -1).double()  # (N, M)
    bad = ~torch.isfinite(flat)
    if bad.any():
        rows = bad.any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"codes contain NaN or infinite values (e.g. in rows {rows}); fit on finite latents")
    return flat


class LatentSampler:
    """Base class: ``fit(codes) -> self``, ``sample(n, seed) -> (n, *code_shape)``, save / load.

    Subclasses implement ``_fit(flat (N, M))``, ``_sample(n, generator) -> (n, M)``, ``config()`` (the
    constructor's arguments) and ``_state()`` / ``_load_state(state)`` (tensors only).
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""  # a few words for ``--sampler``'s help, e.g. "a Gaussian mixture"
    needs_codes: ClassVar[bool] = True  # False: built from the model alone, fitted when built

    def __init__(self) -> None:
        self.code_shape: tuple[int, ...] | None = None  # the trailing shape of the codes, (D,) or (D, h, w)

    @classmethod
    def create(cls, model: BaseVAE | None = None, **kwargs: Any) -> LatentSampler:
        """Build from a config; only samplers that need the model (the prior) use ``model``."""
        return cls(**kwargs)

    def config(self) -> dict[str, Any]:
        return {}

    def describe(self, dims: int) -> str:
        """A few words on what a fit to ``dims``-dimensional codes builds, for the fit's message."""
        return self.name

    @property
    def fitted(self) -> bool:
        return self.code_shape is not None

    def fit(self, codes: Tensor) -> LatentSampler:
        """Fit to latent codes (N, D, ...) of training images; returns ``self``."""
        flat = flatten_codes(codes)  # (N, M)
        self._fit(flat)
        self.code_shape = tuple(codes.shape[1:])
        return self

    def sample(self, num_samples: int, seed: SeedLike = None) -> Tensor:
        """``num_samples`` float32 codes (n, *code_shape) on the CPU; ``seed`` an int or a generator."""
        code_shape = self.code_shape
        if not self.fitted or code_shape is None:
            raise SamplerNotFittedError(f"{type(self).__name__}.sample called before fit(codes) or load")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
        flat = self._sample(int(num_samples), as_generator(seed))  # (n, M)
        return flat.float().reshape(int(num_samples), *code_shape)

    # -- persistence ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        if not self.fitted:
            raise SamplerNotFittedError(f"{type(self).__name__} has no state before fit(codes)")
        state = {key: value.detach().cpu().contiguous() for key, value in self._state().items()}
        return {"code_shape": torch.tensor(self.code_shape, dtype=torch.int64), **state}

    def load_state_dict(self, state: dict[str, Tensor]) -> LatentSampler:
        self._load_state(state)
        self.code_shape = tuple(int(size) for size in state["code_shape"].tolist())
        return self

    def save(self, path: str | Path) -> Path:
        """Write the fitted sampler to one safetensors file (atomically); reload with ``load_sampler``."""
        path = Path(path)
        metadata = {"sampler": self.name, "config": json.dumps(self.config())}
        with atomic_path(path) as tmp:
            save_file(self.state_dict(), str(tmp), metadata=metadata)
        return path

    def _fit(self, flat: Tensor) -> None:
        raise NotImplementedError

    def _sample(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def _state(self) -> dict[str, Tensor]:
        return {}

    def _load_state(self, state: dict[str, Tensor]) -> None:
        pass


class ModelSampler(LatentSampler):
    """A sampler that is the model's own way of sampling: built from the model, nothing to fit.

    Subclasses set ``name`` and implement ``draw(n, device)``; ``check(model)`` rejects a model the
    sampler does not apply to.
    """

    needs_codes = False

    def __init__(self, model: BaseVAE) -> None:
        super().__init__()
        self.check(model)
        self.model = model

    @classmethod
    def check(cls, model: BaseVAE) -> None:
        """Raise :class:`SamplerNotApplicableError`, saying why, if ``model`` cannot be sampled this way."""

    @classmethod
    def create(cls, model: BaseVAE | None = None, **kwargs: Any) -> LatentSampler:
        if model is None:
            raise ValueError(f"the '{cls.name}' sampler needs the model it samples")
        return cls(model, **kwargs)

    @property
    def fitted(self) -> bool:
        return True

    def fit(self, codes: Tensor | None = None) -> LatentSampler:
        """Nothing to fit; codes, if given, are only checked."""
        if codes is not None:
            flatten_codes(codes)
        return self

    def draw(self, num_samples: int, device: torch.device) -> Tensor:
        """``num_samples`` latents in the form ``model.decode`` takes, on ``device``."""
        raise NotImplementedError

    def sample(self, num_samples: int, seed: SeedLike = None) -> Tensor:
        """Draws on the model's device; a seed forks the RNG so the global stream is untouched."""
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
        device = self.model.device
        if seed is None:
            return self.draw(int(num_samples), device)
        generator = as_generator(seed)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(torch.randint(2**62, (), generator=generator)))
            return self.draw(int(num_samples), device)

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> LatentSampler:
        return self


def standardization(flat: Tensor, standardize: bool) -> tuple[Tensor, Tensor]:
    """(shift, scale), (M,) each, that map codes (N, M) to zero mean and unit variance per dimension
    (or zeros and ones: no change) before a sampler's network is fitted to them."""
    if standardize:
        return flat.mean(0), flat.std(0).clamp_min(1e-6)
    return torch.zeros(flat.shape[1]), torch.ones(flat.shape[1])


@torch.enable_grad()  # callers often sample under no_grad; fitting needs gradients
def fit_by_adam(
    net: nn.Module,
    batch_loss: Callable[[Tensor], Tensor],
    num_examples: int,
    steps: int,
    batch_size: int,
    lr: float,
    *,
    description: str,
    progress: bool = False,
    cosine: bool = True,
    diverged: str | None = None,
) -> list[float]:
    """Minimise ``batch_loss(rows)`` (a scalar) over minibatches of ``batch_size`` random row
    indices < ``num_examples`` by Adam, under a cosine decay of the learning rate if ``cosine``;
    the loss at every step. ``description`` labels the progress bar; ``diverged``, if given, is
    the message of the error a non-finite loss raises (with the step appended)."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps) if cosine else None
    batch_size = min(batch_size, num_examples)
    iterator: Iterable[int] = range(steps)
    if progress:
        from rich.progress import track

        iterator = track(iterator, description=description)
    losses = []
    net.train()
    for step in iterator:
        loss = batch_loss(torch.randint(num_examples, (batch_size,)))
        if diverged is not None and not torch.isfinite(loss):
            raise RuntimeError(f"{diverged} at step {step}; try a lower lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        losses.append(loss.item())
    net.eval()
    return losses


SAMPLERS: dict[str, type[LatentSampler]] = {}  # name -> class, filled by @register_sampler


def register_sampler(cls: SamplerT) -> SamplerT:
    """Class decorator: make a sampler reachable by its ``name`` (``--sampler NAME``, ``load_sampler``)."""
    if cls.name in SAMPLERS:
        raise ValueError(
            f"a sampler named '{cls.name}' is already registered ({SAMPLERS[cls.name].__name__})"
        )
    SAMPLERS[cls.name] = cls
    return cls


def sampler_names() -> list[str]:
    """The registered samplers' names, the prior (the default) first."""
    return sorted(SAMPLERS, key=lambda name: (name != "prior", name))


def sampler_help() -> str:
    """'prior: the model's prior; gmm: a Gaussian mixture on training latents; ...' for ``--sampler``."""
    return "; ".join(f"{name}: {SAMPLERS[name].summary or name}" for name in sampler_names())


def sampler_options(name: str) -> list[str]:
    """The settings sampler ``name`` takes (its constructor's keywords, the model aside)."""
    parameters = inspect.signature(sampler_class(name).__init__).parameters
    return [key for key in parameters if key not in ("self", "model", "progress")]


def check_sampler_options(name: str, options: dict[str, Any]) -> None:
    """Raise ValueError naming any key of ``options`` that sampler ``name`` does not take."""
    known = sampler_options(name)
    unknown = [key for key in options if key not in known]
    if unknown:
        takes = f"it takes: {', '.join(known)}" if known else "it takes none"
        raise ValueError(f"the '{name}' sampler has no option {', '.join(map(repr, unknown))}; {takes}")


def sampler_class(name: str) -> type[LatentSampler]:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}'; known samplers: {', '.join(sampler_names())}")
    return SAMPLERS[name]


def fit_sampler(
    name: str, model: BaseVAE, codes: Tensor | None, log: Callable[[str], Any] | None = None, **kwargs: Any
) -> LatentSampler:
    """Build sampler ``name`` (a key of ``SAMPLERS``) with ``kwargs`` and fit it to ``codes`` (N, D, ...);
    ``log`` gets one line saying what is fitted to what before a fit starts (:func:`fit_message`)."""
    check_sampler_options(name, {key: value for key, value in kwargs.items() if key != "progress"})
    sampler = sampler_class(name).create(model, **kwargs)
    if codes is None:
        if not sampler.fitted:
            raise ValueError(f"the '{name}' sampler must be fitted: pass the codes of training images")
        return sampler  # fitted when built (the prior): nothing to fit
    if log is not None and not sampler.fitted:
        log(fit_message(sampler, codes))
    return sampler.fit(codes)


def fit_message(sampler: LatentSampler, codes: Tensor) -> str:
    """'fitting the gmm sampler (10 components, diag covariances) to 10000 latents of dimension
    4096 (maps of 16x16x16) ...': printed before a fit, which can take minutes."""
    dims = math.prod(codes.shape[1:])
    maps = f" (maps of {'x'.join(map(str, codes.shape[1:]))})" if codes.dim() > 2 else ""
    return (
        f"fitting the {sampler.name} sampler ({sampler.describe(dims)}) to {codes.shape[0]} latents of "
        f"dimension {dims}{maps}; this can take a while"
    )


def load_sampler(path: str | Path, model: BaseVAE | None = None) -> LatentSampler:
    """A sampler saved by ``LatentSampler.save``; ``model`` is needed for the 'prior' sampler only."""
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
        state = {key: file.get_tensor(key) for key in file.keys()}
    if "sampler" not in metadata:
        raise ValueError(f"{path} is not a saved vaezoo sampler (no 'sampler' in its metadata)")
    sampler = sampler_class(metadata["sampler"]).create(model, **json.loads(metadata.get("config", "{}")))
    return sampler.load_state_dict(state)


def embed_batches(
    model: BaseVAE, batches: Iterable[Tensor | Sequence[Tensor]], limit: int | None = None
) -> Tensor:
    """``model.embed`` of image batches, in eval mode, up to ``limit`` codes: (N, D, ...) on the CPU,
    ready for ``LatentSampler.fit``. A batch is images, or (images, labels, ...) as a DataLoader gives;
    the labels go to ``embed(images, labels=...)`` (conditional models use them, others ignore them)."""
    codes, count = [], 0
    kwargs: dict[str, Tensor]
    with evaluating(model):
        for batch in batches:
            if isinstance(batch, (tuple, list)):
                images, kwargs = batch[0], ({"labels": batch[1].to(model.device)} if len(batch) > 1 else {})
            else:
                images, kwargs = batch, {}
            codes.append(model.embed(images.to(model.device), **kwargs).cpu())
            count += codes[-1].shape[0]
            if limit is not None and count >= limit:
                break
    if not codes:
        raise ValueError("embed_batches got no batches")
    return torch.cat(codes)[:limit]


def sample_images(model: BaseVAE, sampler: LatentSampler, num_samples: int, seed: SeedLike = None) -> Tensor:
    """Decode ``num_samples`` codes drawn from ``sampler``: images (n, C, H, W), in eval mode."""
    codes = sampler.sample(num_samples, seed)
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    with evaluating(model):
        return model.decode(codes.to(model.device, dtype))
