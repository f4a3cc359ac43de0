"""Decoder likelihoods: known values against torch.distributions and hand computations, and the
``likelihood`` option of the models (decoder outputs, losses, validation, training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Normal

from vaezoo.models import VanillaVAE
from vaezoo.models.logcosh_vae import LogCoshVAE
from vaezoo.models.twostage_vae import TwoStageVAE
from vaezoo.nn.likelihoods import (
    Bernoulli,
    DiscretizedLogistic,
    Gaussian,
    SquaredError,
    bernoulli_log_prob,
    build_likelihood,
    discretized_logistic_log_prob,
    gaussian_log_prob,
)

SMALL = {"hidden_dims": [8, 16], "image_size": 16}


def binary_images(n: int = 8, seed: int = 0) -> torch.Tensor:
    """Squares of random size and place on black, 1x16x16, values in {0, 1}."""
    rng = np.random.default_rng(seed)
    x = torch.zeros(n, 1, 16, 16)
    for image in x:
        top, left, side = rng.integers(0, 8), rng.integers(0, 8), rng.integers(3, 8)
        image[:, top : top + side, left : left + side] = 1.0
    return x


def eight_bit(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Values on the 256-level lattice of [low, high] (k / 255 scaled), as the data pipeline makes them."""
    return low + (high - low) * torch.round(x * 255) / 255


# -- the log probabilities ----------------------------------------------------------------------------


def test_bernoulli_log_prob_matches_torch_and_survives_extreme_logits():
    logits = torch.randn(4, 2, 3, 3) * 3
    x = torch.randint(0, 2, logits.shape).float()
    expected = TorchBernoulli(logits=logits).log_prob(x).sum(dim=(1, 2, 3))
    torch.testing.assert_close(bernoulli_log_prob(x, logits), expected)
    # a confident wrong pixel costs its logit, no clamping and no inf (a sigmoid first would saturate)
    wrong = bernoulli_log_prob(torch.zeros(1, 1), torch.full((1, 1), 100.0))
    assert wrong.item() == pytest.approx(-100.0)
    logits = torch.full((1, 1), 100.0, requires_grad=True)
    bernoulli_log_prob(torch.zeros(1, 1), logits).backward()
    assert logits.grad.item() == pytest.approx(-1.0)  # d/dl of -softplus(l): not vanished


def test_gaussian_log_prob_matches_normal():
    mean, x = torch.rand(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    for log_std in (torch.tensor(-2.0), torch.tensor(0.3)):
        expected = Normal(mean, log_std.exp()).log_prob(x).sum(dim=(1, 2, 3))
        torch.testing.assert_close(gaussian_log_prob(x, mean, log_std), expected)


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-1.0, 1.0)])
@pytest.mark.parametrize(("loc", "scale"), [(0.5, 0.1), (0.0, 0.004), (1.3, 0.05), (-0.2, 3.0), (0.37, 1e-4)])
def test_discretized_logistic_masses_over_the_256_levels_sum_to_one(low, high, loc, scale):
    levels = torch.linspace(low, high, 256, dtype=torch.float64).view(256, 1)  # every 8-bit value
    loc = torch.full_like(levels, low + (high - low) * loc)
    log_scale = torch.tensor(math.log(scale), dtype=torch.float64)
    log_p = discretized_logistic_log_prob(levels, loc, log_scale, low, high)  # (256,)
    assert torch.isfinite(log_p).all()
    assert torch.logsumexp(log_p, dim=0).item() == pytest.approx(0.0, abs=1e-9)


def test_discretized_logistic_bins_by_hand_including_both_edges():
    loc, scale, width = 0.4, 0.07, 1 / 255
    cdf = lambda v: 1 / (1 + math.exp(-(v - loc) / scale))  # noqa: E731 - the logistic CDF
    x = torch.tensor([[0.0], [100 / 255], [1.0]], dtype=torch.float64)
    log_scale = torch.tensor(math.log(scale), dtype=torch.float64)
    log_p = discretized_logistic_log_prob(x, torch.full_like(x, loc), log_scale, 0.0, 1.0)
    expected = [
        math.log(cdf(0.5 * width)),  # lowest level: all the mass below its upper edge
        math.log(cdf(100 / 255 + 0.5 * width) - cdf(100 / 255 - 0.5 * width)),
        math.log(1 - cdf(1 - 0.5 * width)),  # highest level: all the mass above its lower edge
    ]
    torch.testing.assert_close(log_p, torch.tensor(expected, dtype=torch.float64))


def test_discretized_logistic_is_stable_far_from_the_data():
    x = torch.tensor([[0.5, 0.0, 1.0]], requires_grad=False)
    loc = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    log_scale = torch.tensor(math.log(1e-3), requires_grad=True)
    log_p = discretized_logistic_log_prob(x, loc, log_scale, 0.0, 1.0)
    log_p.backward()
    assert torch.isfinite(log_p).all() and log_p.item() < -1000  # tiny mass, but a number
    assert torch.isfinite(loc.grad).all() and torch.isfinite(log_scale.grad)


# -- the likelihood objects ---------------------------------------------------------------------------


def test_likelihood_objects_declare_means_activations_and_normalisation():
    params = torch.randn(2, 1, 4, 4)
    bernoulli = Bernoulli("sigmoid")
    assert bernoulli.decoder_activation == "none" and bernoulli.normalized and bernoulli.discrete
    torch.testing.assert_close(bernoulli.mean(params), torch.sigmoid(params))
    mse = SquaredError("tanh", "sum")
    assert not mse.normalized and mse.decoder_activation == "tanh" and mse.data_range == (-1.0, 1.0)
    x = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(mse.log_prob(x, params), -((params - x) ** 2).sum(dim=(1, 2, 3)))
    logistic = DiscretizedLogistic("sigmoid", std=0.2, learned=False)
    assert logistic.log_scale.item() == pytest.approx(math.log(0.2 * math.sqrt(3) / math.pi))
    assert torch.equal(logistic.mean(params), params) and logistic.discrete


