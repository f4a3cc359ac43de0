"""Known-answer tests for the distance and reconstruction terms (MMD, sliced Wasserstein, SSIM /
MS-SSIM, log-cosh, Gamma KL and sampler) and what is special in the models built on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaezoo.losses.mmd import imq_kernel, kernel_scale, mmd, rbf_kernel
from vaezoo.losses.robust import log_cosh, log_cosh_error
from vaezoo.losses.sliced_wasserstein import random_directions, sliced_wasserstein
from vaezoo.losses.ssim import gaussian_window, ms_ssim, num_scales, ssim
from vaezoo.models.gamma_vae import gamma_kl, gamma_rsample
from vaezoo.registry import create_model, get_model_class

SMALL = {"hidden_dims": [8, 16], "image_size": 16}  # a 16 px, two-layer stack: fast model tests


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_images(n: int, channels: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Blurry random images in [0, 1] (structure at several scales, unlike white noise)."""
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=generator(seed))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


# -- MMD ------------------------------------------------------------------------------------------
def brute_force_mmd(x: np.ndarray, y: np.ndarray, kernel, scale: float) -> float:
    """The unbiased MMD^2 written out with loops over sample pairs (Gretton et al. 2012, Lemma 6)."""
    n, m = len(x), len(y)
    k = lambda a, b: kernel(torch.tensor(((a - b) ** 2).sum(), dtype=torch.float64), scale).item()  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize(("name", "kernel"), [("rbf", rbf_kernel), ("imq", imq_kernel)])
def test_mmd_matches_the_pairwise_sum(name, kernel):
    x = torch.randn(7, 3, generator=generator(1), dtype=torch.float64)
    y = torch.randn(5, 3, generator=generator(2), dtype=torch.float64) + 0.5
    expected = brute_force_mmd(x.numpy(), y.numpy(), kernel, kernel_scale(3, 2.0))
    assert mmd(x, y, name, latent_var=2.0).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd_of_identical_samples_is_near_zero_and_of_different_ones_positive(kernel):
    x = torch.randn(256, 4, generator=generator(3))
    # Same set on both sides: the unbiased estimate is -2 (1 - mean off-diagonal k) / N, O(1/N).
    assert abs(mmd(x, x, kernel).item()) < 2.0 / 256
    assert mmd(x, x + 3.0, kernel).item() > 0.3


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_mmd_is_unbiased_over_many_draws_of_one_distribution(kernel):
    rng = generator(4)
    draws = torch.tensor(
        [
            mmd(torch.randn(16, 4, generator=rng), torch.randn(16, 4, generator=rng), kernel).item()
            for _ in range(400)
        ]
    )
    standard_error = draws.std().item() / math.sqrt(len(draws))
    assert abs(draws.mean().item()) < 3 * standard_error
    # The biased V-statistic (diagonals kept) would sit clearly above 0: 2 (1 - E k) / N per set.
    assert draws.min().item() < 0 < draws.max().item()


def test_rbf_and_imq_share_one_scale():
    scale = kernel_scale(latent_dim=10, latent_var=1.0)
    assert scale == 20.0
    at_zero, at_scale = torch.tensor(0.0), torch.tensor(scale)
    assert rbf_kernel(at_zero, scale).item() == imq_kernel(at_zero, scale).item() == 1.0
    assert rbf_kernel(at_scale, scale).item() == pytest.approx(math.exp(-1))
    assert imq_kernel(at_scale, scale).item() == pytest.approx(0.5)
    x = torch.randn(64, 10, generator=generator(5))
    y = torch.randn(64, 10, generator=generator(6)) + 1.0
    ratio = mmd(x, y, "rbf").item() / mmd(x, y, "imq").item()
    assert 0.5 < ratio < 2.0  # PyTorch-VAE's two kernels differed by a factor of ~B^2


def test_mmd_has_finite_gradients_for_coincident_points():
    z = torch.zeros(4, 3, requires_grad=True)
    mmd(z, torch.randn(4, 3, generator=generator(7)), "rbf").backward()
    assert torch.isfinite(z.grad).all()


