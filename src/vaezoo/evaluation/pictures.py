"""Pictures of a trained model: reconstructions, samples, latent traversals, interpolations, a 2-D
embedding of the latent means and the KL per latent dimension.

Every function returns one image tensor (C, H, W) with values in [0, 1], ready for
``vaezoo.images.save_image`` and TensorBoard's ``add_image``. Plots are drawn with matplotlib's Agg
canvas on a bare ``Figure`` (no pyplot, so no global backend or figure registry is touched).

Latents are what ``model.embed`` returns ((B, D), or (B, D, h, w) for VQVAE); traversals and
interpolations work on the flattened codes (B, M) and reshape them back before ``model.decode``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from vaezoo.evaluation.samplers import LatentSampler, NormalSampler, SeedLike, evaluating, sample_images
from vaezoo.images import interleave_rows, make_grid

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

ValueRange = tuple[float, float]


# -- matplotlib -> tensors --------------------------------------------------------------------------
def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` with Agg to an RGB array (H, W, 3) uint8; a pyplot-managed figure is closed."""
    pyplot = sys.modules.get("matplotlib.pyplot")  # only if the caller made the figure with pyplot
    managed = getattr(fig.canvas, "manager", None) is not None
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3)
    if managed and pyplot is not None:
        pyplot.close(fig)
    return rgb


def figure_image(fig: Figure) -> Tensor:
    """``fig`` as a float image (3, H, W) in [0, 1]."""
    return torch.from_numpy(figure_to_array(fig)).permute(2, 0, 1).float() / 255.0


# -- image grids ------------------------------------------------------------------------------------
def reconstruction_grid(
    inputs: Tensor, recons: Tensor, value_range: ValueRange = (0.0, 1.0), nrow: int = 8
) -> Tensor:
    """Rows of ``nrow`` inputs (B, C, H, W), each followed by the row of their reconstructions."""
    if inputs.shape != recons.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and recons {tuple(recons.shape)} differ in shape")
    return make_grid(interleave_rows(inputs, recons, nrow), nrow=nrow, value_range=value_range)


def sample_grid(
    model: BaseVAE,
    sampler: LatentSampler | None = None,
    num_samples: int = 64,
    seed: SeedLike = 0,
    value_range: ValueRange = (0.0, 1.0),
) -> Tensor:
    """A square-ish grid of decoded draws from ``sampler`` (default: the model's prior)."""
    images = sample_images(model, sampler or NormalSampler(model), num_samples, seed)  # (n, C, H, W)
    return make_grid(images, nrow=max(1, int(math.sqrt(num_samples))), value_range=value_range)


def embed_flat(model: BaseVAE, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, torch.Size]:
    """``model.embed`` in eval mode, flattened: codes (B, M) and the embed's shape (B, D, ...).
    ``labels`` go to ``embed(images, labels=...)``, for conditional models."""
    with evaluating(model):
        codes = model.embed(images) if labels is None else model.embed(images, labels=labels)
    return codes.reshape(codes.shape[0], -1), codes.shape


def decode_flat(model: BaseVAE, flat: Tensor, shape: Sequence[int]) -> Tensor:
    """Decode flattened codes (N, M) reshaped to the embed's trailing shape, in eval mode."""
    with evaluating(model):
        return model.decode(flat.reshape(flat.shape[0], *shape[1:]))


# -- latent traversals --------------------------------------------------------------------------------
def latent_ranges(codes: Tensor, quantiles: tuple[float, float] = (0.05, 0.95)) -> tuple[Tensor, Tensor]:
    """Per-dimension sweep bounds (low (M,), high (M,)) from empirical quantiles of codes (N, M...),
    for priors other than N(0, I) or latents far from it."""
    q_low, q_high = quantiles
    if not 0.0 <= q_low < q_high <= 1.0:
        raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}")
    flat = codes.detach().float().cpu().reshape(codes.shape[0], -1)  # (N, M)
    bounds = torch.quantile(flat, torch.tensor([q_low, q_high]), dim=0)  # (2, M)
    return bounds[0], bounds[1]


