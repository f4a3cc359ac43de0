"""The poincare_disk sampler: who it applies to, the law of its draws, seeds, save/load, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from vaezoo.cli import main
from vaezoo.evaluation.samplers import (
    PoincareDiskSampler,
    SamplerNotApplicableError,
    fit_sampler,
    load_sampler,
    sample_images,
)
from vaezoo.models.poincare_vae import PoincareVAE
from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.nn.hyperbolic import distance, logmap0

REPO = Path(__file__).resolve().parents[1]


def small_pvae(**kwargs: float) -> PoincareVAE:
    torch.manual_seed(0)
    return PoincareVAE(1, 3, [8, 16], image_size=16, **kwargs)


def test_rejects_a_model_whose_latents_are_not_on_the_poincare_ball():
    with pytest.raises(
        SamplerNotApplicableError, match="needs a model whose latents live on the Poincare ball"
    ):
        fit_sampler("poincare_disk", VanillaVAE(1, 3, [8, 16], image_size=16), None)
    with pytest.raises(SamplerNotApplicableError, match="VanillaVAE's are 'euclidean'"):
        PoincareDiskSampler(VanillaVAE(1, 3, [8, 16], image_size=16))


def test_draws_have_the_wrapped_normal_priors_law():
    """Under N^W(0, sigma^2 I) on B_c^D, v = lambda_0 log_0(z) ~ N(0, sigma^2 I), so the geodesic
    distance to the origin d(0, z) = |v| has (d / sigma)^2 ~ chi^2_D, and z / |z| is isotropic."""
    c, sigma = 2.0, 0.7
    sampler = fit_sampler("poincare_disk", small_pvae(curvature=c, prior_sigma=sigma), None)
    z = sampler.sample(4000, seed=0).double()  # (N, 3)
    assert z.shape == (4000, 3) and (math.sqrt(c) * z.norm(dim=-1) < 1).all()
    radii = distance(torch.zeros_like(z), z, c) / sigma
    assert stats.kstest(radii.pow(2).numpy(), stats.chi2(3).cdf).pvalue > 1e-3
    v = 2 * logmap0(z, c) / sigma
    for column in v.T:  # each tangent coordinate a standard normal
        assert stats.kstest(column.numpy(), stats.norm.cdf).pvalue > 1e-3


def test_seeds_repeat_keep_the_global_rng_and_survive_a_save_load_round_trip(tmp_path):
    model = small_pvae()
    sampler = fit_sampler("poincare_disk", model, None)
    state = torch.random.get_rng_state()
    first = sampler.sample(8, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first, sampler.sample(8, seed=3)) and not torch.equal(first, sampler.sample(8, seed=4))
    loaded = load_sampler(sampler.save(tmp_path / "poincare.safetensors"), model)
    assert isinstance(loaded, PoincareDiskSampler) and torch.equal(loaded.sample(8, seed=3), first)
    assert sample_images(model, loaded, 8, seed=3).shape == (8, 1, 16, 16)


@pytest.mark.slow
def test_vaezoo_sample_with_the_poincare_disk_sampler(tmp_path):
    tiny = [
        "--model.hidden_dims", "[8, 16]", "--model.latent_dim", "4", "--model.gyroplane_dim", "16",
        "--data.image_size", "32", "--data.subset", "64", "--train.batch_size", "16",
        "--train.max_epochs", "1", "--train.limit_train_batches", "1", "--train.limit_val_batches", "1",
        "--logging.num_images", "0", "--logging.progress_bar", "none",
    ]  # fmt: skip
    train = [
        "train",
        "-c",
        str(REPO / "configs/pvae.yaml"),
        *tiny,
        "--logging.save_dir",
        str(tmp_path / "runs"),
    ]
    assert main(train) == 0
    (run,) = sorted((tmp_path / "runs").glob("*/version_*"))
    out = tmp_path / "poincare.png"
    assert main(["sample", str(run), "-n", "8", "-o", str(out), "--sampler", "poincare_disk"]) == 0
    assert np.asarray(Image.open(out)).std() > 0
