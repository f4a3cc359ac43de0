"""Likelihood bounds (vaezoo.evaluation.likelihood) and the models' importance weights, on known answers:
a linear-Gaussian model whose log p(x) is closed-form, exact and wrong posteriors, the chunked
logsumexp, bits per dimension, and the Monte Carlo KL of the log-weights against each model's own KL."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Categorical, MultivariateNormal

from vaezoo.evaluation.likelihood import (
    bin_width,
    bits_per_dim,
    discrete_nll,
    importance_weighted_bounds,
    likelihood_report,
    rows_per_call,
)
from vaezoo.losses.importance import multi_sample_bound
from vaezoo.models import VanillaVAE
from vaezoo.models.cat_vae import CategoricalVAE, sample_one_hot
from vaezoo.models.cvae import ConditionalVAE
from vaezoo.models.gamma_vae import GammaVAE
from vaezoo.models.hvae import HVAE
from vaezoo.models.iwae import IWAE
from vaezoo.models.joint_vae import JointVAE
from vaezoo.models.lvae import LVAE
from vaezoo.models.vamp_vae import VampVAE
from vaezoo.nn.blocks import GaussianHead

SMALL = {"hidden_dims": [8, 16], "image_size": 16}


# -- a linear-Gaussian model: p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I), log p(x) in closed form --


class LinearPosterior(nn.Module):
    """(mu, log_var) = (A h + c, log_var): a Gaussian posterior linear in the data."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, log_var: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias, self.log_var = weight, bias, log_var

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = h @ self.weight.T + self.bias  # (B, d)
        return mu, self.log_var.expand_as(mu)


def linear_gaussian(sigma: float = 0.5, mean_shift: float = 0.0, variance_factor: float = 1.0) -> tuple:
    """The real VanillaVAE pipeline (Gaussian likelihood, fixed sigma) on 1x2x2 images with linear
    maps for encoder and decoder; the posterior is exact for shift 0 and factor 1. Returns the
    model and the marginal p(x) = N(b, W W^T + sigma^2 I)."""
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(4, 2, generator=generator, dtype=torch.float64))
    scales = torch.tensor([1.5, 0.7], dtype=torch.float64)
    w, b = q * scales, torch.randn(4, generator=generator, dtype=torch.float64)  # W^T W = diag(scales^2)
    covariance = 1 / (1 + scales**2 / sigma**2)  # the posterior's diagonal covariance
    model = VanillaVAE(
        1, 2, [2], image_size=2, output_activation="none", likelihood="gaussian",
        likelihood_scale="fixed", likelihood_std=sigma,
    ).double()  # fmt: skip
    encoder_weight = covariance[:, None] * w.T / sigma**2  # mean = Sigma W^T (x - b) / sigma^2
    model.encoder = nn.Flatten()
    model.head = LinearPosterior(
        encoder_weight, -encoder_weight @ b + mean_shift, torch.log(covariance * variance_factor)
    )
    decoder = nn.Linear(2, 4).double()
    with torch.no_grad():
        decoder.weight.copy_(w)
        decoder.bias.copy_(b)
    model.decoder = nn.Sequential(decoder, nn.Unflatten(1, (1, 2, 2)))
    return model.eval(), MultivariateNormal(b, w @ w.T + sigma**2 * torch.eye(4, dtype=torch.float64))


def test_exact_posterior_gives_zero_variance_weights_equal_to_log_p_x():
    model, marginal = linear_gaussian()
    x = marginal.sample((16,)).view(16, 1, 2, 2)
    log_p_x = marginal.log_prob(x.flatten(1))  # (16,)
    with torch.no_grad():
        log_w = model.log_importance_weights(x, 30)  # (16, 30)
    torch.testing.assert_close(log_w, log_p_x[:, None].expand_as(log_w), atol=1e-4, rtol=0)
    bounds = importance_weighted_bounds(model, x, num_samples=50, chunk_size=20)
    torch.testing.assert_close(bounds["elbo"], log_p_x, atol=1e-4, rtol=0)
    torch.testing.assert_close(bounds["iwae"], log_p_x, atol=1e-4, rtol=0)


