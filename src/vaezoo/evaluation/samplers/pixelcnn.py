"""A gated PixelCNN prior over a VQ model's code indices: how VQ-VAE samples (van den Oord et al. 2017)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vaezoo.evaluation.samplers.base import (
    LatentSampler,
    SamplerNotApplicableError,
    SamplerNotFittedError,
    SeedLike,
    as_generator,
    evaluating,
    fit_by_adam,
    register_sampler,
)
from vaezoo.nn.pixelcnn import GatedPixelCNN

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

BITS_EXAMPLES = 1024  # code maps the fitted prior's bits per code are measured on (cheap: no grads)
# A codes vector is a codebook row when it is this close to one, relative to the codebook's scale
# (the quantised maps ARE rows; this leaves room for a copy through another dtype).
ROW_TOLERANCE = 1e-3


@register_sampler
class PixelCNNSampler(LatentSampler):
    """An autoregressive prior over the code indices of a model with a codebook (VQ-VAE).

    VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017, Sec. 3.2 and 4) samples by fitting a prior
    over the discrete latents after training: here a gated PixelCNN (van den Oord et al. 2016,
    :class:`~vaezoo.nn.pixelcnn.GatedPixelCNN`) over the K-way map of indices, trained by
    cross-entropy, -log p(c) = -sum_ij log p(c_ij | c_<(i, j)), with minibatch Adam.

    The codes it is fitted on are ``model.embed``'s quantised maps (N, D, h, w): every vector is
    a codebook row, turned back into its index exactly (a vector that is not a row is an error).
    Samples are drawn position by position, h * w passes over all samples at once (``temperature``
    divides the logits), and returned as the codebook rows (n, D, h, w),
    ``model.latents_from_codes``, so ``model.decode`` takes them. A saved sampler keeps the codebook
    it was fitted for and refuses to load beside a model with another one.

    Defaults are for the CPU: 64 channels and 6 layers of kernel 3 (about 0.5 M multiply-adds per
    position, 4 G for a batch of 32 maps of 16 x 16, the shipped VQ-VAE's) see 7 rows up, 6 columns
    to either side, and 7 codes to the left, most of a 16 x 16 map; 1000 steps of 32 maps see the
    default 10,000 fitted maps about 3 times. After the fit, ``bits_per_code`` is the prior's mean
    cross-entropy in bits per position on (up to 1024 of) the fitted maps (training data, so an
    optimistic figure), to compare with ``log2 K``, the bits of a uniform choice. Training is seeded, runs on the model's device and in
    a forked RNG, leaving the global stream untouched; ``progress`` shows a progress bar.
    """

    name = "pixelcnn"
    summary = "a gated PixelCNN prior over the codebook indices (VQ models)"

    def __init__(
        self,
        model: BaseVAE,
        channels: int = 64,
        num_layers: int = 6,
        kernel_size: int = 3,
        steps: int = 1000,
        batch_size: int = 32,
        lr: float = 1e-3,
        seed: int = 0,
        temperature: float = 1.0,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.check(model)
        if min(channels, num_layers, steps, batch_size) < 1 or lr <= 0 or temperature <= 0:
            raise ValueError(
                "channels, num_layers, steps, batch_size, lr and temperature must be positive, got "
                f"{(channels, num_layers, steps, batch_size, lr, temperature)}"
            )
        self.model = model
        self.num_codes = int(model.codebook_size)  # type: ignore[arg-type]  # checked above
        self.channels, self.num_layers, self.kernel_size = channels, num_layers, kernel_size
        self.steps, self.batch_size, self.lr, self.seed = steps, batch_size, lr, seed
        self.temperature, self.progress = temperature, progress
        self.net: GatedPixelCNN | None = None
        self.losses: list[float] = []  # the training cross-entropy (nats per code) at every step
        self.bits_per_code: float | None = None

    @classmethod
    def check(cls, model: BaseVAE | None) -> None:
        """Raise :class:`SamplerNotApplicableError` unless ``model`` has a codebook (``codebook_size``)."""
        if model is None:
            raise ValueError(
                "the 'pixelcnn' sampler needs the model whose codes it models (load_sampler(path, model))"
            )
        if getattr(model, "codebook_size", None) is None:
            raise SamplerNotApplicableError(
                f"the 'pixelcnn' sampler models codebook indices, and {type(model).__name__} has no "
                "codebook (codebook_size is None); use 'gmm' or 'two_stage' on its latents instead"
            )

    @classmethod
    def create(cls, model: BaseVAE | None = None, **kwargs: Any) -> LatentSampler:
        cls.check(model)
        return cls(model, **kwargs)  # type: ignore[arg-type]  # checked: not None

    def config(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "num_layers": self.num_layers,
            "kernel_size": self.kernel_size,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.seed,
            "temperature": self.temperature,
        }

    @property
    def uniform_bits(self) -> float:
        """log2 K: the bits per code of a uniform choice among the K codes."""
        return math.log2(self.num_codes)

    def describe(self, dims: int = 0) -> str:
        net = f"a gated PixelCNN of {self.num_layers} layers x {self.channels} channels over {self.num_codes} codes"
        if self.bits_per_code is None:
            return f"{net}, {self.steps} steps"
        return f"{net}: {self.bits_per_code:.3f} bits per code (uniform: {self.uniform_bits:.3f})"

    # -- fitting --------------------------------------------------------------------------------
    def codebook(self) -> Tensor:
        """The model's K codebook rows (K, D), read through ``latents_from_codes`` of a 1 x K map."""
        device = self.model.device
        with evaluating(self.model):
            rows = self.model.latents_from_codes(torch.arange(self.num_codes, device=device).view(1, -1, 1))
        return rows[0, :, :, 0].T.detach()  # (1, D, K, 1) -> (K, D)

    def fit(self, codes: Tensor) -> LatentSampler:
        """Fit to quantised maps (N, D, h, w) (``model.embed``): their indices, then :meth:`fit_indices`."""
        return self.fit_indices(codebook_indices(codes, self.codebook()))

    def fit_indices(self, indices: Tensor) -> PixelCNNSampler:
        """Fit to index maps (N, h, w) of codes < K (e.g. ``model.codes(x)``); returns ``self``."""
        if indices.dim() != 3 or len(indices) < 1 or indices.dtype.is_floating_point:
            raise ValueError(
                f"indices must be an integer tensor (N, h, w), got {indices.dtype} {tuple(indices.shape)}"
            )
        if indices.min() < 0 or indices.max() >= self.num_codes:
            raise ValueError(
                f"indices must lie in [0, {self.num_codes}), got {indices.min()}..{indices.max()}"
            )
        device = self.model.device
        indices = indices.long().cpu()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            net = GatedPixelCNN(self.num_codes, self.channels, self.num_layers, self.kernel_size).to(device)
            self.losses = train_pixelcnn(net, indices, self.steps, self.batch_size, self.lr, self.progress)
        self.net = net
        self.bits_per_code = mean_bits(net, indices[:BITS_EXAMPLES], self.batch_size)
        if self.progress:
            print(f"pixelcnn sampler: {self.describe()}")
        self.code_shape = (self.codebook().shape[1], *indices.shape[1:])  # (D, h, w)
        return self

    # -- sampling -------------------------------------------------------------------------------
    def sample_indices(self, num_samples: int, seed: SeedLike = None) -> Tensor:
        """Index maps (n, h, w) drawn from the fitted prior, on the model's device."""
        if self.net is None or self.code_shape is None:
            raise SamplerNotFittedError(f"{type(self).__name__}.sample called before fit(codes) or load")
        height, width = self.code_shape[1:]
        with evaluating(self.net):
            return self.net.sample(num_samples, height, width, self.temperature, as_generator(seed))

    def _sample(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        indices = self.sample_indices(num_samples, generator)  # (n, h, w)
        with evaluating(self.model):
            latents = self.model.latents_from_codes(indices)  # (n, D, h, w)
        return latents.float().cpu().reshape(num_samples, -1)

    # -- persistence: the net's tensors, and the codebook it was fitted for ---------------------
    def _state(self) -> dict[str, Tensor]:
        if self.net is None or self.bits_per_code is None:
            raise SamplerNotFittedError(f"{type(self).__name__} has no state before fit(codes)")
        net = {f"net.{key}": value for key, value in self.net.state_dict().items()}
        return {"codebook": self.codebook(), "bits_per_code": torch.tensor(self.bits_per_code), **net}

    def _load_state(self, state: dict[str, Tensor]) -> None:
        codebook = self.codebook()
        saved = state["codebook"].to(codebook.device, codebook.dtype)
        if saved.shape != codebook.shape or not torch.allclose(saved, codebook, rtol=1e-5, atol=1e-6):
            raise ValueError(
                f"this pixelcnn sampler was fitted for another codebook than {type(self.model).__name__}'s "
                f"(K x D: {tuple(saved.shape)}, the model's {tuple(codebook.shape)}): refit it on this "
                "model's codes"
            )
        net = GatedPixelCNN(self.num_codes, self.channels, self.num_layers, self.kernel_size)
        net.load_state_dict({key[4:]: value for key, value in state.items() if key.startswith("net.")})
        self.net = net.to(self.model.device).eval()
        self.bits_per_code = float(state["bits_per_code"])


def codebook_indices(codes: Tensor, codebook: Tensor, chunk: int = 16384) -> Tensor:
    """The indices (N, h, w) of the codebook rows (K, D) that quantised maps (N, D, h, w) are made
    of; ValueError if a vector is not one of the rows (up to ``ROW_TOLERANCE`` of their scale)."""
    if not isinstance(codes, Tensor) or codes.dim() != 4 or codes.shape[1] != codebook.shape[1]:
        shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
        raise ValueError(
            f"the pixelcnn sampler fits quantised maps (N, {codebook.shape[1]}, h, w) of codebook rows, got {shape}"
        )
    batch, dim, height, width = codes.shape
    book = codebook.float()
    flat = codes.detach().to(book.device, torch.float32).permute(0, 2, 3, 1).reshape(-1, dim)  # (N*h*w, D)
    indices, errors = [], []
    for part in flat.split(chunk):  # exact differences (no ||a||^2 - 2ab + ||b||^2 cancellation)
        distances = torch.cdist(part, book, compute_mode="donot_use_mm_for_euclid_dist")  # (n, K)
        error, index = distances.min(dim=1)
        indices.append(index)
        errors.append(error)
    error = torch.cat(errors)
    tolerance = ROW_TOLERANCE * (1.0 + float(book.norm(dim=1).max()))
    if not bool((error <= tolerance).all()):  # NaN fails too
        worst = float(error.nan_to_num(float("inf")).max())
        raise ValueError(
            f"the codes are not codebook rows (a vector lies {worst:.3g} from the nearest, more than "
            f"{tolerance:.3g}): fit the pixelcnn sampler on model.embed's quantised maps of this model"
        )
    return torch.cat(indices).view(batch, height, width).cpu()


def train_pixelcnn(
    net: GatedPixelCNN, indices: Tensor, steps: int, batch_size: int, lr: float, progress: bool = False
) -> list[float]:
    """Minimise the cross-entropy of index maps (N, h, w) (on the CPU) by minibatch Adam; the mean
    nats per code at every step."""
    device = next(net.parameters()).device
    return fit_by_adam(
        net,
        lambda rows: net.nll(indices[rows].to(device)).mean(),  # a batch (B, h, w)
        len(indices),
        steps,
        batch_size,
        lr,
        description="pixelcnn sampler",
        progress=progress,
        cosine=False,
    )


@torch.no_grad()
def mean_bits(net: GatedPixelCNN, indices: Tensor, batch_size: int) -> float:
    """The mean cross-entropy of index maps (N, h, w) under ``net``, in bits per code."""
    device = next(net.parameters()).device
    with evaluating(net):
        total = sum(float(net.nll(part.to(device)).sum()) for part in indices.split(batch_size))
    return total / indices.numel() / math.log(2)
