"""Reconstruction and latent-health metrics on cases with known answers."""

import math

import numpy as np
import pytest
import torch

from vaezoo.evaluation.latent_health import active_units, activity, codebook_metrics, kl_summary
from vaezoo.evaluation.reconstruction import (
    mse_per_image,
    psnr_per_image,
    reconstruction_metrics,
    ssim_per_image,
)


def test_identical_images_have_zero_mse_unit_ssim_and_capped_psnr():
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    values = reconstruction_metrics(images, images.clone())
    assert values["mse"] == 0.0
    assert values["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert values["psnr"] == 100.0  # the cap for a perfect reconstruction


def test_psnr_of_a_constant_offset_is_known():
    images = torch.full((2, 1, 16, 16), 0.5)
    recons = images + 0.1  # MSE = 0.01 -> PSNR = 10 log10(1 / 0.01) = 20 dB
    assert mse_per_image(images, recons) == pytest.approx(torch.full((2,), 0.01), abs=1e-7)
    assert psnr_per_image(images, recons) == pytest.approx(torch.full((2,), 20.0), abs=1e-4)
    # On [-1, 1] data the peak is 2: +6.02 dB for the same error.
    assert psnr_per_image(images, recons, data_range=2.0)[0].item() == pytest.approx(
        20 + 20 * math.log10(2), abs=1e-4
    )


def test_ssim_drops_with_noise_and_is_ordered():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 32, 32, generator=generator)
    small = (images + 0.05 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    large = (images + 0.3 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    assert (ssim_per_image(images, small) > ssim_per_image(images, large)).all()
    assert (ssim_per_image(images, large) < 0.9).all()


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"\(2, 1, 8, 8\) and \(2, 1, 8, 9\)"):
        mse_per_image(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 9))


def test_active_units_count_the_dimensions_whose_means_vary():
    rng = np.random.default_rng(0)
    means = np.zeros((1000, 6))
    means[:, 0] = rng.normal(0, 1.0, 1000)  # variance 1: active
    means[:, 1] = rng.normal(0, 0.3, 1000)  # variance 0.09: active
    means[:, 2] = rng.normal(0, 0.05, 1000)  # variance 0.0025 < 0.01: inactive
    means[:, 3] = 0.7  # a collapsed dimension with a non-zero constant mean
    result = active_units(means)
    assert result == {"active_units": 2, "latent_dims": 6, "active_fraction": pytest.approx(2 / 6)}
    assert activity(means)[0].item() == pytest.approx(1.0, rel=0.1)
    assert active_units(means, threshold=0.001)["active_units"] == 3


def test_activity_needs_two_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        activity(torch.zeros(1, 3))


def test_kl_summary_totals_over_dimensions():
    kl = torch.tensor([[1.0, 0.0, 3.0], [3.0, 0.0, 1.0]])  # mean per dim: 2, 0, 2
    assert kl_summary(kl) == {"kl": pytest.approx(4.0), "kl_max_dim_share": pytest.approx(0.5)}


def test_codebook_metrics_known_values():
    uniform = torch.arange(8).repeat(10)  # all 8 of 16 codes equally often
    values = codebook_metrics(uniform, 16)
    assert values["codebook_perplexity"] == pytest.approx(8.0, rel=1e-5)
    assert values["codebook_usage"] == pytest.approx(0.5)
    assert codebook_metrics(torch.zeros(5, 4, 4, dtype=torch.long), 16)[
        "codebook_perplexity"
    ] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="0..15"):
        codebook_metrics(torch.tensor([0, 16]), 16)


def test_active_units_of_a_model_with_known_collapsed_dimensions():
    """A VAE whose posterior means ignore the input in dimensions 3..5 (weights and bias zero,
    log-variance zero: q = N(0, 1) = p exactly) has 3 active units and zero KL there."""
    from vaezoo.models import VanillaVAE

    torch.manual_seed(0)
    model = VanillaVAE(1, 6, hidden_dims=[8, 16], image_size=16).eval()
    with torch.no_grad():
        head = model.head
        head.fc_mu.weight.mul_(20.0)  # make the live dimensions clearly vary with the input
        for layer in (head.fc_mu, head.fc_var):
            layer.weight[3:] = 0.0
            layer.bias[3:] = 0.0
        images = torch.rand(200, 1, 16, 16)
        means = model.embed(images)
        kl = model.kl_per_dimension(images)
    assert active_units(means)["active_units"] == 3
    assert torch.all(activity(means)[:3] > 0.01)
    assert torch.equal(kl[:, 3:], torch.zeros(200, 3))
    assert kl_summary(kl)["kl"] > 0
