"""Pictures: slerp/lerp known answers, traversal and interpolation decodes on linear toy models,
grid shapes, and the plots (embedding map, KL bars) as RGB images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from vaezoo.evaluation.pictures import (
    embedding_figure,
    figure_to_array,
    interpolation_grid,
    interpolation_images,
    kl_bar_chart,
    latent_ranges,
    lerp,
    mean_kl_per_dimension,
    order_by_kl,
    project_2d,
    reconstruction_grid,
    sample_grid,
    slerp,
    traversal_grid,
    traversal_images,
)
from vaezoo.images import make_grid
from vaezoo.models.base import BaseVAE


class LinearVAE(BaseVAE):
    """A Gaussian VAE with one linear encoder layer (-> mu, log_var) and one linear decoder layer.

    ``identity=True`` (needs D = C*H*W) makes embed(x) = x flattened and decode(z) = z as an image,
    so every decoded pixel shows one latent value."""

    def __init__(self, latent_dim: int = 4, shape: tuple[int, int, int] = (1, 4, 4), identity: bool = False):
        super().__init__()
        self.latent_dim, self.shape = latent_dim, tuple(shape)
        pixels = math.prod(shape)
        self.encoder = nn.Linear(pixels, 2 * latent_dim)
        self.decoder = nn.Linear(latent_dim, pixels)
        if identity:
            with torch.no_grad():
                self.encoder.weight.zero_()
                self.encoder.weight[:latent_dim].copy_(torch.eye(latent_dim, pixels))
                self.encoder.bias.zero_()
                self.decoder.weight.copy_(torch.eye(pixels, latent_dim))
                self.decoder.bias.zero_()

    def encode(self, input: Tensor) -> list[Tensor]:
        return list(self.encoder(input.flatten(1)).chunk(2, dim=1))  # mu, log_var (B, D) each

    def embed(self, x: Tensor, **kwargs: object) -> Tensor:
        return self.encode(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z).view(-1, *self.shape)

    def kl_per_dimension(self, x: Tensor) -> Tensor:
        mu, log_var = self.encode(x)
        return 0.5 * (mu**2 + log_var.exp() - 1.0 - log_var)  # (B, D)


class IdentityMap(BaseVAE):
    """A deterministic 'model' whose codes are the images themselves (B, C, H, W), like VQVAE's maps."""

    samples_from_prior = False

    def __init__(self, latent_dim: int = 1) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.scale = nn.Parameter(torch.ones(()))  # gives the model a device and a dtype

    def embed(self, x: Tensor, **kwargs: object) -> Tensor:
        return x * self.scale

    def decode(self, z: Tensor) -> Tensor:
        return z / self.scale

    def kl_per_dimension(self, x: Tensor) -> Tensor:
        raise NotImplementedError("IdentityMap has no posterior")