def test_a_wrong_posterior_gives_an_elbo_below_log_p_x_and_iwae_closes_the_gap_with_k():
    model, marginal = linear_gaussian(mean_shift=0.4, variance_factor=2.0)
    torch.manual_seed(0)
    x = marginal.sample((32,)).view(32, 1, 2, 2)
    log_p_x = marginal.log_prob(x.flatten(1))
    with torch.no_grad():
        log_w = model.log_importance_weights(x, 1000)  # (32, 1000)
    assert (log_w.mean(dim=1) < log_p_x).all()  # every ELBO below its log p(x)
    # E[IWAE_k] estimated by averaging 1000 / k independent k-sample bounds
    bounds = [multi_sample_bound(log_w, 1000 // k).mean().item() for k in (1, 10, 100, 1000)]
    assert all(a < b for a, b in zip(bounds, bounds[1:])), bounds
    assert bounds[0] < log_p_x.mean().item() - 0.1  # a real gap at k = 1 ...
    assert bounds[-1] == pytest.approx(log_p_x.mean().item(), abs=0.02)  # ... closed at k = 1000
    iwae = importance_weighted_bounds(model, x, num_samples=1000, chunk_size=300)
    assert (iwae["iwae"] >= iwae["elbo"]).all()
    assert iwae["iwae"].mean().item() == pytest.approx(log_p_x.mean().item(), abs=0.02)


# -- the chunked accumulation ---------------------------------------------------------------------


class ReplayWeights(nn.Module):
    """A stand-in model whose ``log_importance_weights`` hands out the next columns of fixed log-weights."""

    def __init__(self, log_w: torch.Tensor) -> None:
        super().__init__()
        self.log_w, self.used, self.calls = log_w, 0, []
        self.dummy = nn.Parameter(torch.zeros(()))

    def log_importance_weights(self, x: torch.Tensor, num_samples: int, **kwargs) -> torch.Tensor:
        self.calls.append((num_samples, self.training, torch.is_grad_enabled(), kwargs))
        columns = self.log_w[:, self.used : self.used + num_samples]
        self.used += num_samples
        return columns


def test_chunked_running_logsumexp_equals_the_one_shot_bound():
    log_w = torch.randn(5, 103, dtype=torch.float64) * 30 - 500  # far below 0: exp would underflow
    model = ReplayWeights(log_w).train()
    bounds = importance_weighted_bounds(model, torch.zeros(5, 1), num_samples=103, chunk_size=10, labels="y")
    torch.testing.assert_close(bounds["iwae"], torch.logsumexp(log_w, dim=1) - math.log(103))
    torch.testing.assert_close(bounds["elbo"], log_w.mean(dim=1))
    assert [c[0] for c in model.calls] == [10] * 10 + [3]  # at most chunk_size samples per call
    assert all(not training and not grad and kw == {"labels": "y"} for _, training, grad, kw in model.calls)
    assert model.training  # the caller's mode is restored
    with pytest.raises(ValueError, match="must be at least 1"):
        importance_weighted_bounds(model, torch.zeros(5, 1), num_samples=0)


# -- units ------------------------------------------------------------------------------------------


def test_bits_per_dim_and_the_discretisation_correction():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert bits_per_dim(3 * 64 * 64 * 8 * math.log(2), 3 * 64 * 64) == pytest.approx(8.0)  # uniform 8-bit
    nats = torch.tensor([0.0, 2 * math.log(2)])
    torch.testing.assert_close(bits_per_dim(nats, 2), torch.tensor([0.0, 1.0]))
    assert bin_width((0.0, 1.0)) == pytest.approx(1 / 255)
    assert bin_width((-1.0, 1.0)) == pytest.approx(2 / 255)
    # a density on [0, 1]-scaled 8-bit data: the discrete NLL adds D log 255 (positive: densities exceed 1)
    assert discrete_nll(-100.0, 10, 1 / 255) == pytest.approx(-100.0 + 10 * math.log(255))
    # the uniform density on [0, 1] gives each of 256 bins (width 1/255) mass ~1/255: 8 bits less a little
    assert bits_per_dim(discrete_nll(0.0, 1, 1 / 255), 1) == pytest.approx(math.log2(255))
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(1.0, 0)
    with pytest.raises(ValueError, match="low < high"):
        bin_width((1.0, 1.0))


# -- the report ---------------------------------------------------------------------------------------


def test_report_of_a_normalised_density_with_every_batch_format():
    model, marginal = linear_gaussian()
    torch.manual_seed(0)
    x = marginal.sample((10,)).view(10, 1, 2, 2)
    batches = [x[:4], (x[4:7], torch.zeros(3)), (x[7:], {"labels": torch.zeros(3)})]
    report = likelihood_report(model, batches, num_samples=20, chunk_size=7, max_examples=8)
    expected_nll = -marginal.log_prob(x[:8].flatten(1)).mean().item()
    assert (report["num_examples"], report["num_samples"], report["likelihood_normalized"]) == (8, 20, 1)
    assert report["nll"] == pytest.approx(expected_nll, abs=1e-4) == pytest.approx(-report["elbo"], abs=1e-4)
    assert report["bits_per_dim"] == pytest.approx(expected_nll / (4 * math.log(2)), abs=1e-4)
    assert "nll_discrete" not in report  # output activation "none": no known data range


def test_report_of_mse_is_not_a_likelihood_and_of_a_gaussian_adds_the_discrete_nll():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 1, 16, 16)) / 255.0  # 8-bit images
    mse = likelihood_report(VanillaVAE(1, 4, **SMALL), [x], num_samples=4, chunk_size=4)
    assert mse["likelihood_normalized"] == 0.0 and {"nll", "bits_per_dim", "elbo"}.isdisjoint(mse)
    assert mse["iwae_bound_unnormalized"] >= mse["elbo_unnormalized"]
    gaussian = likelihood_report(VanillaVAE(1, 4, likelihood="gaussian", **SMALL), [x], 4, 4)
    assert gaussian["nll_discrete"] == pytest.approx(gaussian["nll"] + 256 * math.log(255))
    logistic = likelihood_report(VanillaVAE(1, 4, likelihood="discretized_logistic", **SMALL), [x], 4, 4)
    assert "nll_discrete" not in logistic and logistic["nll"] > 0  # a mass: -log P >= 0
    assert mse.unnormalized_reason.startswith("the reconstruction loss has no normaliser")
    assert gaussian.unnormalized_reason is None is logistic.unnormalized_reason


