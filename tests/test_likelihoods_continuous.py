"""The continuous Bernoulli and Laplace decoder likelihoods: their normaliser, mean and density
against numerical integration and torch.distributions, and their use by a model and the evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad
from torch.distributions import Laplace as TorchLaplace

from vaezoo.evaluation.likelihood import likelihood_report
from vaezoo.models import VanillaVAE
from vaezoo.nn.likelihoods import (
    ContinuousBernoulli,
    Laplace,
    build_likelihood,
    continuous_bernoulli_log_norm,
    continuous_bernoulli_log_prob,
    continuous_bernoulli_mean,
    laplace_log_prob,
)

LAMBDAS = (0.01, 0.3, 0.499, 0.5, 0.501, 0.9)


def logit(lam: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor([math.log(lam / (1 - lam))], dtype=dtype)


def unnormalized(lam: float):
    return lambda x: lam**x * (1 - lam) ** (1 - x)


@pytest.mark.parametrize("lam", LAMBDAS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_continuous_bernoulli_normaliser_and_mean_match_integration(lam, dtype):
    mass = quad(unnormalized(lam), 0, 1)[0]  # 1 / C(lambda)
    mean = quad(lambda x: x * unnormalized(lam)(x), 0, 1)[0] / mass
    tol = 1e-12 if dtype == torch.float64 else 2e-7
    assert continuous_bernoulli_log_norm(logit(lam, dtype)).item() == pytest.approx(-math.log(mass), abs=tol)
    assert continuous_bernoulli_mean(logit(lam, dtype)).item() == pytest.approx(mean, abs=tol)


def test_continuous_bernoulli_density_integrates_to_one_and_matches_its_formula():
    lam = 0.2

    def density(x: float) -> float:
        value = torch.tensor([[x]], dtype=torch.float64)
        return math.exp(continuous_bernoulli_log_prob(value, logit(lam)[None]).item())

    assert quad(density, 0, 1)[0] == pytest.approx(1.0, abs=1e-10)
    x, logits = torch.rand(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    lam_t = torch.sigmoid(logits)
    by_hand = (
        x * lam_t.log()
        + (1 - x) * (1 - lam_t).log()
        + torch.log(torch.atanh(1 - 2 * lam_t) * 2 / (1 - 2 * lam_t))
    )
    torch.testing.assert_close(continuous_bernoulli_log_prob(x, logits), by_hand.sum(dim=(1, 2, 3)))


def test_continuous_bernoulli_is_smooth_and_finite_at_one_half():
    logits = torch.tensor([-1e-4, 0.0, 1e-4, 0.199999, 0.200001, -50.0, 50.0], requires_grad=True)
    log_norm = continuous_bernoulli_log_norm(logits)
    mean = continuous_bernoulli_mean(logits)
    assert log_norm[1].item() == pytest.approx(math.log(2.0)) and mean[1].item() == 0.5
    (log_norm.sum() + mean.sum()).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[1].item() == pytest.approx(1 / 12)  # d log C/dl = 0 and dE[x]/dl = 1/12 at l = 0
    # both sides of the switch between series and closed form (|l| = 0.2) agree
    assert log_norm[3].item() == pytest.approx(log_norm[4].item(), abs=3e-7)
    assert mean[3].item() == pytest.approx(mean[4].item(), abs=3e-7)
    assert mean[5].item() == pytest.approx(1 / 50, abs=1e-6) and mean[6].item() == pytest.approx(1 - 1 / 50)


def test_laplace_log_prob_matches_torch():
    x, loc, log_b = torch.rand(4, 3, 5, 5), torch.rand(4, 3, 5, 5), torch.tensor(-1.7)
    expected = TorchLaplace(loc, log_b.exp()).log_prob(x).sum(dim=(1, 2, 3))
    torch.testing.assert_close(laplace_log_prob(x, loc, log_b), expected)
    likelihood = build_likelihood("laplace", "sigmoid", "sum", "fixed", std=0.3)
    assert isinstance(likelihood, Laplace) and not list(likelihood.parameters())
    assert likelihood.log_scale.exp().item() == pytest.approx(0.3 / math.sqrt(2))  # std = b sqrt(2)
    torch.testing.assert_close(likelihood.mean(loc), loc)
    assert list(build_likelihood("laplace", "tanh", "sum", "learned").parameters())


def test_continuous_bernoulli_wants_unit_range_and_decodes_its_mean():
    with pytest.raises(ValueError, match="continuous_bernoulli"):
        ContinuousBernoulli("tanh")
    likelihood = build_likelihood("continuous_bernoulli", "sigmoid", "sum")
    assert likelihood.decoder_activation == "none" and likelihood.normalized and not likelihood.discrete
    assert likelihood.unnormalized_on(torch.rand(2, 3)) is None  # grey levels are in its support
    assert "support" in likelihood.unnormalized_on(torch.tensor([[1.5]]))


@pytest.mark.parametrize("name", ["continuous_bernoulli", "laplace"])
def test_a_model_trains_on_them_and_the_evaluation_reports_an_nll(name):
    torch.manual_seed(0)
    model = VanillaVAE(1, 4, [8, 16], image_size=16, likelihood=name)
    x = torch.rand(8, 1, 16, 16)
    output = model(x)
    recon = -model.likelihood.log_prob(x, output.recon_params)
    losses = model.loss_function(*output)
    torch.testing.assert_close(losses["Reconstruction_Loss"], recon.mean())
    assert (output.recons >= 0).all() and (output.recons <= 1).all()
    losses["loss"].backward()
    report = likelihood_report(model.eval(), [x], num_samples=4, chunk_size=4)
    assert report.unnormalized_reason is None and report["likelihood_normalized"] == 1.0
    assert math.isfinite(report["nll"]) and "nll_discrete" in report  # densities, not masses


def test_continuous_bernoulli_agrees_with_torch_away_from_one_half():
    logits = torch.tensor([-4.0, -1.0, 0.7, 3.0], dtype=torch.float64)  # outside torch's Taylor band
    x = torch.tensor([0.1, 0.5, 0.93, 0.0], dtype=torch.float64)
    reference = torch.distributions.ContinuousBernoulli(logits=logits)
    torch.testing.assert_close(
        continuous_bernoulli_log_prob(x[None], logits[None])[0], reference.log_prob(x).sum()
    )
    torch.testing.assert_close(continuous_bernoulli_mean(logits), reference.mean)