# -- sliced Wasserstein --------------------------------------------------------------------------
def test_sliced_wasserstein_of_identical_sets_is_zero():
    x = torch.randn(32, 5, generator=generator(8))
    shuffled = x[torch.randperm(32, generator=generator(9))]
    assert sliced_wasserstein(x, shuffled, num_projections=20).item() == 0.0


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("shift", [0.7, -0.7])
def test_sliced_wasserstein_of_a_shifted_1d_set_is_the_shift_to_the_p(p, shift):
    x = torch.randn(50, 1, generator=generator(10), dtype=torch.float64)
    value = sliced_wasserstein(x, x + shift, num_projections=7, p=p).item()
    assert value == pytest.approx(abs(shift) ** p, rel=1e-12)  # |.| before the power: odd p too


def test_sliced_wasserstein_compares_sorted_projections():
    x = torch.randn(20, 2, generator=generator(11), dtype=torch.float64)
    y = 2 * torch.randn(20, 2, generator=generator(12), dtype=torch.float64)
    direction = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    expected = np.mean(np.abs(np.sort(x[:, 0].numpy()) - np.sort(y[:, 0].numpy())) ** 1.5)
    assert sliced_wasserstein(x, y, p=1.5, directions=direction).item() == pytest.approx(expected)


@pytest.mark.parametrize("distribution", ["normal", "cauchy"])
def test_projection_directions_are_unit_vectors(distribution):
    directions = random_directions(100, 6, distribution)
    assert directions.shape == (100, 6)
    torch.testing.assert_close(directions.norm(dim=1), torch.ones(100))


# -- SSIM / MS-SSIM ------------------------------------------------------------------------------
def test_gaussian_window_sums_to_one_and_peaks_at_the_centre():
    window = gaussian_window(11, 1.5, torch.float64)
    assert window.sum().item() == pytest.approx(1.0)
    assert window.argmax().item() == 5
    torch.testing.assert_close(window, window.flip(0))
    x = np.arange(11) - 5.0
    expected = np.exp(-(x**2) / (2 * 1.5**2))
    np.testing.assert_allclose(window.numpy(), expected / expected.sum())