def order_by_kl(kl_per_dim: Tensor | Sequence[float]) -> list[int]:
    """Latent dimensions by decreasing KL; ``kl_per_dim`` is (D,) or per example (B, D)."""
    kl = torch.as_tensor(kl_per_dim, dtype=torch.float64)
    kl = kl.mean(0) if kl.dim() == 2 else kl  # (D,)
    return torch.argsort(kl, descending=True, stable=True).tolist()


def mean_kl_per_dimension(model: BaseVAE, images: Tensor) -> Tensor:
    """``model.kl_per_dimension`` averaged over ``images`` in eval mode: (D,). Raises the model's
    NotImplementedError when the KL per dimension is not defined for it."""
    with evaluating(model):
        return model.kl_per_dimension(images).float().mean(0).cpu()


def traversal_images(
    model: BaseVAE,
    seed_image: Tensor,
    dims: Sequence[int],
    low: Tensor | float,
    high: Tensor | float,
    steps: int = 9,
    labels: Tensor | None = None,
) -> Tensor:
    """Decodes (len(dims), steps, C, H, W): row r sets latent ``dims[r]`` of the seed's embedding to
    ``steps`` values from ``low[d]`` to ``high[d]`` (absolute values), the other latents unchanged.
    ``labels``: the seed's label, for conditional models."""
    image = seed_image[None] if seed_image.dim() == 3 else seed_image[:1]  # (1, C, H, W)
    code, shape = embed_flat(model, image, labels)  # (1, M)
    width = code.shape[1]
    low = torch.as_tensor(low, dtype=code.dtype).to(code.device).flatten().expand(width)  # (M,)
    high = torch.as_tensor(high, dtype=code.dtype).to(code.device).flatten().expand(width)
    t = torch.linspace(0.0, 1.0, steps, dtype=code.dtype, device=code.device)  # (S,)
    z = code.repeat(len(dims), steps, 1)  # (R, S, M)
    for row, dim in enumerate(dims):
        z[row, :, dim] = low[dim] + t * (high[dim] - low[dim])
    images = decode_flat(model, z.reshape(len(dims) * steps, width), shape)  # (R*S, C, H, W)
    return images.reshape(len(dims), steps, *images.shape[1:])


def check_dims(order: Sequence[int] | None, width: int, max_dims: int) -> list[int]:
    """The first ``max_dims`` of ``order`` (default: 0, 1, ...), checked to lie in [0, width)."""
    dims = list(range(width)) if order is None else [int(d) for d in order]
    bad = [d for d in dims if not 0 <= d < width]
    if bad or len(set(dims)) != len(dims):
        given = dims if order is None else list(order)
        raise ValueError(f"order must list distinct latent dimensions in [0, {width}), got {given}")
    return dims[:max_dims]