def test_learned_scale_is_a_parameter_and_a_fixed_one_is_not_saved():
    learned, fixed = Gaussian("sigmoid", 0.3, learned=True), Gaussian("sigmoid", 0.3, learned=False)
    assert [name for name, _ in learned.named_parameters()] == ["log_scale"]
    assert learned.log_scale.item() == pytest.approx(math.log(0.3))
    assert list(fixed.parameters()) == [] and fixed.state_dict() == {}
    x, mean = torch.rand(2, 1, 3, 3), torch.rand(2, 1, 3, 3)
    torch.testing.assert_close(fixed.log_prob(x, mean), Normal(mean, 0.3).log_prob(x).sum(dim=(1, 2, 3)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bernoulli", "output_activation": "tanh"}, "pixels in \\[0, 1\\].*'sigmoid'"),
        ({"name": "discretized_logistic", "output_activation": "none"}, "needs the data range"),
        ({"name": "gaussian", "output_activation": "sigmoid", "std": 0.0}, "likelihood_std must be positive"),
        ({"name": "poisson", "output_activation": "sigmoid"}, "'poisson' is not one of"),
        ({"name": "gaussian", "output_activation": "sigmoid", "scale": "free"}, "likelihood_scale 'free'"),
    ],
)
def test_bad_likelihood_settings_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_likelihood(**kwargs)


# -- the models' likelihood option --------------------------------------------------------------------


def test_bernoulli_vae_decodes_logits_to_images_and_scores_them_as_a_likelihood():
    torch.manual_seed(0)
    model = VanillaVAE(1, 4, likelihood="bernoulli", **SMALL).eval()
    assert model.recon_reduction == "sum" and model.likelihood_is_normalized
    x = binary_images(4)
    out = model(x)
    assert out._fields[-1] == "recon_params" and out.recons.shape == x.shape
    torch.testing.assert_close(out.recons, torch.sigmoid(out.recon_params))  # recons: an image in [0, 1]
    z = torch.randn(3, 4)
    torch.testing.assert_close(model.decode(z), torch.sigmoid(model.decode_params(z)))
    losses = model.loss_function(*out, M_N=1.0)
    nll = -TorchBernoulli(logits=out.recon_params).log_prob(x).sum(dim=(1, 2, 3))
    torch.testing.assert_close(losses["Reconstruction_Loss"], nll.mean())
    torch.testing.assert_close(losses["loss"], nll.mean() + losses["KLD"])  # M_N = 1: the negative ELBO


def test_the_default_is_the_unchanged_mse():
    torch.manual_seed(0)
    model = VanillaVAE(1, 4, **SMALL)
    assert model.recon_reduction == "mean" and not model.likelihood_is_normalized
    x = torch.rand(3, 1, 16, 16)
    out = model(x)
    assert type(out).__name__ == "VAEOutput" and len(out) == 4  # PyTorch-VAE's four items
    expected = ((out.recons - x) ** 2).mean(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(model.loss_function(*out)["Reconstruction_Loss"], expected)
    assert model.state_dict().keys() == VanillaVAE(1, 4, recon_reduction="mean", **SMALL).state_dict().keys()


def test_a_likelihood_needs_the_summed_reconstruction_term():
    with pytest.raises(ValueError, match="recon_reduction 'mean' with likelihood 'gaussian'.*'sum'"):
        VanillaVAE(1, 4, likelihood="gaussian", recon_reduction="mean", **SMALL)
    assert VanillaVAE(1, 4, likelihood="gaussian", recon_reduction="sum", **SMALL).recon_reduction == "sum"


@pytest.mark.parametrize("cls", [LogCoshVAE, TwoStageVAE])
def test_models_with_their_own_reconstruction_term_refuse_a_likelihood(cls):
    with pytest.raises(ValueError, match=f"{cls.__name__} takes likelihood 'mse' only, not 'bernoulli': .+"):
        cls(1, 4, likelihood="bernoulli", **SMALL)
    assert cls(1, 4, **SMALL).likelihood_is_normalized is (cls is TwoStageVAE)


def test_learned_scale_round_trips_through_the_config():
    model = VanillaVAE(1, 4, likelihood="discretized_logistic", likelihood_std=0.2, **SMALL)
    with torch.no_grad():
        model.likelihood.log_scale.fill_(-3.0)
    clone = VanillaVAE(**model.config)
    clone.load_state_dict(model.state_dict())
    assert clone.likelihood.log_scale.item() == -3.0 and "likelihood.log_scale" in model.state_dict()


@pytest.mark.parametrize(
    ("likelihood", "activation"),
    [("mse", "sigmoid"), ("bernoulli", "sigmoid"), ("gaussian", "sigmoid"), ("discretized_logistic", "tanh")],
)
def test_vanilla_vae_trains_with_every_likelihood(likelihood, activation):
    x = binary_images(16)
    x = eight_bit(x * 0.8 + 0.1 * torch.rand_like(x), -1.0, 1.0) if activation == "tanh" else x
    torch.manual_seed(0)
    model = VanillaVAE(1, 4, likelihood=likelihood, output_activation=activation, **SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        loss = model.loss_function(*model(x), M_N=1.0)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert all(math.isfinite(v) for v in history)
    assert np.mean(history[-3:]) < np.mean(history[:3]) - 0.1 * abs(np.mean(history[:3])), history
