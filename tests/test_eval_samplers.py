"""Ex-post samplers: GMM and two-stage fits on known distributions, seeds, save/load, bad input."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from test_eval_pictures import IdentityMap, LabelledIdentity, LinearVAE

from vaezoo.evaluation.samplers import (
    SAMPLERS,
    GaussianMixtureSampler,
    NormalSampler,
    SamplerNotFittedError,
    TwoStageSampler,
    embed_batches,
    fit_sampler,
    load_sampler,
    sample_images,
)


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same global RNG state, so random inputs are the same every run."""
    torch.manual_seed(0)


def two_blobs(count: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws from 0.3 N((-3, 0), diag(0.5, 0.2)) + 0.7 N((3, 1), [[1, .6], [.6, 1]]) and the means."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.tensor([[-3.0, 0.0], [3.0, 1.0]])
    first, second = torch.diag(torch.tensor([0.5, 0.2]).sqrt()), torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    factors = torch.stack([first, second])  # Cholesky factors of the two covariances
    component = (torch.rand(count, generator=generator) < 0.7).long()  # (N,)
    eps = torch.randn(count, 2, generator=generator)
    return means[component] + torch.einsum("nij,nj->ni", factors[component], eps), means


def test_gmm_recovers_the_means_of_a_known_mixture_and_samples_its_moments():
    data, means = two_blobs()
    sampler = GaussianMixtureSampler(num_components=2).fit(data)
    fitted = sampler.means[sampler.means[:, 0].argsort()].float()
    torch.testing.assert_close(fitted, means, atol=0.1, rtol=0.0)
    weights = sampler.weights.sort().values.float()
    torch.testing.assert_close(weights, torch.tensor([0.3, 0.7]), atol=0.03, rtol=0.0)
    samples = sampler.sample(20000, seed=1)
    assert samples.shape == (20000, 2) and samples.dtype == torch.float32
    torch.testing.assert_close(samples.mean(0), data.mean(0), atol=0.08, rtol=0.0)
    torch.testing.assert_close(samples.T.cov(), data.T.cov(), atol=0.2, rtol=0.05)


@pytest.mark.parametrize("covariance_type", ["tied", "diag", "spherical"])
def test_gmm_covariance_types_sample_the_codes_shape(covariance_type):
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(400, 2, 2, 2, generator=generator) * 2.0 + 1.0  # codes (N, D, h, w), as VQVAE's
    sampler = GaussianMixtureSampler(num_components=3, covariance_type=covariance_type).fit(data)
    samples = sampler.sample(4000, seed=0)
    assert samples.shape == (4000, 2, 2, 2)
    torch.testing.assert_close(samples.mean(0), data.mean(0), atol=0.15, rtol=0.0)
    torch.testing.assert_close(samples.std(0), data.std(0), atol=0.15, rtol=0.0)


def test_two_stage_sampler_learns_a_shifted_scaled_gaussian_better_than_the_prior():
    generator = torch.Generator().manual_seed(0)
    shift, scale = torch.tensor([1.0, -2.0, 3.0, 0.0]), torch.tensor([0.5, 1.0, 2.0, 3.0])
    data = torch.randn(3000, 4, generator=generator) * scale + shift
    state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    sampler = TwoStageSampler(width=64, steps=600, batch_size=128).fit(data)
    assert torch.equal(torch.random.get_rng_state(), state)  # training ran in a forked RNG
    assert torch.get_num_threads() == threads
    losses = torch.tensor(sampler.losses)
    assert losses[-50:].mean() < losses[:50].mean()
    samples = sampler.sample(5000, seed=1)  # (5000, 4)

    def moment_error(x: torch.Tensor) -> float:
        return float((x.mean(0) - shift).abs().max() + (x.std(0) / scale).log().abs().max())

    assert moment_error(samples) < 0.15
    assert moment_error(samples) < 0.1 * moment_error(torch.randn(5000, 4, generator=generator))
    means_only = TwoStageSampler(width=64, steps=50, decoder_noise=False).fit(data).sample(10, seed=0)
    assert means_only.shape == (10, 4) and torch.isfinite(means_only).all()


@pytest.mark.parametrize(
    "name, kwargs", [("gmm", {"num_components": 2}), ("two_stage", {"width": 16, "steps": 20})]
)
def test_save_load_round_trip_gives_identical_samples(tmp_path, name, kwargs):
    codes = torch.randn(200, 3, 1, 2)
    sampler = fit_sampler(name, None, codes, **kwargs)
    path = sampler.save(tmp_path / "sampler.safetensors")
    loaded = load_sampler(path)
    assert type(loaded) is SAMPLERS[name] and loaded.config() == sampler.config()
    assert torch.equal(loaded.sample(50, seed=3), sampler.sample(50, seed=3))
    assert torch.equal(sampler.sample(50, seed=3), sampler.sample(50, seed=3))
    assert not torch.equal(sampler.sample(50, seed=3), sampler.sample(50, seed=4))
    assert loaded.sample(2, seed=0).shape == (2, 3, 1, 2)


def test_prior_sampler_delegates_to_the_model_and_keeps_the_global_rng(tmp_path):
    torch.manual_seed(0)
    model = LinearVAE(latent_dim=3)
    sampler = fit_sampler("prior", model, None)
    state = torch.random.get_rng_state()
    codes = sampler.sample(6, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert codes.shape == (6, 3) and torch.equal(codes, sampler.sample(6, seed=5))
    loaded = load_sampler(sampler.save(tmp_path / "prior.safetensors"), model)
    assert isinstance(loaded, NormalSampler) and torch.equal(loaded.sample(6, seed=5), codes)
    images = sample_images(model, sampler, 6, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(images, model.decode(codes))
    with pytest.raises(ValueError, match="needs the model"):
        load_sampler(tmp_path / "prior.safetensors")


def test_gmm_makes_a_model_without_a_prior_sampleable():
    model = IdentityMap()
    with pytest.raises(ValueError, match="has no prior to sample from"):
        fit_sampler("prior", model, None)
    codes = embed_batches(model, [(torch.rand(30, 1, 2, 2), torch.zeros(30)) for _ in range(4)], limit=100)
    assert codes.shape == (100, 1, 2, 2)
    sampler = fit_sampler("gmm", model, codes, num_components=2, covariance_type="diag")
    images = sample_images(model, sampler, 8, seed=0)
    torch.testing.assert_close(images, sampler.sample(8, seed=0))  # the identity decoder


def test_embed_batches_passes_labels_and_stops_at_the_limit():
    batches = [(torch.rand(4, 1, 1, 2), torch.full((4,), float(i))) for i in range(3)]
    codes = embed_batches(LabelledIdentity(), batches, limit=6)
    assert codes.shape == (6, 3)
    torch.testing.assert_close(codes[:, 2], torch.tensor([0.0, 0, 0, 0, 1, 1]))
    torch.testing.assert_close(codes[:, :2], torch.cat([b[0] for b in batches[:2]]).flatten(1)[:6])
    with pytest.raises(ValueError, match="no batches"):
        embed_batches(LabelledIdentity(), [])


def test_bad_input_raises_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown sampler 'flowers'; known samplers: prior, gmm, "):
        fit_sampler("flowers", None, torch.randn(10, 2))
    with pytest.raises(SamplerNotFittedError, match="before fit"):
        GaussianMixtureSampler().sample(4)
    with pytest.raises(SamplerNotFittedError, match="before fit"):
        TwoStageSampler().save(tmp_path / "unfitted.safetensors")
    codes = torch.randn(20, 3)
    codes[7, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values \(e.g. in rows \[7\]\)"):
        GaussianMixtureSampler(num_components=2).fit(codes)
    with pytest.raises(ValueError, match="N >= 2"):
        TwoStageSampler().fit(torch.randn(5))
    with pytest.raises(ValueError, match="cannot fit 10 components to 5 codes"):
        GaussianMixtureSampler().fit(torch.randn(5, 2))
    with pytest.raises(ValueError, match="covariance_type 'banded'"):
        GaussianMixtureSampler(covariance_type="banded")
    with pytest.raises(ValueError, match="must be fitted"):
        fit_sampler("gmm", None, None)
    with pytest.raises(ValueError, match="positive integer"):
        GaussianMixtureSampler(num_components=2).fit(torch.randn(20, 2)).sample(0)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a saved vaezoo sampler"):
        load_sampler(tmp_path / "other.safetensors")


def test_gmm_auto_covariances_are_full_for_small_codes_and_diagonal_for_maps():
    from vaezoo.evaluation.samplers import FULL_COVARIANCE_MAX_DIMS, covariance_for

    assert covariance_for("auto", FULL_COVARIANCE_MAX_DIMS) == "full"
    assert covariance_for("auto", FULL_COVARIANCE_MAX_DIMS + 1) == "diag"
    assert covariance_for("tied", 4096) == "tied"  # a type asked for is kept
    small = GaussianMixtureSampler(num_components=2).fit(two_blobs(200)[0])
    assert small.fitted_covariance_type == "full" and small.scale.shape == (2, 2, 2)  # Cholesky factors
    maps = torch.randn(40, 16, 4, 4)  # VQ-VAE-like (N, D, h, w) maps: 256 dimensions
    sampler = GaussianMixtureSampler(num_components=2).fit(maps)
    assert sampler.fitted_covariance_type == "diag" and sampler.scale.shape == (2, 256)  # std devs
    assert sampler.config()["covariance_type"] == "auto"
    assert sampler.sample(3, seed=0).shape == (3, 16, 4, 4)


def test_a_fit_says_what_it_fits_before_it_starts_and_shows_em_progress(capsys):
    said: list[str] = []
    codes = torch.randn(60, 16, 4, 4)
    fit_sampler("gmm", None, codes, log=said.append, num_components=2, progress=True)
    assert said == [
        "fitting the gmm sampler (2 components, diag covariances) to 60 latents of dimension 256 "
        "(maps of 16x4x4); this can take a while"
    ]
    assert "Initialization 0" in capsys.readouterr().out  # scikit-learn's EM progress
    said.clear()
    fit_sampler("two_stage", None, torch.randn(30, 3), log=said.append, width=8, steps=2)
    assert said == [
        "fitting the two_stage sampler (a latent VAE of width 8, 2 steps) to 30 latents of dimension 3; "
        "this can take a while"
    ]
