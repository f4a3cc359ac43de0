"""The weakly-supervised models (Locatello et al. 2020): Ada-GVAE, Ada-ML-VAE, GroupVAE, ML-VAE.

The aggregation rules and the adaptive threshold are checked on constructed posteriors; the
models on pairs from a small ground truth; the registry-wide contract lives in test_zoo_contract.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vaezoo.data.dsprites import DSpritesGroundTruth
from vaezoo.data.pairs import sample_pairs
from vaezoo.evaluation.disentanglement import compute_disentanglement
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.weak import (
    adaptive_shared_mask,
    aggregate_pair,
    gvae_average,
    known_shared_mask,
    mlvae_average,
    pair_kl,
)
from vaezoo.registry import create_model

TINY = {"hidden_dims": [8, 8], "image_size": 16, "likelihood": "bernoulli"}
WEAK = ("AdaGVAE", "AdaMLVAE", "GroupVAE", "MLVAE")


def gaussians(seed: int = 0, shape: tuple[int, int] = (4, 6)) -> tuple[DiagonalGaussian, DiagonalGaussian]:
    g = torch.Generator().manual_seed(seed)
    first = DiagonalGaussian(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    return first, DiagonalGaussian(torch.randn(shape, generator=g), torch.randn(shape, generator=g))


def test_pair_kl_matches_torch_distributions() -> None:
    q1, q2 = gaussians()
    expected = kl_divergence(Normal(q1.mu, q1.std), Normal(q2.mu, q2.std))
    torch.testing.assert_close(pair_kl(q1, q2), expected)


def test_adaptive_threshold_picks_the_known_shared_dimensions() -> None:
    # dims 1 and 4 differ within the pair; the others match up to small noise
    g = torch.Generator().manual_seed(1)
    mu1 = torch.randn(5, 6, generator=g)
    mu2 = mu1 + 0.01 * torch.randn(5, 6, generator=g)
    mu2[:, [1, 4]] += 3.0
    log_var = torch.full((5, 6), -2.0)
    shared = adaptive_shared_mask(pair_kl(DiagonalGaussian(mu1, log_var), DiagonalGaussian(mu2, log_var)))
    expected = torch.ones(5, 6, dtype=torch.bool)
    expected[:, [1, 4]] = False
    assert torch.equal(shared, expected)


def test_threshold_is_the_midpoint_of_max_and_min() -> None:
    delta = torch.tensor([[0.0, 1.0, 4.9, 5.1, 10.0]])  # tau = 5
    assert adaptive_shared_mask(delta).tolist() == [[True, True, True, False, False]]


def test_gvae_and_mlvae_averages_by_hand() -> None:
    q1 = DiagonalGaussian(torch.tensor([[1.0]]), torch.log(torch.tensor([[1.0]])))
    q2 = DiagonalGaussian(torch.tensor([[4.0]]), torch.log(torch.tensor([[3.0]])))
    gvae = gvae_average(q1, q2)
    assert gvae.mu.item() == pytest.approx(2.5) and gvae.log_var.exp().item() == pytest.approx(2.0)
    ml = mlvae_average(q1, q2)  # precisions 1 and 1/3: mean (1 + 4/3) / (4/3) = 1.75, var 2 / (4/3)
    assert ml.mu.item() == pytest.approx(1.75) and ml.log_var.exp().item() == pytest.approx(1.5)


def test_aggregate_pair_replaces_only_the_shared_dimensions() -> None:
    q1, q2 = gaussians(2)
    shared = torch.tensor([[True, False, True, False, True, False]]).expand(4, 6)
    a1, a2 = aggregate_pair(q1, q2, shared, gvae_average)
    torch.testing.assert_close(a1.mu[shared], a2.mu[shared])
    torch.testing.assert_close(a1.mu[~shared], q1.mu[~shared])
    torch.testing.assert_close(a2.log_var[~shared], q2.log_var[~shared])


def test_known_shared_mask_ties_dimension_f_to_factor_f() -> None:
    changed = torch.tensor([[False, True, False], [True, False, False]])
    assert known_shared_mask(changed, 4).tolist() == [[True, False, True, True], [False, True, True, True]]
    with pytest.raises(ValueError, match="latent_dim=2 is smaller than the 3 factors"):
        known_shared_mask(changed, 2)


@pytest.mark.parametrize("name", WEAK)
def test_paired_forward_shares_posteriors_and_plain_forward_is_a_vae(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 1, 6, **TINY)
    truth = DSpritesGroundTruth(image_size=16)
    x, labels = sample_pairs(truth, 4, 1, np.random.default_rng(0))
    out = model(x, pairs=True, labels=labels)
    first, second = out.mu[:4], out.mu[4:]
    assert out.recons.shape == x.shape and out.mu.shape == (8, 6)
    assert ((first - second).abs() < 1e-6).sum(1).min() >= 1  # some dimensions are shared per pair
    assert torch.isfinite(model.loss_function(*out, M_N=1.0)["loss"])
    plain = model(x[:3])  # unpaired: the plain VAE (odd batches welcome)
    torch.testing.assert_close(plain.mu, model.embed(x[:3]))


def test_group_vae_shares_exactly_the_unchanged_factor_dimensions() -> None:
    model = create_model("GroupVAE", 1, 6, **TINY)
    x, labels = sample_pairs(DSpritesGroundTruth(image_size=16), 5, 1, np.random.default_rng(5))
    out = model(x, pairs=True, labels=labels)
    equal = (out.mu[:5] - out.mu[5:]).abs() < 1e-6  # (5, 6)
    expected = known_shared_mask(labels[:5] != labels[5:], 6)
    assert torch.equal(equal, expected)


def test_group_vae_without_labels_or_with_odd_batches_says_why() -> None:
    model = create_model("GroupVAE", 1, 6, **TINY)
    with pytest.raises(ValueError, match="needs labels="):
        model(torch.rand(4, 1, 16, 16), pairs=True)
    with pytest.raises(ValueError, match="even number of rows"):
        model(torch.rand(3, 1, 16, 16), pairs=True, labels=torch.zeros(3, 5))


@pytest.mark.parametrize("name", ["AdaGVAE", "MLVAE"])
def test_training_on_pairs_lowers_the_loss_and_metrics_run_unchanged(name: str) -> None:
    torch.manual_seed(0)
    truth: Any = DSpritesGroundTruth(image_size=16)  # a GroundTruth (its tuples are read-only sequences)
    model = create_model(name, 1, 6, **TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(40):
        x, labels = sample_pairs(truth, 16, 1, rng)
        loss = model.loss_function(*model(x, pairs=True, labels=labels), M_N=1.0)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    model.eval()
    with torch.no_grad():
        scores = compute_disentanglement(
            truth, model.embed, metrics=["mig", "sap"], num_train=200, num_eval=100
        )
    assert {"mig", "sap"} <= set(scores) and all(np.isfinite(v) for v in scores.values())