def brute_force_ssim(x: np.ndarray, y: np.ndarray, window: np.ndarray, data_range: float) -> float:
    """Mean SSIM of two single-channel images, every window position written out (Wang et al. 2004)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    w2 = np.outer(window, window)
    k = len(window)
    values = []
    for i in range(x.shape[0] - k + 1):
        for j in range(x.shape[1] - k + 1):
            a, b = x[i : i + k, j : j + k], y[i : i + k, j : j + k]
            mu_a, mu_b = (w2 * a).sum(), (w2 * b).sum()
            var_a, var_b = (w2 * (a - mu_a) ** 2).sum(), (w2 * (b - mu_b) ** 2).sum()
            cov = (w2 * (a - mu_a) * (b - mu_b)).sum()
            values.append(
                (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
            )
    return float(np.mean(values))


def test_ssim_matches_the_windowed_statistics():
    x = torch.rand(1, 1, 12, 12, generator=generator(13), dtype=torch.float64)
    y = (x + 0.2 * torch.rand(1, 1, 12, 12, generator=generator(14), dtype=torch.float64)).clamp(0, 1)
    expected = brute_force_ssim(
        x[0, 0].numpy(), y[0, 0].numpy(), gaussian_window(5, 1.5, torch.float64).numpy(), 1.0
    )
    assert ssim(x, y, window_size=5).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("size", [32, 64])
def test_ssim_and_ms_ssim_of_an_image_with_itself_are_one_and_drop_with_noise(size):
    x = smooth_images(3, channels=3, size=size)
    torch.testing.assert_close(ssim(x, x), torch.ones(3))
    torch.testing.assert_close(ms_ssim(x, x), torch.ones(3))
    noise = torch.randn(x.shape, generator=generator(15))
    scores = [ms_ssim(x, (x + level * noise).clamp(0, 1)).mean().item() for level in (0.05, 0.2, 0.5)]
    assert 1.0 > scores[0] > scores[1] > scores[2] >= 0.0
    assert ssim(x, (x + 0.2 * noise).clamp(0, 1)).mean().item() < 0.9


def test_ms_ssim_of_anti_correlated_images_has_no_nan():
    x = smooth_images(2, size=32).requires_grad_(True)
    value = ms_ssim(x, 1.0 - x.detach())
    assert torch.isfinite(value).all() and (value >= 0).all() and (value < 0.1).all()
    value.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_shifted_ms_ssim_keeps_a_gradient_where_the_clamped_one_has_none():
    x = smooth_images(2, size=32)
    y = (1.0 - x).requires_grad_(True)  # anti-correlated at every scale: clamped MS-SSIM is exactly 0
    clamped = ms_ssim(y, x, form="clamped")
    assert torch.equal(clamped, torch.zeros(2))
    assert torch.autograd.grad(clamped.sum(), y)[0].abs().sum() == 0  # a loss 1 - MS-SSIM learns nothing
    shifted = ms_ssim(y, x, form="shifted")
    assert (shifted > 0).all() and (shifted < 0.5).all()
    assert (torch.autograd.grad(shifted.sum(), y)[0].flatten(1).abs().sum(1) > 0).all()
    torch.testing.assert_close(ms_ssim(x, x, form="shifted"), torch.ones(2))
    near, far = (ms_ssim(x, (x + level * x.flip(-1)) / (1 + level), form="shifted") for level in (0.1, 1.0))
    assert (near > far).all()  # still ranks a closer image higher
    with pytest.raises(ValueError, match="form 'relu'"):
        ms_ssim(x, x, form="relu")


def test_ms_ssim_uses_the_scales_the_image_allows():
    assert [num_scales(s) for s in (8, 16, 32, 64, 256)] == [2, 3, 4, 5, 5]
    x = smooth_images(2, size=16)
    assert torch.isfinite(ms_ssim(x, x.flip(-1))).all()


# -- log-cosh ------------------------------------------------------------------------------------
def test_log_cosh_is_stable_for_large_inputs():
    t = torch.tensor([-10.0, 10.0])
    value = log_cosh(t, alpha=100.0)
    assert torch.isfinite(value).all()
    torch.testing.assert_close(value, t.abs() - math.log(2) / 100.0)
    t.requires_grad_(True)
    log_cosh(t, alpha=100.0).sum().backward()
    torch.testing.assert_close(t.grad, torch.tensor([-1.0, 1.0]))  # d/dt = tanh(alpha t)


def test_log_cosh_is_quadratic_for_small_inputs_and_matches_the_definition():
    t = torch.tensor([1e-3, -2e-3])
    torch.testing.assert_close(log_cosh(t, alpha=10.0), 10.0 * t**2 / 2, rtol=1e-3, atol=0)
    moderate = torch.linspace(-2, 2, 41, dtype=torch.float64)
    torch.testing.assert_close(log_cosh(moderate, 3.0), torch.log(torch.cosh(3.0 * moderate)) / 3.0)


def test_log_cosh_error_reduces_per_example():
    recons, target = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    per_pixel = math.log(math.cosh(10.0)) / 10.0
    torch.testing.assert_close(log_cosh_error(recons, target, 10.0, "mean"), torch.full((2,), per_pixel))
    torch.testing.assert_close(log_cosh_error(recons, target, 10.0, "sum"), torch.full((2,), 16 * per_pixel))


# -- Gamma ---------------------------------------------------------------------------------------
def test_gamma_kl_matches_torch_distributions():
    concentration = torch.tensor([[0.3, 1.0, 4.0], [2.0, 0.01, 7.5]], dtype=torch.float64)
    rate = torch.tensor([[0.5, 1.0, 3.0], [0.2, 1.5, 9.0]], dtype=torch.float64)
    Gamma = torch.distributions.Gamma
    expected = torch.distributions.kl_divergence(Gamma(concentration, rate), Gamma(2.0, 1.0)).sum(-1)
    torch.testing.assert_close(gamma_kl(concentration, rate, 2.0, 1.0), expected)
    assert gamma_kl(torch.full((1, 3), 2.0), torch.ones(1, 3), 2.0, 1.0).item() == pytest.approx(
        0.0, abs=1e-6
    )


@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 2.0), (3.0, 0.5)])
def test_shape_augmented_samples_have_the_gamma_moments_and_mean_gradient(alpha, beta):
    torch.manual_seed(16)
    concentration = torch.full((40_000, 1), alpha, dtype=torch.float64, requires_grad=True)
    z = gamma_rsample(concentration, torch.full((40_000, 1), beta, dtype=torch.float64), boosts=8)
    assert (z > 0).all()
    assert z.mean().item() == pytest.approx(alpha / beta, rel=0.03)
    assert z.var().item() == pytest.approx(alpha / beta**2, rel=0.06)
    z.mean().backward()  # d E[z] / d alpha = 1 / beta, summed over the samples' own alphas
    assert concentration.grad.sum().item() == pytest.approx(1.0 / beta, rel=0.05)


# -- the models ----------------------------------------------------------------------------------
def batch(n: int = 6) -> torch.Tensor:
    return smooth_images(n, size=16, seed=17)


def test_mmdvae_alias_and_infovae_loss_is_the_weighted_sum_of_its_terms():
    assert get_model_class("MMDVAE").__name__ == "InfoVAE"
    torch.manual_seed(0)
    model = create_model("MMDVAE", 1, 4, alpha=-0.5, reg_weight=10.0, kernel_type="rbf", **SMALL)
    losses = model.loss_function(*model(batch()), M_N=0.3)
    expected = losses["Reconstruction_Loss"] + 1.5 * 0.3 * losses["KLD"] + 8.5 * losses["MMD"]
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        create_model("InfoVAE", 1, 4, alpha=2.0, **SMALL)


@pytest.mark.parametrize(
    ("name", "extra", "key"), [("WAE_MMD", {"kernel_type": "imq"}, "MMD"), ("SWAE", {}, "SWD")]
)
def test_latent_matching_autoencoders_are_deterministic_and_ignore_the_kl_weight(name, extra, key):
    torch.manual_seed(0)
    model = create_model(name, 1, 4, reg_weight=7.0, latent_var=4.0, **extra, **SMALL).eval()
    x = batch()
    first, second = model(x), model(x)
    torch.testing.assert_close(first.z, second.z)  # no sampling noise in the encoder
    torch.manual_seed(1)
    losses = model.loss_function(*first, M_N=0.0)
    torch.manual_seed(1)
    assert model.loss_function(*first, M_N=123.0)["loss"].item() == losses["loss"].item()
    assert losses["loss"].item() == pytest.approx(
        (losses["Reconstruction_Loss"] + 7.0 * losses[key]).item(), rel=1e-5
    )
    prior = model.sample_prior(20_000, torch.device("cpu"))
    assert prior.var().item() == pytest.approx(4.0, rel=0.05)  # p(z) = N(0, latent_var I)


def test_logcosh_vae_reconstruction_is_finite_for_a_large_alpha():
    model = create_model("LogCoshVAE", 1, 4, alpha=100.0, recon_reduction="sum", **SMALL)
    x = batch(2)
    recon = model.reconstruction_loss(1.0 - x, x)
    torch.testing.assert_close(recon, log_cosh((1.0 - x) - x, 100.0).flatten(1).sum(1))
    assert torch.isfinite(recon).all()


def test_mssim_vae_data_range_and_reduction():
    x = batch(2)
    assert create_model("MSSIMVAE", 1, 4, **SMALL).data_range == 1.0
    assert create_model("MSSIMVAE", 1, 4, output_activation="tanh", **SMALL).data_range == 2.0
    with pytest.raises(ValueError, match="data_range"):
        create_model("MSSIMVAE", 1, 4, output_activation="none", **SMALL)
    mean_model = create_model("MSSIMVAE", 1, 4, **SMALL)
    sum_model = create_model("MSSIMVAE", 1, 4, recon_reduction="sum", **SMALL)
    torch.testing.assert_close(mean_model.reconstruction_loss(x, x), torch.zeros(2), atol=1e-6, rtol=0)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=generator(18))).clamp(0, 1)
    torch.testing.assert_close(
        sum_model.reconstruction_loss(noisy, x), 256 * mean_model.reconstruction_loss(noisy, x)
    )


def test_gamma_vae_stays_finite_under_aggressive_training():
    torch.manual_seed(0)
    model = create_model("GammaVAE", 1, 4, recon_reduction="sum", **SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = batch(8)
    for _ in range(30):
        output = model(x)
        assert (output.concentration >= 1e-3).all() and (output.rate >= 1e-3).all()
        losses = model.loss_function(*output, M_N=1.0)
        optimizer.zero_grad()
        losses["loss"].backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        assert all(torch.isfinite(v) for v in losses.values()), losses
    samples = model.sample(4, "cpu")
    assert samples.shape == (4, 1, 16, 16) and torch.isfinite(samples).all()


def test_mssim_vae_trains_on_the_shifted_form_so_every_image_has_a_gradient():
    from vaezoo.models.mssim_vae import MSSIMVAE

    model = MSSIMVAE(1, 4, hidden_dims=[8, 16], image_size=32)
    x = smooth_images(2, size=32)
    recons = (1.0 - x).requires_grad_(True)  # anti-correlated with its target at every scale
    (grad,) = torch.autograd.grad(model.reconstruction_loss(recons, x).sum(), recons)
    assert model.ssim_form == "shifted" and (grad.flatten(1).abs().sum(1) > 0).all()