class LabelledIdentity(IdentityMap):
    """A conditional toy: embed(x, labels=y) = [x flattened, y] (B, P + 1), decode adds y to every pixel."""

    def embed(self, x: Tensor, labels: Tensor | None = None, **kwargs: object) -> Tensor:
        if labels is None:
            raise ValueError("LabelledIdentity needs labels=")
        return torch.cat([x.flatten(1), labels.float().view(-1, 1)], dim=1)

    def decode(self, z: Tensor) -> Tensor:
        return (z[:, :-1] + z[:, -1:]).view(z.shape[0], 1, 1, -1)


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same global RNG state, so random inputs are the same every run."""
    torch.manual_seed(0)


# -- lerp / slerp --------------------------------------------------------------------------------------
def test_slerp_endpoints_are_the_inputs():
    z0, z1 = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(slerp(z0, z1, 0.0), z0)
    torch.testing.assert_close(slerp(z0, z1, 1.0), z1)


def test_slerp_of_orthogonal_unit_vectors_at_half_is_the_unit_vector_at_45_degrees():
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    mid = slerp(e1, e2, 0.5)
    torch.testing.assert_close(mid, torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2.0))
    assert mid.norm().item() == pytest.approx(1.0)
    # a third of the way: 30 degrees from e1 (lerp would give ~18 degrees)
    third = slerp(e1, e2, 1.0 / 3.0)
    assert math.degrees(math.atan2(third[1], third[0])) == pytest.approx(30.0, abs=1e-4)


def test_slerp_moves_at_constant_angle_and_interpolates_the_norm_linearly():
    z0, z1 = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 4.0])
    t = torch.linspace(0, 1, 7)[:, None]  # (7, 1)
    path = slerp(z0, z1, t)  # (7, 2)
    torch.testing.assert_close(path.norm(dim=1), 2.0 + 2.0 * t[:, 0])
    angles = torch.atan2(path[:, 1], path[:, 0])
    torch.testing.assert_close(angles, t[:, 0] * math.pi / 2)


def test_slerp_falls_back_to_lerp_for_parallel_opposite_or_zero_vectors():
    z0 = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    z1 = torch.tensor([[2.0, 4.0, 6.0], [-1.0, -2.0, -3.0], [1.0, 1.0, 1.0]])
    result = slerp(z0, z1, 0.25)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result, lerp(z0, z1, 0.25))


def test_slerp_broadcasts_pairs_against_steps():
    z0, z1 = torch.randn(3, 1, 6), torch.randn(3, 1, 6)
    t = torch.linspace(0, 1, 5)[None, :, None]  # (1, 5, 1)
    path = slerp(z0, z1, t)
    assert path.shape == (3, 5, 6)
    torch.testing.assert_close(path[:, 0], z0[:, 0])
    torch.testing.assert_close(path[:, -1], z1[:, 0])


def test_lerp_known_values():
    z0, z1 = torch.tensor([0.0, 2.0]), torch.tensor([4.0, -2.0])
    torch.testing.assert_close(lerp(z0, z1, 0.25), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(lerp(z0, z1, torch.tensor([[0.0], [1.0]])), torch.stack([z0, z1]))


# -- traversals ----------------------------------------------------------------------------------------
def test_traversal_sweeps_only_the_chosen_dimension():
    model = LinearVAE(latent_dim=6, shape=(1, 1, 6), identity=True)  # decoded pixel d = latent d
    seed = torch.arange(6.0).view(1, 1, 6) / 10.0
    rows = traversal_images(model, seed, dims=[4, 1], low=-2.0, high=2.0, steps=5)
    assert rows.shape == (2, 5, 1, 1, 6)
    values = torch.linspace(-2.0, 2.0, 5)
    for row, dim in enumerate([4, 1]):
        pixels = rows[row, :, 0, 0]  # (steps, 6)
        torch.testing.assert_close(pixels[:, dim], values)
        others = [d for d in range(6) if d != dim]
        torch.testing.assert_close(pixels[:, others], seed[0, 0, others].expand(5, -1))


def test_traversal_uses_per_dimension_ranges():
    model = LinearVAE(latent_dim=3, shape=(1, 1, 3), identity=True)
    low, high = torch.tensor([0.0, -1.0, 10.0]), torch.tensor([1.0, 1.0, 20.0])
    rows = traversal_images(model, torch.zeros(1, 1, 3), dims=[2, 0], low=low, high=high, steps=3)
    torch.testing.assert_close(rows[0, :, 0, 0, 2], torch.tensor([10.0, 15.0, 20.0]))
    torch.testing.assert_close(rows[1, :, 0, 0, 0], torch.tensor([0.0, 0.5, 1.0]))
    grid = traversal_grid(model, torch.zeros(1, 1, 3), steps=3, low=low, high=high, value_range=(-1.0, 20.0))
    every_dim = traversal_images(model, torch.zeros(1, 1, 3), [0, 1, 2], low, high, steps=3)
    torch.testing.assert_close(grid, make_grid(every_dim.flatten(0, 1), nrow=3, value_range=(-1.0, 20.0)))


def test_latent_ranges_are_empirical_quantiles():
    codes = torch.stack([torch.arange(101.0), -torch.arange(101.0)], dim=1)  # (101, 2)
    low, high = latent_ranges(codes, quantiles=(0.05, 0.95))
    torch.testing.assert_close(low, torch.tensor([5.0, -95.0]))
    torch.testing.assert_close(high, torch.tensor([95.0, -5.0]))
    with pytest.raises(ValueError, match="quantiles"):
        latent_ranges(codes, quantiles=(0.9, 0.1))


def test_traversal_grid_layout_respects_order_and_max_dims():
    torch.manual_seed(0)
    model = LinearVAE(latent_dim=6, shape=(1, 4, 4))
    seeds = torch.rand(2, 1, 4, 4)
    grid = traversal_grid(model, seeds, order=[5, 3, 1], steps=4, max_dims=2)
    block_height, width = 2 * (4 + 2) + 2, 4 * (4 + 2) + 2  # 2 rows, 4 columns, padding 2
    assert grid.shape == (1, 2 * block_height + 2, width)  # two seeds and a blank strip of 2
    assert 0.0 <= grid.min() and grid.max() <= 1.0
    full = traversal_grid(model, seeds[:1], steps=3, max_dims=10)  # default order: all 6 dims
    assert full.shape == (1, 6 * (4 + 2) + 2, 3 * (4 + 2) + 2)
    with pytest.raises(ValueError, match="distinct latent dimensions"):
        traversal_grid(model, seeds, order=[0, 6])
    with pytest.raises(ValueError, match="distinct latent dimensions"):
        traversal_grid(model, seeds, order=[1, 1])


def test_order_by_kl_and_mean_kl_per_dimension():
    assert order_by_kl([0.1, 2.0, 0.5]) == [1, 2, 0]
    assert order_by_kl(torch.tensor([[0.0, 1.0], [4.0, 1.0]])) == [0, 1]  # means 2.0, 1.0
    torch.manual_seed(0)
    model, images = LinearVAE(latent_dim=3), torch.rand(8, 1, 4, 4)
    expected = model.kl_per_dimension(images).mean(0).detach()
    torch.testing.assert_close(mean_kl_per_dimension(model, images), expected)
    with pytest.raises(NotImplementedError, match="no posterior"):
        mean_kl_per_dimension(IdentityMap(), images)


# -- interpolations ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolation_endpoints_decode_the_embeddings(method):
    torch.manual_seed(0)
    model = LinearVAE(latent_dim=5, shape=(1, 4, 4))
    a, b = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    images = interpolation_images(model, a, b, steps=5, method=method)
    assert images.shape == (3, 5, 1, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(images[:, 0], model.decode(model.embed(a)))
        torch.testing.assert_close(images[:, -1], model.decode(model.embed(b)))
    grid = interpolation_grid(model, a, b, steps=5, method=method, value_range=(-1.0, 1.0))
    assert grid.shape == (1, 3 * (4 + 2) + 2, 5 * (4 + 2) + 2)


def test_linear_interpolation_of_spatial_codes_through_an_affine_decoder_is_affine():
    a, b = torch.rand(2, 3, 2, 2), torch.rand(2, 3, 2, 2)  # codes (B, C, h, w), as VQVAE's maps
    images = interpolation_images(IdentityMap(), a, b, steps=5, method="linear")
    assert images.shape == (2, 5, 3, 2, 2)
    torch.testing.assert_close(images[:, 2], (a + b) / 2)
    with pytest.raises(ValueError, match="method 'cubic'"):
        interpolation_images(IdentityMap(), a, b, method="cubic")
    with pytest.raises(ValueError, match="one shape"):
        interpolation_images(IdentityMap(), a, b[:1])


def test_conditional_models_get_their_labels():
    model = LabelledIdentity()
    x = torch.zeros(2, 1, 1, 3)
    rows = traversal_images(model, x[0], dims=[0], low=-1.0, high=1.0, steps=3, labels=torch.tensor([5]))
    torch.testing.assert_close(rows[0, :, 0, 0], torch.tensor([[4.0, 5, 5], [5, 5, 5], [6, 5, 5]]))
    grid = traversal_grid(model, x, steps=3, max_dims=2, labels=torch.tensor([0, 1]), value_range=(0, 10))
    assert grid.shape == (1, 2 * (2 * 3 + 2) + 2, 3 * (3 + 2) + 2)
    labels_a, labels_b = torch.tensor([0, 2]), torch.tensor([4, 2])
    images = interpolation_images(model, x, x, steps=3, labels_a=labels_a, labels_b=labels_b)
    torch.testing.assert_close(images[:, :, 0, 0, 0], torch.tensor([[0.0, 2.0, 4.0], [2.0, 2.0, 2.0]]))
    with pytest.raises(ValueError, match="needs labels"):
        interpolation_images(model, x, x)


# -- image grids ---------------------------------------------------------------------------------------
def test_reconstruction_grid_alternates_input_and_reconstruction_rows():
    inputs, recons = torch.zeros(4, 1, 2, 2), torch.ones(4, 1, 2, 2)
    grid = reconstruction_grid(inputs, recons, nrow=2)
    assert grid.shape == (1, 4 * (2 + 2) + 2, 2 * (2 + 2) + 2)
    row_values = [grid[0, 2 + r * 4, 2].item() for r in range(4)]  # a pixel of each row's first image
    assert row_values == [0.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="differ in shape"):
        reconstruction_grid(inputs, recons[:3])


def test_sample_grid_from_the_prior_is_square_and_seeded():
    torch.manual_seed(0)
    model = LinearVAE(latent_dim=4, shape=(1, 4, 4))
    grid = sample_grid(model, num_samples=16, seed=3, value_range=(-2.0, 2.0))
    assert grid.shape == (1, 4 * 6 + 2, 4 * 6 + 2)
    torch.testing.assert_close(grid, sample_grid(model, num_samples=16, seed=3, value_range=(-2.0, 2.0)))
    assert not torch.equal(grid, sample_grid(model, num_samples=16, seed=4, value_range=(-2.0, 2.0)))


# -- plots ---------------------------------------------------------------------------------------------
def test_figure_to_array_renders_rgb_and_closes_pyplot_figures():
    fig = Figure(figsize=(2.0, 1.5), dpi=50)
    fig.subplots().plot([0, 1], [0, 1])
    array = figure_to_array(fig)
    assert array.shape == (75, 100, 3) and array.dtype == np.uint8
    assert array.min() < 128 < array.max()  # a line on a white background
    import matplotlib.pyplot as plt

    managed = plt.figure(figsize=(1, 1), dpi=40)
    assert figure_to_array(managed).shape == (40, 40, 3)
    assert not plt.fignum_exists(managed.number)


def test_pca_projection_finds_the_direction_of_a_line():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=5)
    codes = np.outer(rng.normal(size=300), direction) + 3.0  # a line through (3, ..., 3)
    points, axis_names = project_2d(codes, "pca")
    assert axis_names[0] == "PC1 (100%)"
    distances = np.linalg.norm(codes - codes.mean(0), axis=1)  # along the line, from its centre
    np.testing.assert_allclose(np.abs(points[:, 0]), distances, rtol=1e-6)
    np.testing.assert_allclose(points[:, 1], 0.0, atol=1e-8)


def _is_picture(image: Tensor) -> bool:
    return image.dim() == 3 and image.shape[0] == 3 and 0.0 <= image.min() and image.max() <= 1.0


@pytest.mark.parametrize("dims", [1, 2, 5])
def test_embedding_figure_pca_for_any_latent_size(dims):
    codes = torch.randn(120, dims)
    image = embedding_figure(codes, labels=torch.randint(3, (120,)), method="pca")
    assert _is_picture(image) and image.std() > 0.05


def test_embedding_figure_tsne_with_continuous_labels():
    codes = torch.randn(60, 4)
    image = embedding_figure(codes, labels=torch.rand(60), method="tsne")
    assert _is_picture(image) and image.std() > 0.05


def test_embedding_figure_makes_one_panel_per_factor():
    codes, factors = torch.randn(100, 6), torch.randint(5, (100, 5))
    factors[:, 2] = torch.randint(40, (100,))  # many classes -> a colour bar
    names = ["shape", "scale", "orientation", "posX", "posY"]
    one = embedding_figure(codes, labels=factors[:, 0], names=["shape"])
    five = embedding_figure(codes, labels=factors, names=names, max_points=50)
    assert _is_picture(five)
    assert five.shape[1] > one.shape[1] and five.shape[2] > one.shape[2]  # 2 rows of 3 panels vs 1 panel
    unlabelled = embedding_figure(codes)
    assert unlabelled.shape == one.shape


def test_embedding_figure_rejects_bad_input():
    codes = torch.randn(10, 3)
    with pytest.raises(ValueError, match="9 labels for 10 codes"):
        embedding_figure(codes, labels=torch.zeros(9))
    with pytest.raises(ValueError, match="1 names for 2 label columns"):
        embedding_figure(codes, labels=torch.zeros(10, 2), names=["a"])
    with pytest.raises(ValueError, match="method 'umap'"):
        embedding_figure(codes, method="umap")
    with pytest.raises(ValueError, match="NaN"):
        embedding_figure(torch.full((10, 3), float("nan")))


def _has_colour(image: Tensor, rgb: tuple[int, int, int]) -> bool:
    """At least 50 pixels of colour ``rgb`` (a bar or a line, not antialiased text)."""
    target = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255.0
    return int(((image - target).abs().amax(dim=0) < 0.02).sum()) >= 50


def test_kl_bar_chart_draws_bars_and_the_threshold_line():
    blue, grey, red = (31, 119, 180), (127, 127, 127), (214, 39, 40)  # matplotlib C0, C7, C3
    plain = kl_bar_chart([2.0, 0.5, 0.0, 1.0])
    assert _is_picture(plain)
    assert _has_colour(plain, blue) and not _has_colour(plain, red) and not _has_colour(plain, grey)
    marked = kl_bar_chart(torch.tensor([2.0, 0.5, 0.05, 1.0]), active_threshold=0.1)
    assert _has_colour(marked, red) and _has_colour(marked, grey)
    assert kl_bar_chart([1.0] * 30).shape[2] > plain.shape[2]  # wider for more dimensions
    with pytest.raises(ValueError, match="finite"):
        kl_bar_chart([1.0, float("nan")])


def test_a_traversal_animation_has_a_frame_per_step_and_plays_as_a_gif(tmp_path):
    from PIL import Image

    from vaezoo.evaluation.pictures import frames_of_traversals, traversals
    from vaezoo.images import save_gif

    torch.manual_seed(0)
    from vaezoo.models import VanillaVAE

    model = VanillaVAE(in_channels=1, latent_dim=3, hidden_dims=[4, 8], image_size=16).eval()
    seeds = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        frames = frames_of_traversals(traversals(model, seeds, order=[2, 0], steps=5))
    # 2 latent rows x 2 seed columns of 16-px images (2-px padding), one frame per traversal step
    assert frames.shape == (5, 1, 2 + 2 * 18, 2 + 2 * 18)
    assert not torch.equal(frames[0], frames[-1])  # the latent moves
    gif = Image.open(save_gif(frames, tmp_path / "traversal.gif"))
    assert gif.n_frames == 8 and gif.info["loop"] == 0  # forwards (5) and back (3), looping
