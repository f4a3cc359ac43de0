"""The manifold sampler: HMC on sqrt(det G^{-1}(z)) of a model with a learned latent metric."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vaezoo.evaluation.evaluate import EvaluationContext, EvaluationSettings
from vaezoo.evaluation.samplers import (
    ManifoldSampler,
    SamplerNotApplicableError,
    fit_sampler,
    load_sampler,
    sampler_names,
)
from vaezoo.registry import create_model

TINY = {"hidden_dims": [8, 16], "image_size": 16}
CENTRE = torch.tensor([1.5, -1.0])


def bump_model() -> torch.nn.Module:
    """An RHVAE on 2-D latents whose metric is one known bump: G^{-1} = 25 I exp(-|z - c|^2) + 0.01 I."""
    model = create_model("RHVAE", 1, 2, temperature=1.0, num_centroids=4, **TINY).eval()
    model.centroids[0] = CENTRE
    model.centroid_metrics[0] = 25.0 * torch.eye(2)
    model.centroids_seen.fill_(1)
    return model


def test_draws_are_finite_and_concentrate_where_the_volume_is_large():
    model = bump_model()
    sampler = ManifoldSampler(model, mcmc_steps=30, n_lf=8, eps_lf=0.1, start="prior")
    draws = sampler.sample(300, seed=0)
    assert draws.shape == (300, 2) and torch.isfinite(draws).all()
    starts = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
    near = lambda z: ((z - CENTRE).norm(dim=1) < 1.0).float().mean()  # noqa: E731
    assert near(draws) > 0.5 and near(draws) > 3 * near(starts)  # the prior puts ~0.1 there
    # the target: sqrt(det G^{-1}) = 25 exp(-|z - c|^2) + 0.01 in 2-D; higher where the draws are
    squared = ((starts - CENTRE) ** 2).sum(dim=1)
    torch.testing.assert_close(sampler.log_density(starts), torch.log(25.0 * torch.exp(-squared) + 0.01))
    assert sampler.log_density(draws).mean() > sampler.log_density(starts).mean() + 2.0
    # started at the centroid, the chains stay around it
    near_start = ManifoldSampler(model, mcmc_steps=10, n_lf=5, eps_lf=0.1).sample(100, seed=2)
    assert (near_start - CENTRE).norm(dim=1).median() < 1.0


def test_only_models_with_a_learned_metric_are_accepted():
    assert "manifold" in sampler_names()
    with pytest.raises(SamplerNotApplicableError, match="needs a learned latent metric"):
        fit_sampler("manifold", create_model("VanillaVAE", 1, 2, **TINY), None)
    with pytest.raises(ValueError, match="start in"):
        ManifoldSampler(bump_model(), start="somewhere")
    # before training the RHVAE has no centroids: the chains start at prior draws, on a flat density
    untrained = create_model("RHVAE", 1, 2, **TINY).eval()
    assert ManifoldSampler(untrained, mcmc_steps=2, n_lf=2).sample(5, seed=0).shape == (5, 2)


def test_save_load_round_trip_and_seeds(tmp_path):
    model = bump_model()
    sampler = fit_sampler("manifold", model, None, mcmc_steps=3, n_lf=3, batch_size=7)
    loaded = load_sampler(sampler.save(tmp_path / "manifold.safetensors"), model)
    assert type(loaded) is ManifoldSampler and loaded.config() == sampler.config()
    assert torch.equal(loaded.sample(10, seed=3), sampler.sample(10, seed=3))  # two chunks of 7 and 3
    assert not torch.equal(sampler.sample(10, seed=3), sampler.sample(10, seed=4))


def test_evaluation_generates_through_the_manifold_sampler_of_a_trained_rhvae():
    """The evaluation's path (``vaezoo evaluate --sampler manifold``, ``vaezoo sample``) on a
    few steps of an RHVAE: its buffers hold the trained metric the chains run on."""
    images = torch.rand(16, 1, 16, 16)
    torch.manual_seed(0)
    model = create_model("RHVAE", 1, 2, n_lf=1, eps_lf=0.01, **TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        model.loss_function(*model(images))["loss"].backward()
        optimizer.step()
    settings = EvaluationSettings(sampler="manifold", seed=0)
    no_data = SimpleNamespace(value_range=(0.0, 1.0))  # a sampler of the model's own reads no data
    generated = EvaluationContext(model, no_data, settings).generate(4)
    assert generated.shape == (4, 1, 16, 16) and torch.isfinite(generated).all()