def test_data_outside_the_likelihoods_support_give_no_nll_and_say_why():
    torch.manual_seed(0)
    grey = torch.randint(0, 256, (3, 1, 16, 16)) / 255.0  # 8-bit grey levels, not binary
    bernoulli = VanillaVAE(1, 4, likelihood="bernoulli", **SMALL)
    report = likelihood_report(bernoulli, [grey], num_samples=4, chunk_size=4)
    assert report["likelihood_normalized"] == 0.0 and {"nll", "bits_per_dim", "elbo"}.isdisjoint(report)
    assert "cross-entropy" in report.unnormalized_reason
    binary = likelihood_report(bernoulli, [(grey > 0.5).float()], num_samples=4, chunk_size=4)
    assert binary.unnormalized_reason is None and binary["nll"] > 0  # a mass on {0, 1}
    logistic = VanillaVAE(1, 4, likelihood="discretized_logistic", **SMALL)
    off_grid = likelihood_report(logistic, [grey + 0.3 / 255], num_samples=4, chunk_size=4)
    assert "not on the 256 levels" in off_grid.unnormalized_reason and "nll" not in off_grid


# -- each model's log-weights against its own KL ------------------------------------------------------


def spread_posteriors(model: nn.Module) -> None:
    """Move every Gaussian head off N(0, I) and every categorical off uniform, so KLs are a few nats."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, GaussianHead):
                module.fc_mu.weight.mul_(3.0)  # means further apart for different inputs
                module.fc_mu.bias.fill_(0.8)
                module.fc_var.bias.fill_(-1.5)
            if hasattr(module, "fc_logits"):
                module.fc_logits.bias.copy_(4.0 * (torch.arange(module.fc_logits.bias.numel()) % 2))
        if isinstance(model, VampVAE):  # black pseudo-inputs, narrow components: a prior far from q(z|x)
            model.prior.raw_pseudo_inputs.fill_(-8.0)
            model.head.fc_var.bias.fill_(-4.0)


def kl_of_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    return losses["KLD"] if "KLD" in losses else losses["KLD_Continuous"] + losses["KLD_Discrete"]


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (VanillaVAE, {}),
        (IWAE, {"num_samples": 1}),
        (ConditionalVAE, {"num_classes": 3}),
        (VampVAE, {"num_components": 3}),
        (GammaVAE, {}),
        (HVAE, {"latent2_dim": 3, "prior_width": 8}),
        (LVAE, {"latent_dims": [4, 3, 2], "rung_width": 8}),
        (CategoricalVAE, {"categorical_dim": 3}),
        (JointVAE, {"categorical_dim": [3, 2]}),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_mean_log_prior_ratio_is_minus_the_models_kl(cls, kwargs):
    """E_q[log p(z) - log q(z|x)] = -KL: the log-weights' latent terms (every level of a hierarchy)
    against the KL the training loss computes (closed form, or Monte Carlo over forward passes)."""
    torch.manual_seed(0)
    model = cls(1, latent_dim=4, likelihood="bernoulli", **SMALL, **kwargs).eval()
    spread_posteriors(model)
    x, labels = (torch.rand(2, 1, 16, 16) > 0.5).float(), torch.tensor([0, 2])
    repeats = 1000
    with torch.no_grad():
        z, log_prior, log_posterior = model.sample_latents(x, 4000, labels=labels)
        output = model(x.repeat(repeats, 1, 1, 1), labels=labels.repeat(repeats))
        kl = kl_of_loss(model.loss_function(*output, M_N=1.0, labels=labels.repeat(repeats)))
        log_w = model.log_importance_weights(x, 3, labels=labels)
    assert z.shape[:2] == (2, 4000) and log_prior.shape == log_posterior.shape == (2, 4000)
    assert kl.item() > 1.0  # the test has something to compare
    assert (log_posterior - log_prior).mean().item() == pytest.approx(kl.item(), rel=0.04, abs=0.05)
    assert log_w.shape == (2, 3) and torch.isfinite(log_w).all() and (log_w < 0).all()


def test_exact_one_hot_draws_follow_q_and_score_its_log_probability():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5, 0.5, 0.5]])  # two variables of three classes
    model = CategoricalVAE(1, 2, categorical_dim=3, **SMALL)
    torch.manual_seed(0)
    codes, log_q = sample_one_hot(model.categorical, logits, 20000)  # (1, S, 6), (1, S)
    classes = codes.view(1, 20000, 2, 3).argmax(-1)  # (1, S, 2)
    assert torch.equal(codes.view(1, 20000, 2, 3).sum(-1), torch.ones(1, 20000, 2))  # one-hot
    q = Categorical(logits=logits.view(2, 3))
    torch.testing.assert_close(log_q, q.log_prob(classes).sum(-1))
    frequencies = torch.stack([torch.bincount(classes[0, :, k], minlength=3) for k in range(2)]) / 20000
    torch.testing.assert_close(frequencies, q.probs, atol=0.015, rtol=0)


# -- decoder calls of bounded size ------------------------------------------------------------------


def test_rows_per_call_keeps_whole_groups_of_sixteen_inputs():
    assert rows_per_call(100, 50, None) == 100  # no bound: one call
    assert rows_per_call(10, 50, 800) == 10  # already small enough
    assert rows_per_call(100, 50, 800) == 16
    assert rows_per_call(100, 10, 800) == 80
    assert rows_per_call(100, 1000, 800) == 16  # never fewer than 16 rows


@pytest.mark.parametrize("decode_batch", [16 * 7, 32 * 7, 50])
def test_split_decoder_calls_give_the_same_bounds_bit_for_bit(decode_batch):
    """Inputs split into groups of 16 per call draw the same latents as one call over all inputs
    (torch's CPU normal sampler works in blocks of 16), so the bounds are equal, not just close."""
    model = VanillaVAE(1, 4, likelihood="bernoulli", **SMALL).eval()
    x = torch.rand(40, 1, 16, 16).round()  # binary images: 40 = 16 + 16 + 8 rows
    torch.manual_seed(3)
    whole = importance_weighted_bounds(model, x, num_samples=21, chunk_size=7)
    torch.manual_seed(3)
    split = importance_weighted_bounds(model, x, num_samples=21, chunk_size=7, decode_batch=decode_batch)
    torch.testing.assert_close(split, whole, rtol=1e-6, atol=1e-6)


def test_split_decoder_calls_on_the_known_answer_and_with_labels():
    model, marginal = linear_gaussian()
    x = marginal.sample((40,)).view(40, 1, 2, 2)
    bounds = importance_weighted_bounds(model, x, num_samples=30, chunk_size=10, decode_batch=160)
    torch.testing.assert_close(bounds["iwae"], marginal.log_prob(x.flatten(1)), atol=1e-4, rtol=0)
    cvae = ConditionalVAE(1, latent_dim=3, num_classes=4, **SMALL).eval()
    images, labels = torch.rand(20, 1, 16, 16), torch.arange(20) % 4
    torch.manual_seed(0)
    whole = importance_weighted_bounds(cvae, images, 8, 4, labels=labels)
    torch.manual_seed(0)
    split = importance_weighted_bounds(cvae, images, 8, 4, decode_batch=64, labels=labels)  # labels sliced
    torch.testing.assert_close(split, whole, rtol=1e-6, atol=1e-6)
