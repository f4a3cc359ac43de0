"""Ex-post latent samplers: fit a density to the latents of training images, then decode its draws.

Sampling from a density fitted to the aggregate posterior q(z) = E_x q(z|x), instead of the prior
p(z), improves samples of most autoencoders (Ghosh et al. 2020, "From Variational to Deterministic
Autoencoders", Sec. 4, ex-post density estimation; the pythae benchmark of Chadebec et al. 2022
found it the most effective single change). Three samplers share one small interface:

- ``NormalSampler`` ("prior"): the model's own prior, ``model.sample_prior``; the default.
- ``GaussianMixtureSampler`` ("gmm"): a K-component Gaussian mixture on the latents (Ghosh et al.).
- ``TwoStageSampler`` ("two_stage"): a second VAE on the latents, with a learned decoder variance
  (Dai & Wipf 2019, "Diagnosing and Enhancing VAE Models", Sec. 4).

Codes are what ``model.embed`` returns: (N, D) for most models, (N, D, h, w) for VQVAE. Samplers fit
the flattened (N, D*h*w) codes and return samples in the codes' shape, so ``model.decode`` takes
them. For VQVAE, a mixture over whole flattened quantised maps ignores that they lie on the codebook
and the spatial structure a PixelCNN would learn: crude, but it gives the model a sampler at all.

A fitted sampler saves to one safetensors file (tensors, plus its name and config as metadata), so
it can be cached beside a run and reloaded with :func:`load_sampler`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from vaezoo.fileio import atomic_path
from vaezoo.losses import gaussian_kl, squared_error
from vaezoo.nn.latent_vae import LatentVAE, learned_variance_nll

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

SeedLike = int | torch.Generator | None
ModuleT = TypeVar("ModuleT", bound=nn.Module)


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


class NormalSampler(LatentSampler):
    """The model's prior, ``model.sample_prior`` (N(0, I) for most models): nothing to fit."""

    name = "prior"

    def __init__(self, model: BaseVAE) -> None:
        super().__init__()
        if not getattr(model, "samples_from_prior", True):
            raise ValueError(
                f"{type(model).__name__} has no prior to sample from; fit a sampler on its codes "
                "instead, e.g. 'gmm' or 'two_stage'"
            )
        self.model = model

    @classmethod
    def create(cls, model: BaseVAE | None = None, **kwargs: Any) -> LatentSampler:
        if model is None:
            raise ValueError("the 'prior' sampler needs the model whose prior it samples")
        return cls(model, **kwargs)

    @property
    def fitted(self) -> bool:
        return True

    def fit(self, codes: Tensor | None = None) -> LatentSampler:
        """Nothing to fit; codes, if given, are only checked."""
        if codes is not None:
            flatten_codes(codes)
        return self

    def sample(self, num_samples: int, seed: SeedLike = None) -> Tensor:
        """Prior draws on the model's device; a seed forks the RNG so the global stream is untouched."""
        device = self.model.device
        if seed is None:
            return self.model.sample_prior(int(num_samples), device)
        generator = as_generator(seed)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(torch.randint(2**62, (), generator=generator)))
            return self.model.sample_prior(int(num_samples), device)

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> LatentSampler:
        return self


COVARIANCE_TYPES = ("auto", "full", "tied", "diag", "spherical")
# "auto": full covariances up to this many code dimensions, diagonal ones beyond. Ghosh et al. fit
# full covariances to latents of 16 to 128 dimensions; VQVAE's flattened 16x16 maps of 16-vectors
# have 4,096, where a full covariance costs K * M^2 = 168 M numbers (1.3 GB), each EM iteration
# ~K * N * M^2 = 1.7e12 multiply-adds on 10,000 codes, and 10,000 codes cannot determine it anyway.
FULL_COVARIANCE_MAX_DIMS = 128


def covariance_for(covariance_type: str, dims: int) -> str:
    """The covariance type a mixture on ``dims``-dimensional codes is fitted with ("auto" resolved)."""
    if covariance_type != "auto":
        return covariance_type
    return "full" if dims <= FULL_COVARIANCE_MAX_DIMS else "diag"