def traversals(
    model: BaseVAE,
    seeds: Tensor,
    order: Sequence[int] | None = None,
    span: float = 3.0,
    steps: int = 9,
    max_dims: int = 10,
    low: Tensor | float | None = None,
    high: Tensor | float | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """Latent traversals of each seed image (S, C, H, W), decoded: (S, R, steps, C, H, W).

    For each seed: one row per latent dimension in ``order`` (e.g. ``order_by_kl``; default the
    natural order), at most ``max_dims`` rows. A row sets that latent to ``steps`` absolute values
    from -span to span, the standard sweep for an N(0, I) prior, keeping the seed's other latents.
    For other priors pass per-dimension bounds ``low`` (M,) and ``high`` (M,), e.g. from
    ``latent_ranges(codes)``; either one given replaces its end of the span.
    ``labels`` (S, ...): the seeds' labels, for conditional models.
    """
    seeds = seeds[None] if seeds.dim() == 3 else seeds  # (S, C, H, W)
    seed_labels = [None if labels is None else labels[i : i + 1] for i in range(seeds.shape[0])]
    width = embed_flat(model, seeds[:1], seed_labels[0])[0].shape[1]
    dims = check_dims(order, width, max_dims)
    low = -float(span) if low is None else low
    high = float(span) if high is None else high
    rows = [
        traversal_images(model, seed, dims, low, high, steps, label)
        for seed, label in zip(seeds, seed_labels)
    ]
    return torch.stack(rows)


def grid_of_traversals(images: Tensor, value_range: ValueRange = (0.0, 1.0)) -> Tensor:
    """:func:`traversals` (S, R, steps, C, H, W) as one picture: per seed a block of a row per
    latent, the blocks stacked with a blank strip between them."""
    blocks = [make_grid(seed.flatten(0, 1), nrow=images.shape[2], value_range=value_range) for seed in images]
    strip = torch.ones(blocks[0].shape[0], max(2, images.shape[-2] // 2), blocks[0].shape[2])
    return torch.cat([part for block in blocks for part in (block, strip)][:-1], dim=1)


def frames_of_traversals(images: Tensor, value_range: ValueRange = (0.0, 1.0)) -> Tensor:
    """:func:`traversals` (S, R, steps, C, H, W) as ``steps`` frames (steps, C, H', W'): frame t
    shows, in one row per latent and one column per seed, that latent at its t-th value."""
    by_latent = images.transpose(0, 1)  # (R, S, steps, C, H, W)
    return torch.stack(
        [
            make_grid(by_latent[:, :, t].flatten(0, 1), nrow=images.shape[0], value_range=value_range)
            for t in range(images.shape[2])
        ]
    )


def traversal_grid(
    model: BaseVAE,
    seeds: Tensor,
    order: Sequence[int] | None = None,
    span: float = 3.0,
    steps: int = 9,
    max_dims: int = 10,
    value_range: ValueRange = (0.0, 1.0),
    low: Tensor | float | None = None,
    high: Tensor | float | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """The :func:`traversals` of ``seeds`` as one picture (:func:`grid_of_traversals`)."""
    return grid_of_traversals(
        traversals(model, seeds, order, span, steps, max_dims, low, high, labels), value_range
    )


# -- interpolations -----------------------------------------------------------------------------------
def lerp(z0: Tensor, z1: Tensor, t: Tensor | float) -> Tensor:
    """(1 - t) z0 + t z1, with ``t`` broadcast against ``z0[..., :1]``."""
    return z0 + torch.as_tensor(t, dtype=z0.dtype, device=z0.device) * (z1 - z0)


def slerp(z0: Tensor, z1: Tensor, t: Tensor | float, eps: float = 1e-5) -> Tensor:
    """Spherical interpolation over the last dimension, ``t`` broadcast against ``z0[..., :1]``.

    The direction moves at constant speed along the great circle (Shoemake 1985, "Animating rotation
    with quaternion curves"; used for latents by White 2016, "Sampling Generative Networks")::

        slerp(u0, u1; t) = sin((1 - t) omega) / sin(omega) u0 + sin(t omega) / sin(omega) u1

    with u = z / |z| and cos(omega) = u0 . u1, while the norm goes linearly from |z0| to |z1|; for
    equal norms this is Shoemake's formula on z0, z1 themselves. Where the directions are nearly
    parallel or opposite (1 - |cos omega| < eps: omega is lost in float32 rounding, and opposite
    directions have no unique great circle) or a norm is 0, it falls back to lerp.
    """
    t = torch.as_tensor(t, dtype=z0.dtype, device=z0.device)
    norm0, norm1 = z0.norm(dim=-1, keepdim=True), z1.norm(dim=-1, keepdim=True)  # (..., 1)
    tiny = torch.finfo(z0.dtype).tiny
    u0, u1 = z0 / norm0.clamp_min(tiny), z1 / norm1.clamp_min(tiny)
    cos_omega = (u0 * u1).sum(-1, keepdim=True).clamp(-1.0, 1.0)  # (..., 1)
    degenerate = (1.0 - cos_omega.abs() < eps) | (norm0 <= tiny) | (norm1 <= tiny)
    # where degenerate, omega = pi/2 (any value with sin(omega) != 0 would do): no 0/0
    omega = torch.acos(torch.where(degenerate, torch.zeros_like(cos_omega), cos_omega))
    direction = (torch.sin((1 - t) * omega) * u0 + torch.sin(t * omega) * u1) / torch.sin(omega)
    spherical = ((1 - t) * norm0 + t * norm1) * direction
    return torch.where(degenerate, lerp(z0, z1, t), spherical)


INTERPOLATIONS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {"linear": lerp, "slerp": slerp}


def interpolation_images(
    model: BaseVAE,
    a: Tensor,
    b: Tensor,
    steps: int = 10,
    method: str = "linear",
    labels_a: Tensor | None = None,
    labels_b: Tensor | None = None,
) -> Tensor:
    """Decodes (P, steps, C, H, W) along the path from embed(a[p]) to embed(b[p]), endpoints included;
    ``labels_a`` / ``labels_b`` go to ``embed`` for conditional models."""
    if method not in INTERPOLATIONS:
        raise ValueError(f"method '{method}' is not one of {sorted(INTERPOLATIONS)}")
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"a and b must be image batches (P, C, H, W) of one shape, got {a.shape}, {b.shape}")
    z_a, shape = embed_flat(model, a, labels_a)  # (P, M)
    z_b = embed_flat(model, b, labels_b)[0]
    t = torch.linspace(0.0, 1.0, steps, dtype=z_a.dtype, device=z_a.device)[None, :, None]  # (1, S, 1)
    path = INTERPOLATIONS[method](z_a[:, None], z_b[:, None], t)  # (P, S, M)
    images = decode_flat(model, path.flatten(0, 1), shape)  # (P*S, C, H, W)
    return images.reshape(a.shape[0], steps, *images.shape[1:])


def interpolation_grid(
    model: BaseVAE,
    a: Tensor,
    b: Tensor,
    steps: int = 10,
    method: str = "linear",
    value_range: ValueRange = (0.0, 1.0),
    labels_a: Tensor | None = None,
    labels_b: Tensor | None = None,
) -> Tensor:
    """One row per pair (a[p], b[p]): ``steps`` decodes from a's embedding to b's."""
    images = interpolation_images(model, a, b, steps, method, labels_a, labels_b)  # (P, S, C, H, W)
    return make_grid(images.flatten(0, 1), nrow=steps, value_range=value_range)


# -- plots --------------------------------------------------------------------------------------------
PROJECTIONS = ("pca", "tsne")


def project_2d(codes: np.ndarray, method: str = "pca", random_state: int = 0) -> tuple[np.ndarray, list[str]]:
    """Codes (N, M) -> points (N, 2) and axis names. M <= 2 is shown as is (M = 1 padded with zeros);
    otherwise PCA by SVD of the centred codes, or t-SNE (scikit-learn, PCA initialisation)."""
    if method not in PROJECTIONS:
        raise ValueError(f"method '{method}' is not one of {PROJECTIONS}")
    if codes.shape[1] <= 2:
        padded = np.pad(codes, ((0, 0), (0, 2 - codes.shape[1])))
        return padded, [f"z{i}" for i in range(2)]
    if method == "tsne":
        from sklearn.manifold import TSNE  # imported on use: scikit-learn is slow to import
        from threadpoolctl import threadpool_limits

        perplexity = min(30.0, (codes.shape[0] - 1) / 3.0)
        tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=random_state)
        with threadpool_limits(limits=1, user_api="openmp"):  # spinning OpenMP threads on a busy
            points = tsne.fit_transform(codes)  # machine made it 6x slower, not faster, on 2 cores
        return points, ["t-SNE 1", "t-SNE 2"]
    centred = codes - codes.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    explained = singular**2 / max(float((singular**2).sum()), 1e-12)
    return centred @ vt[:2].T, [f"PC{i + 1} ({100 * explained[i]:.0f}%)" for i in range(2)]


def _scatter(fig: Figure, ax: Axes, points: np.ndarray, values: np.ndarray | None, name: str) -> None:
    """Points coloured by ``values``: one colour per class for <= 10 integer classes, else a colourbar."""
    style: dict[str, Any] = {"s": 6, "alpha": 0.7, "linewidths": 0}
    ax.set_title(name)
    if values is None:
        ax.scatter(points[:, 0], points[:, 1], **style)
        return
    classes = np.unique(values)
    if len(classes) <= 10 and np.allclose(classes, np.round(classes)):
        for index, value in enumerate(classes):
            chosen = values == value
            ax.scatter(points[chosen, 0], points[chosen, 1], color=f"C{index}", label=f"{value:g}", **style)
        ax.legend(fontsize="small", markerscale=2, loc="best")
    else:
        artist = ax.scatter(points[:, 0], points[:, 1], c=values, cmap="viridis", **style)
        fig.colorbar(artist, ax=ax)


def label_columns(
    labels: Tensor | np.ndarray | None, names: Sequence[str] | None, count: int
) -> tuple[np.ndarray | None, list[str]]:
    """Labels (N,) or (N, F) -> float columns (N, F) and F names (default "label" or "factor i")."""
    values = None if labels is None else np.asarray(torch.as_tensor(labels).cpu(), dtype=np.float64)
    if values is not None:
        values = values.reshape(values.shape[0], -1)  # (N, F)
        if values.shape[0] != count:
            raise ValueError(f"{values.shape[0]} labels for {count} codes")
    factors = 1 if values is None else values.shape[1]
    if names is None:
        names = ["label"] if factors == 1 else [f"factor {i}" for i in range(factors)]
    if len(names) != factors:
        raise ValueError(f"{len(names)} names for {factors} label columns")
    return values, list(names)


def embedding_figure(
    codes: Tensor,
    labels: Tensor | np.ndarray | None = None,
    names: Sequence[str] | None = None,
    method: str = "pca",
    max_points: int = 2000,
    random_state: int = 0,
) -> Tensor:
    """A 2-D map of latent means (N, M...) by PCA or t-SNE, coloured by ``labels``: (N,) or one column
    per factor (N, F) with one panel each (dSprites: shape, scale, orientation, posX, posY)."""
    flat = np.asarray(codes.detach().cpu().reshape(codes.shape[0], -1), dtype=np.float64)  # (N, M)
    if not np.isfinite(flat).all():
        raise ValueError("codes contain NaN or infinite values")
    values, names = label_columns(labels, names, flat.shape[0])  # (N, F) or None; F names
    factors = len(names)
    chosen = np.random.default_rng(random_state).permutation(flat.shape[0])[:max_points]
    points, axis_names = project_2d(flat[chosen], method, random_state)
    columns = min(factors, 3)
    fig = Figure(figsize=(4.2 * columns, 3.6 * math.ceil(factors / columns)), dpi=80, layout="constrained")
    axes = fig.subplots(math.ceil(factors / columns), columns, squeeze=False).flatten()
    for index, ax in enumerate(axes):
        if index >= factors:
            ax.set_axis_off()
            continue
        _scatter(fig, ax, points, None if values is None else values[chosen, index], names[index])
        ax.set_xlabel(axis_names[0])
        ax.set_ylabel(axis_names[1])
    return figure_image(fig)


def kl_bar_chart(kl_per_dim: Sequence[float] | Tensor, active_threshold: float | None = None) -> Tensor:
    """The mean KL (nats) of each latent dimension as bars; given ``active_threshold``, a dashed line
    there and the bars at or below it in grey (inactive dimensions)."""
    kl = torch.as_tensor(kl_per_dim, dtype=torch.float64).flatten().cpu().numpy()  # (D,)
    if kl.size == 0 or not np.isfinite(kl).all():
        raise ValueError(f"kl_per_dim must be a non-empty sequence of finite values, got {kl}")
    fig = Figure(figsize=(max(4.0, 0.3 * kl.size + 1.5), 3.0), dpi=80, layout="constrained")
    ax = fig.subplots()
    colours = ["C0" if active_threshold is None or value > active_threshold else "C7" for value in kl]
    ax.bar(np.arange(kl.size), kl, color=colours)
    if active_threshold is not None:
        label = f"threshold {active_threshold:g}"
        ax.axhline(active_threshold, color="C3", linestyle="--", linewidth=1, label=label)
        ax.legend(fontsize="small")
    if kl.size <= 40:
        ax.set_xticks(np.arange(kl.size))
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats)")
    return figure_image(fig)
