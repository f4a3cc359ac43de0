"""Likelihood bounds, priors and hierarchies: IWAE, MIWAE, VampVAE, HVAE, LVAE, TwoStageVAE.

What is special about each model, checked against independent computations (torch.distributions,
explicit formulas) on small constructed cases. The shared contract is in test_zoo_contract.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vaezoo.losses.importance import importance_weights, log_mean_exp, multi_sample_bound
from vaezoo.models.hvae import HVAE
from vaezoo.models.iwae import IWAE
from vaezoo.models.lvae import LVAE
from vaezoo.models.miwae import MIWAE
from vaezoo.models.twostage_vae import TwoStageVAE
from vaezoo.models.vamp_vae import VampVAE
from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.priors import precision_weighted

SMALL = {"hidden_dims": [8, 16], "image_size": 16, "recon_reduction": "sum"}


def small(cls: type, latent_dim: int = 4, **kwargs) -> torch.nn.Module:
    """A 1x16x16 model with a two-layer conv stack, in eval mode (BatchNorm deterministic)."""
    torch.manual_seed(0)
    return cls(1, latent_dim, **{**SMALL, **kwargs}).eval()


def images(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def normal_log_prob(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    return Normal(mu, torch.exp(0.5 * log_var)).log_prob(z).sum(-1)


def closed_form_kl(mu, log_var, prior_mu, prior_log_var) -> torch.Tensor:
    q, p = Normal(mu, torch.exp(0.5 * log_var)), Normal(prior_mu, torch.exp(0.5 * prior_log_var))
    return kl_divergence(q, p).sum(-1)


# -- IWAE / MIWAE ----------------------------------------------------------------------------------


def test_iwae_with_one_sample_is_the_elbo_on_the_same_noise():
    vae, iwae = small(VanillaVAE), small(IWAE, num_samples=1)
    iwae.load_state_dict(vae.state_dict())  # the same networks
    x, kl_weight = images(), 0.7
    torch.manual_seed(3)
    vae_out = vae(x)
    torch.manual_seed(3)
    iwae_out = iwae(x)
    assert torch.equal(iwae_out.recons, vae_out.recons)  # same noise, same z
    z = iwae_out.z[:, 0]
    recon = (vae_out.recons - x).pow(2).sum(dim=(1, 2, 3))
    kl_estimate = normal_log_prob(z, vae_out.mu, vae_out.log_var) - normal_log_prob(z, 0 * z, 0 * z)
    losses = iwae.loss_function(*iwae_out, M_N=kl_weight)
    torch.testing.assert_close(losses["loss"], (recon + kl_weight * kl_estimate).mean())
    torch.testing.assert_close(losses["loss"], -losses["ELBO"])
    vae_losses = vae.loss_function(*vae_out)
    torch.testing.assert_close(losses["Reconstruction_Loss"], vae_losses["Reconstruction_Loss"])


def test_iwae_bound_is_above_the_elbo_and_grows_with_k():
    model, x = small(IWAE, num_samples=400), images(6)
    torch.manual_seed(0)
    with torch.no_grad():
        output = model(x)
        recon, log_prior, log_posterior = model.sample_terms(output)
        losses = model.loss_function(*output)
    log_w = -recon + log_prior - log_posterior  # (B, 400)
    # E[L_k], estimated by averaging 400 / k independent k-sample bounds
    bounds = [multi_sample_bound(log_w, 400 // k).mean().item() for k in (1, 4, 20, 100, 400)]
    assert bounds[0] == pytest.approx(log_w.mean().item(), rel=1e-5)  # k = 1 is the ELBO
    assert all(a < b for a, b in zip(bounds, bounds[1:])), bounds
    assert -losses["loss"].item() == pytest.approx(bounds[-1], rel=1e-5)
    assert -losses["loss"] > losses["ELBO"]


def test_importance_weights_are_the_softmax_of_the_log_weights():
    log_w = torch.tensor([[0.0, 2.0, -1.0, 0.5], [-3.0, -3.0, 10.0, -2.0]], requires_grad=True)
    weights = importance_weights(log_w)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    torch.testing.assert_close(weights, log_w.exp() / log_w.exp().sum(-1, keepdim=True))
    assert torch.equal(weights.argmax(-1), log_w.argmax(-1))  # the largest log-weight, the largest weight
    torch.testing.assert_close(log_mean_exp(log_w), log_w.exp().mean(-1).log())
    # the bound's gradient weighs each sample's log-weight by its normalised weight (Burda Eq. 14)
    (-multi_sample_bound(log_w).mean()).backward()
    torch.testing.assert_close(log_w.grad, -weights.detach() / 2)


def test_iwae_gradient_favours_the_sample_that_explains_the_input():
    model, x = small(IWAE, num_samples=2), images(3)
    output = model(x)
    z = output.z[:, :1].expand_as(output.z).detach()  # both samples at one z: equal prior/posterior terms
    good, bad = x, (x + 0.3).clamp(0, 1)
    all_recons = torch.stack([bad, good], dim=1).requires_grad_(True)  # (B, 2, C, H, W)
    output = output._replace(z=z, all_recons=all_recons)
    model.loss_function(*output)["loss"].backward()
    errors = (all_recons.detach() - x.unsqueeze(1)).pow(2).sum(dim=(2, 3, 4))  # (B, 2)
    weights = torch.softmax(-errors, dim=1)  # of the log-weights, never of the loss
    expected = weights[..., None, None, None] * 2 * (all_recons.detach() - x.unsqueeze(1)) / x.shape[0]
    torch.testing.assert_close(all_recons.grad, expected)
    assert (weights[:, 1] > weights[:, 0]).all()


def test_miwae_with_one_estimate_is_the_iwae_and_averages_group_bounds():
    iwae, x = small(IWAE, num_samples=3), images()
    miwae_1 = small(MIWAE, num_samples=3, num_estimates=1)
    miwae_1.load_state_dict(iwae.state_dict())
    torch.manual_seed(5)
    iwae_losses = iwae.loss_function(*iwae(x))
    torch.manual_seed(5)
    torch.testing.assert_close(miwae_1.loss_function(*miwae_1(x)), iwae_losses)

    miwae = small(MIWAE, num_samples=3, num_estimates=2)
    output = miwae(x)
    assert output.z.shape == (4, 6, 4) and output.all_recons.shape == (4, 6, 1, 16, 16)
    recon, log_prior, log_posterior = miwae.sample_terms(output)
    log_w = (-recon + log_prior - log_posterior).view(4, 2, 3)
    expected = -(torch.logsumexp(log_w, dim=2) - math.log(3)).mean()
    torch.testing.assert_close(miwae.loss_function(*output)["loss"], expected)


# -- VampVAE ---------------------------------------------------------------------------------------


def zero_encoder_head(model: torch.nn.Module, log_var: float = 0.0) -> None:
    """Make q(z|x) = N(0, exp(log_var) I) for every input."""
    with torch.no_grad():
        for layer in (model.head.fc_mu, model.head.fc_var):
            layer.weight.zero_()
            layer.bias.zero_()
        model.head.fc_var.bias.fill_(log_var)


def test_vamp_prior_with_one_standard_normal_component_is_the_standard_normal():
    model = small(VampVAE, num_components=1)
    zero_encoder_head(model)
    z = torch.randn(7, 4)
    with torch.no_grad():
        torch.testing.assert_close(model.prior_distribution().log_prob(z), normal_log_prob(z, 0 * z, 0 * z))


def test_vamp_kld_is_log_posterior_minus_log_mixture_prior():
    model, x = small(VampVAE, num_components=3), images()
    with torch.no_grad():
        output = model(x)
        _, terms = model.regularizer(output, 1.0)
        mu_k, log_var_k = model.encode(model.prior.pseudo_inputs())  # (3, D)
    per_component = normal_log_prob(output.z[:, None], mu_k, log_var_k)  # (B, 3)
    log_prior = torch.log(per_component.exp().mean(-1))
    expected = (normal_log_prob(output.z, output.mu, output.log_var) - log_prior).mean()
    torch.testing.assert_close(terms["KLD"], expected)
    pseudo = model.prior.pseudo_inputs()
    assert pseudo.shape == (3, 1, 16, 16) and 0 <= pseudo.min() and pseudo.max() <= 1  # the data range


def test_vamp_prior_is_the_same_in_training_and_leaves_batch_norm_statistics_alone():
    model = small(VampVAE, num_components=5)
    with torch.no_grad():
        evaluation = model.prior_distribution().components
        model.train()
        before = [b.clone() for b in model.buffers()]
        training = model.prior_distribution().components
    torch.testing.assert_close(training.mu, evaluation.mu)
    torch.testing.assert_close(training.log_var, evaluation.log_var)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))
    assert model.encoder.layers[0][1].training  # BatchNorm back in training mode


def test_vamp_samples_come_from_the_mixture_of_pseudo_input_posteriors():
    model = small(VampVAE, num_components=2)
    with torch.no_grad():
        model.head.fc_var.weight.zero_()
        model.head.fc_var.bias.fill_(-12.0)  # sigma ~ 0.0025: samples sit on the component means
        model.head.fc_mu.bias.copy_(torch.tensor([3.0, -3.0, 0.0, 1.0]))  # far from N(0, I)'s mean
        torch.manual_seed(0)
        z = model.sample_prior(2000, torch.device("cpu"))
        means = model.prior_distribution().components.mu  # (2, D)
        assert model.sample(3, "cpu").shape == (3, 1, 16, 16)
    nearest = torch.cdist(z, means).min(dim=1)
    assert nearest.values.max() < 0.05  # every sample is a draw from one component
    counts = torch.bincount(nearest.indices, minlength=2)
    assert counts.min() > 900  # components picked uniformly
    torch.testing.assert_close(z.mean(0), means.mean(0), atol=0.1, rtol=0)


# -- HVAE ------------------------------------------------------------------------------------------


def test_hvae_sampling_path_and_shapes():
    model, x = small(HVAE, latent2_dim=3, prior_width=8), images()
    with torch.no_grad():
        output = model(x)
        assert output.recons.shape == x.shape
        assert output.z.shape == output.prior_mu.shape == (4, 4)
        assert output.z2.shape == output.mu2.shape == (4, 3)
        assert [t.shape for t in model.encode(x)] == [(4, 4), (4, 4), (4, 3), (4, 3)]
        torch.manual_seed(0)
        z1 = model.sample_prior(5, torch.device("cpu"))
        torch.manual_seed(0)
        z2 = torch.randn(5, 3)  # z2 ~ N(0, I) first ...
        prior = model.top_down(z2)  # ... then z1 ~ p(z1|z2) with the next draws
        expected = prior.mu + prior.std * torch.randn(5, 4)
        assert model.sample(5, "cpu").shape == (5, 1, 16, 16)
    torch.testing.assert_close(z1, expected)


def test_hvae_kl_terms_are_the_closed_forms_per_level():
    model, x = small(HVAE, latent2_dim=3, prior_width=8), images()
    with torch.no_grad():
        output = model(x)
        penalty, terms = model.regularizer(output, 0.5)
    kld_z2 = closed_form_kl(output.mu2, output.log_var2, 0 * output.mu2, 0 * output.mu2).mean()
    prior = model.top_down(output.z2)  # p(z1|z2) at the sampled z2
    kld_z1 = closed_form_kl(output.mu, output.log_var, prior.mu, prior.log_var).mean()
    torch.testing.assert_close(terms["KLD_z1"], kld_z1)
    torch.testing.assert_close(terms["KLD_z2"], kld_z2)
    torch.testing.assert_close(penalty, 0.5 * (kld_z1 + kld_z2))


# -- LVAE ------------------------------------------------------------------------------------------


def test_precision_weighting_on_constructed_gaussians():
    a = DiagonalGaussian(torch.tensor([1.0, 0.0]), torch.tensor([0.0, math.log(1e-6)]))
    b = DiagonalGaussian(torch.tensor([3.0, 5.0]), torch.tensor([0.0, 0.0]))
    merged = precision_weighted(a, b)
    # equal variances: the mean halfway, the variance halved; a precise estimate dominates
    torch.testing.assert_close(merged.mu, torch.tensor([2.0, 5.0 / (1 + 1e6)]))
    torch.testing.assert_close(merged.log_var, torch.log(torch.tensor([0.5, 1 / (1 + 1e6)])))


def test_lvae_kl_per_rung_is_against_the_top_down_prior():
    model, x = small(LVAE, latent_dims=[4, 3, 2], rung_width=8), images()
    with torch.no_grad():
        output = model(x)
        losses = model.loss_function(*output, M_N=1.0)
        estimates = model.bottom_up(x)
    assert model.loss_keys == ("loss", "Reconstruction_Loss", "KLD", "KLD_z1", "KLD_z2", "KLD_z3")
    assert [z.shape[1] for z in output.latents] == [4, 3, 2]
    # the top rung: q(z_3|x) is the bottom-up estimate itself, against N(0, I)
    torch.testing.assert_close(output.posteriors[2].mu, estimates[2].mu)
    top = output.posteriors[2].mu, output.posteriors[2].log_var
    torch.testing.assert_close(losses["KLD_z3"], closed_form_kl(*top, 0 * top[0], 0 * top[0]).mean())
    total = losses["KLD_z3"]
    for i in (1, 0):  # z_2, then z_1
        prior = model.top_down[i](output.latents[i + 1])  # p(z_i | z_{i+1}) at the sampled z_{i+1}
        torch.testing.assert_close(output.priors[i].mu, prior.mu)
        est_precision, prior_precision = estimates[i].log_var.neg().exp(), prior.log_var.neg().exp()
        variance = 1 / (est_precision + prior_precision)  # Eqs. 18-19, written out
        mu = (estimates[i].mu * est_precision + prior.mu * prior_precision) * variance
        torch.testing.assert_close(output.posteriors[i].mu, mu)
        torch.testing.assert_close(output.posteriors[i].log_var, variance.log())
        kl = closed_form_kl(mu, variance.log(), prior.mu, prior.log_var).mean()
        torch.testing.assert_close(losses[f"KLD_z{i + 1}"], kl)
        posterior = DiagonalGaussian(mu, variance.log())
        torch.testing.assert_close(losses[f"KLD_z{i + 1}"], posterior.kl(prior).mean())
        total = total + kl
    torch.testing.assert_close(losses["KLD"], total)
    assert model.sample_prior(5, torch.device("cpu")).shape == (5, 4)


def test_lvae_warmup_scales_the_kl_by_the_step():
    model, x = small(LVAE, latent_dims=[4, 2], rung_width=8, warmup_steps=100), images()
    with torch.no_grad():
        output = model(x)
        full, terms = model.regularizer(output, 2.0)  # no step given: the warm-up is over
        assert model.regularizer(output, 2.0, global_step=0)[0] == 0
        torch.testing.assert_close(model.regularizer(output, 2.0, global_step=25)[0], full / 4)
    torch.testing.assert_close(full, 2.0 * terms["KLD"])


# -- TwoStageVAE -----------------------------------------------------------------------------------


def test_twostage_stage1_is_the_learned_variance_gaussian_nll():
    model, x = small(TwoStageVAE, stage2_width=8), images()
    with torch.no_grad():
        model.log_gamma.fill_(-0.7)
        recons = model.generate(x)
        nll = model.reconstruction_loss(recons, x)
    log_likelihood = Normal(recons, math.exp(-0.35)).log_prob(x).sum(dim=(1, 2, 3))  # gamma = e^-0.7
    expected = -log_likelihood - 0.5 * 256 * math.log(2 * math.pi)  # without the constant
    torch.testing.assert_close(nll, expected)


def test_twostage_stage2_sends_no_gradient_into_stage1():
    model, x = small(TwoStageVAE, stage2_width=8), images()
    output = model(x)
    u_posterior = DiagonalGaussian(output.u_mu, output.u_log_var)
    stage2 = model.stage2.loss(output.z.detach(), output.z_recons, u_posterior, 1.0)["Stage2_Loss"]
    stage1_params = [p for name, p in model.named_parameters() if not name.startswith("stage2.")]
    stage2_params = list(model.stage2.parameters())
    to_stage1 = torch.autograd.grad(stage2, stage1_params, allow_unused=True, retain_graph=True)
    assert all(g is None for g in to_stage1)
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(stage2, stage2_params, retain_graph=True))
    # the joint loss moves stage 1 exactly as stage 1's own loss does
    joint = torch.autograd.grad(model.loss_function(*output)["loss"], stage1_params, retain_graph=True)
    alone = torch.autograd.grad(VanillaVAE.loss_function(model, *output)["loss"], stage1_params)
    for a, b in zip(joint, alone):
        torch.testing.assert_close(a, b)


def test_twostage_samples_through_both_decoders():
    model = small(TwoStageVAE, stage2_width=8)
    with torch.no_grad():
        torch.manual_seed(0)
        z = model.sample_prior(5, torch.device("cpu"))
        torch.manual_seed(0)
        expected = model.stage2.decoder(torch.randn(5, 4))  # u ~ N(0, I) -> z_hat(u)
        assert model.sample(5, "cpu").shape == (5, 1, 16, 16)
    torch.testing.assert_close(z, expected)