class GaussianMixtureSampler(LatentSampler):
    """A Gaussian mixture fitted by EM (scikit-learn's ``GaussianMixture``) on the latents: the
    ex-post density estimation of Ghosh et al. 2020, Sec. 4.

    Sampling is done here in torch from the fitted weights, means and covariance factors, so it is
    reproducible from a seed and the saved state is tensors only. ``full`` covariances cost
    K * M^2 numbers and ~K * N * M^2 operations per EM iteration; ``"auto"`` (the default) uses them
    up to ``FULL_COVARIANCE_MAX_DIMS`` code dimensions and ``diag`` (K * N * M) for larger flattened
    codes such as VQVAE's maps. ``progress`` prints scikit-learn's EM progress every 10 iterations.
    """

    name = "gmm"

    def __init__(
        self,
        num_components: int = 10,
        covariance_type: str = "auto",
        random_state: int = 0,
        max_iter: int = 100,
        reg_covar: float = 1e-6,
        progress: bool = False,
    ) -> None:
        super().__init__()
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type '{covariance_type}' is not one of {COVARIANCE_TYPES}")
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        self.num_components, self.covariance_type = num_components, covariance_type
        self.random_state, self.max_iter, self.reg_covar = random_state, max_iter, reg_covar
        self.progress = progress
        self.fitted_covariance_type: str | None = None  # covariance_type with "auto" resolved, after fit

    def describe(self, dims: int) -> str:
        kind = covariance_for(self.covariance_type, dims)
        return f"{self.num_components} components, {kind} covariances"

    def config(self) -> dict[str, Any]:
        return {
            "num_components": self.num_components,
            "covariance_type": self.covariance_type,
            "random_state": self.random_state,
            "max_iter": self.max_iter,
            "reg_covar": self.reg_covar,
        }

    def _fit(self, flat: Tensor) -> None:
        from sklearn.mixture import GaussianMixture  # imported on use: scikit-learn is slow to import

        if flat.shape[0] < self.num_components:
            raise ValueError(f"cannot fit {self.num_components} components to {flat.shape[0]} codes")
        kind = covariance_for(self.covariance_type, flat.shape[1])
        mixture = GaussianMixture(
            self.num_components,
            covariance_type=kind,
            random_state=self.random_state,
            max_iter=self.max_iter,
            reg_covar=self.reg_covar,
            verbose=2 if self.progress else 0,
            verbose_interval=10,
        ).fit(flat.numpy())
        self.weights = torch.from_numpy(mixture.weights_)  # (K,)
        self.means = torch.from_numpy(mixture.means_)  # (K, M)
        self.scale = mixture_scale(mixture.covariances_, kind, self.means.shape)
        self.fitted_covariance_type = kind

    def _sample(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        components = torch.multinomial(self.weights, num_samples, replacement=True, generator=generator)
        eps = torch.randn(num_samples, self.means.shape[1], generator=generator, dtype=torch.float64)
        z = torch.empty_like(eps)  # (n, M)
        for k in components.unique().tolist():  # per component: no (n, M, M) gather of the factors
            rows = components == k
            if self.scale.dim() == 2:  # diagonal: standard deviations (K, M)
                z[rows] = self.means[k] + eps[rows] * self.scale[k]
            else:  # Cholesky factors L (K, M, M), cov = L L^T
                z[rows] = self.means[k] + eps[rows] @ self.scale[k].T
        return z

    def _state(self) -> dict[str, Tensor]:
        return {"weights": self.weights, "means": self.means, "scale": self.scale}

    def _load_state(self, state: dict[str, Tensor]) -> None:
        self.weights, self.means, self.scale = state["weights"], state["means"], state["scale"]


def mixture_scale(covariances: np.ndarray, covariance_type: str, means_shape: torch.Size) -> Tensor:
    """scikit-learn's ``covariances_`` -> std devs (K, M) for diag / spherical, Cholesky factors
    (K, M, M) for full / tied."""
    num_components, dims = means_shape
    cov = torch.from_numpy(np.asarray(covariances, dtype=np.float64))
    if covariance_type == "spherical":  # (K,)
        return cov.sqrt()[:, None].expand(num_components, dims).contiguous()
    if covariance_type == "diag":  # (K, M)
        return cov.sqrt()
    if covariance_type == "tied":  # (M, M), shared
        cov = cov.expand(num_components, dims, dims)
    return torch.linalg.cholesky(cov).contiguous()  # (K, M, M)


class TwoStageSampler(LatentSampler):
    """A second VAE on the latents (Dai & Wipf 2019, "Diagnosing and Enhancing VAE Models", Sec. 4).

    Stage 2 is vaezoo's :class:`~vaezoo.nn.latent_vae.LatentVAE`: u ~ N(0, I) of the codes'
    dimension M (the paper's kappa = d), an MLP q(u|z), and p(z|u) = N(z_hat(u), gamma I) with a
    learned scalar gamma, the paper's key point: gamma shrinks to the reconstruction error, so the KL
    term is weighted enough to push q(u) towards N(0, I). Its negative ELBO per code::

        ||z - z_hat(u)||^2 / (2 gamma) + (M/2) log gamma + KL(q(u|z) || N(0, I))

    is minimised with Adam for ``steps`` minibatches under a cosine learning-rate decay.

    Sampling draws u ~ N(0, I) and returns z_hat(u) + sqrt(gamma) * eps, a draw from the fitted
    density p(z) = E_u N(z; z_hat(u), gamma I). The paper returns the mean z_hat(u)
    (``decoder_noise=False``), which is the same once gamma -> 0; but on small or nearly Gaussian
    code sets stage 2 may settle with q(u|z) = p(u) and gamma = the codes' variance (a Gaussian fit),
    and then the mean alone is one point for every u. Two further choices of ours: with
    ``standardize`` the codes are shifted and scaled per dimension before fitting (conditioning) and
    the samples mapped back; training is seeded, runs on the CPU in one thread (the net is too small
    to gain from more) and in a forked RNG, leaving the global stream untouched.
    """

    name = "two_stage"

    def __init__(
        self,
        width: int = 256,
        steps: int = 2000,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
        standardize: bool = True,
        decoder_noise: bool = True,
        progress: bool = False,
    ) -> None:
        super().__init__()
        if min(width, steps, batch_size) < 1 or lr <= 0:
            raise ValueError(
                f"width, steps, batch_size and lr must be positive, got {(width, steps, batch_size, lr)}"
            )
        self.width, self.steps, self.batch_size, self.lr = width, steps, batch_size, lr
        self.seed, self.standardize, self.decoder_noise = seed, standardize, decoder_noise
        self.progress = progress
        self.losses: list[float] = []  # the training loss at every step, to check convergence

    def config(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.seed,
            "standardize": self.standardize,
            "decoder_noise": self.decoder_noise,
        }

    def describe(self, dims: int) -> str:
        return f"a latent VAE of width {self.width}, {self.steps} steps"

    def _fit(self, flat: Tensor) -> None:
        flat = flat.float()  # (N, M)
        if self.standardize:
            self.shift, self.scale = flat.mean(0), flat.std(0).clamp_min(1e-6)  # (M,) each
        else:
            self.shift, self.scale = torch.zeros(flat.shape[1]), torch.ones(flat.shape[1])
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                self.net = LatentVAE(flat.shape[1], self.width)
                data = (flat - self.shift) / self.scale  # (N, M)
                self.losses = train_latent_vae(
                    self.net, data, self.steps, self.batch_size, self.lr, self.progress
                )
        finally:
            torch.set_num_threads(threads)

    def _sample(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        u = torch.randn(num_samples, self.shift.shape[0], generator=generator)  # (n, M) ~ N(0, I)
        with evaluating(self.net):
            z = self.net.decoder(u)  # (n, M) the mean of p(z|u)
            if self.decoder_noise:
                z = z + torch.exp(0.5 * self.net.log_gamma) * torch.randn(z.shape, generator=generator)
        return z * self.scale + self.shift

    def _state(self) -> dict[str, Tensor]:
        net = {f"net.{key}": value for key, value in self.net.state_dict().items()}
        return {"shift": self.shift, "scale": self.scale, **net}

    def _load_state(self, state: dict[str, Tensor]) -> None:
        self.shift, self.scale = state["shift"], state["scale"]
        self.net = LatentVAE(self.shift.shape[0], self.width)
        self.net.load_state_dict({key[4:]: value for key, value in state.items() if key.startswith("net.")})
        self.net.eval()


@torch.enable_grad()  # callers often sample under no_grad; fitting needs gradients
def train_latent_vae(
    net: LatentVAE, data: Tensor, steps: int, batch_size: int, lr: float, progress: bool = False
) -> list[float]:
    """Fit stage 2 to codes ``data`` (N, M) by minibatch Adam with cosine decay; the loss per step."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    batch_size, dims = min(batch_size, data.shape[0]), data.shape[1]
    iterator: Iterable[int] = range(steps)
    if progress:
        from rich.progress import track

        iterator = track(iterator, description="two-stage sampler")
    losses = []
    net.train()
    for _ in iterator:
        z = data[torch.randint(data.shape[0], (batch_size,))]  # (B, M)
        posterior = net.encoder(z)  # q(u|z)
        z_hat = net.decoder(posterior.rsample())  # (B, M)
        nll = learned_variance_nll(squared_error(z_hat, z, "sum"), net.log_gamma, dims)  # (B,)
        loss = (nll + gaussian_kl(posterior.mu, posterior.log_var)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    net.eval()
    return losses


SAMPLERS: dict[str, type[LatentSampler]] = {
    "prior": NormalSampler,
    "gmm": GaussianMixtureSampler,
    "two_stage": TwoStageSampler,
}


def sampler_class(name: str) -> type[LatentSampler]:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}'; known samplers: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def fit_sampler(
    name: str, model: BaseVAE, codes: Tensor | None, log: Callable[[str], Any] | None = None, **kwargs: Any
) -> LatentSampler:
    """Build sampler ``name`` (a key of ``SAMPLERS``) with ``kwargs`` and fit it to ``codes`` (N, D, ...);
    ``log`` gets one line saying what is fitted to what before a fit starts (:func:`fit_message`)."""
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
