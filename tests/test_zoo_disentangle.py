"""The disentanglement and conditioning family: beta-VAE (H/B), beta-TCVAE, DIP-VAE (I/II),
FactorVAE, ConditionalVAE. Each special term is checked against an independent computation on a
constructed case; the registry-wide contract lives in test_zoo_contract.py."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import fit_one_epoch
from torch.distributions import Normal, kl_divergence

from vaezoo.losses.dip import dip_penalty, latent_covariance
from vaezoo.losses.total_correlation import kl_decomposition, log_importance_weights, permute_dims
from vaezoo.models.beta_vae import BetaVAE
from vaezoo.models.betatc_vae import BetaTCVAE
from vaezoo.models.cvae import ConditionalVAE
from vaezoo.models.dip_vae import DIPVAE
from vaezoo.models.factor_vae import FactorVAE
from vaezoo.models.vanilla_vae import VAEOutput
from vaezoo.registry import create_model

TINY = {"hidden_dims": [8, 8], "image_size": 16, "recon_reduction": "sum"}


def images(n: int = 6, channels: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, 16, 16, generator=torch.Generator().manual_seed(seed))


def summed_squared_error(recons: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return ((recons - x) ** 2).sum(dim=(1, 2, 3)).mean()


def analytic_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Per-example KL(q(z|x) || N(0, I)) from torch.distributions, (B,)."""
    q = Normal(mu, torch.exp(0.5 * log_var))
    return kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(dim=1)


def monte_carlo_kl(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log q(z|x) - log p(z) at the sampled z, (B,)."""
    log_q = Normal(mu, torch.exp(0.5 * log_var)).log_prob(z).sum(dim=1)
    return log_q - Normal(0.0, 1.0).log_prob(z).sum(dim=1)


# -- beta-VAE ---------------------------------------------------------------------------------------
def test_beta_vae_h_loss_is_recon_plus_beta_times_kl():
    torch.manual_seed(0)
    model = BetaVAE(1, 4, loss_type="H", beta=3.0, **TINY)
    x = images()
    out = model(x)
    losses = model.loss_function(*out, M_N=0.5, global_step=7)
    recon, kl = summed_squared_error(out.recons, x), analytic_kl(out.mu, out.log_var).mean()
    assert set(losses) == set(model.loss_keys) == {"loss", "Reconstruction_Loss", "KLD"}
    assert torch.allclose(losses["loss"], recon + 3.0 * 0.5 * kl, rtol=1e-5)
    assert torch.allclose(losses["KLD"], kl, rtol=1e-5) and losses["KLD"] > 0


def test_beta_vae_b_capacity_follows_the_schedule_and_depends_only_on_global_step():
    torch.manual_seed(0)
    model = BetaVAE(1, 4, loss_type="B", gamma=10.0, max_capacity=20.0, capacity_anneal_steps=100, **TINY)
    x = images()
    out = model(x)
    recon, kl = summed_squared_error(out.recons, x), analytic_kl(out.mu, out.log_var).mean()
    for step, capacity in [(0, 0.0), (25, 5.0), (50, 10.0), (100, 20.0), (10_000, 20.0)]:
        losses = model.loss_function(*out, M_N=0.5, global_step=step)
        assert losses["Capacity"].item() == pytest.approx(capacity)
        assert torch.allclose(losses["loss"], recon + 10.0 * 0.5 * (kl - capacity).abs(), rtol=1e-5)
    # Validation calls at one step do not advance it; a rebuilt model (a resumed run) at step 60 agrees.
    for _ in range(5):
        assert model.loss_function(*out, global_step=60)["Capacity"].item() == pytest.approx(12.0)
    resumed = create_model("BetaVAE", **model.config)
    assert resumed.loss_function(*out, global_step=60)["Capacity"].item() == pytest.approx(12.0)
    assert model.loss_function(*out)["Capacity"].item() == 20.0  # plain use: the end of the schedule


def test_beta_vae_rejects_an_unknown_loss_type_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"'C'.*'H'.*'B'"):
        BetaVAE(1, 4, loss_type="C", **TINY)


# -- total correlation: the minibatch estimators ---------------------------------------------------
def gaussian_batch(mixing: torch.Tensor, n: int = 2000, variance: float = 0.3) -> tuple[torch.Tensor, ...]:
    """mu = mixing @ eps, z ~ N(mu, variance): the aggregate posterior is exactly
    N(0, mixing mixing^T + variance I), whose TC has a closed form."""
    d = mixing.shape[0]
    mu = torch.randn(n, d) @ mixing.T
    log_var = torch.full((n, d), math.log(variance))
    z = mu + math.sqrt(variance) * torch.randn(n, d)
    covariance = mixing @ mixing.T + variance * torch.eye(d)
    gaussian_tc = 0.5 * (torch.log(torch.diagonal(covariance)).sum() - torch.logdet(covariance))
    return z, mu, log_var, gaussian_tc


@pytest.mark.parametrize(("sampling", "dataset_size"), [("mws", None), ("mss", 20_000)])
def test_tc_is_zero_for_independent_latents_and_positive_for_correlated_ones(sampling, dataset_size):
    torch.manual_seed(0)
    z, mu, log_var, _ = gaussian_batch(torch.eye(3))
    independent = kl_decomposition(z, mu, log_var, sampling, dataset_size).total_correlation.mean()
    assert abs(independent.item()) < 0.03
    z, mu, log_var, expected = gaussian_batch(torch.tensor([[1.0, 0, 0], [0.95, 0.3, 0], [0, 0, 1.0]]))
    correlated = kl_decomposition(z, mu, log_var, sampling, dataset_size).total_correlation.mean()
    assert expected.item() > 0.35 and correlated.item() == pytest.approx(expected.item(), abs=0.03)


@pytest.mark.parametrize(("sampling", "dataset_size"), [("mws", None), ("mss", 500), ("mss", 100_000)])
def test_mi_tc_and_dimensionwise_kl_add_up_to_the_kl(sampling, dataset_size):
    torch.manual_seed(1)
    mu, log_var = torch.randn(400, 4) * 1.5, torch.randn(400, 4) * 0.5 - 1.0  # q(z) wider than p(z)
    z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
    terms = kl_decomposition(z, mu, log_var, sampling, dataset_size)
    total = terms.mutual_information + terms.total_correlation + terms.dimensionwise_kl
    assert torch.allclose(total, monte_carlo_kl(z, mu, log_var), atol=1e-4)  # Eq. 2, term by term
    assert total.mean().item() == pytest.approx(analytic_kl(mu, log_var).mean().item(), rel=0.05)
    assert terms.mutual_information.mean() > 0 and terms.dimensionwise_kl.mean() > 0


def test_stratified_weights_follow_appendix_c1():
    weights = log_importance_weights(4, "mss", dataset_size=10).exp()
    assert torch.allclose(weights.sum(dim=1), torch.ones(4))
    assert torch.allclose(torch.diagonal(weights), torch.full((4,), 1 / 10))  # own posterior: 1/N
    others = sorted(weights[0, 1:].tolist())  # one stratum of N - M + 1 points, M - 2 of N / (M - 1)
    assert others == pytest.approx([(10 - 4 + 1) / (10 * 3), 1 / 3, 1 / 3])
    assert torch.allclose(log_importance_weights(5, "mws").exp(), torch.full((5, 5), 0.2))


def test_beta_tcvae_loss_uses_its_own_dataset_size_and_weighs_the_three_terms():
    with pytest.raises(ValueError, match="dataset_size"):
        BetaTCVAE(1, 4, sampling="mss", dataset_size=0, **TINY)  # not given: derived (tests/test_compat_*)
    torch.manual_seed(0)
    model = BetaTCVAE(1, 4, alpha=1.0, beta=1.0, gamma=1.0, dataset_size=1000, **TINY)
    x = images(8)
    out = model(x)
    half, full = model.loss_function(*out, M_N=0.5), model.loss_function(*out, M_N=1.0)
    assert torch.equal(half["TC_Loss"], full["TC_Loss"])  # the estimator never reads the KL weight
    kl = monte_carlo_kl(out.z, out.mu, out.log_var).mean()
    assert torch.allclose(half["loss"], summed_squared_error(out.recons, x) + 0.5 * kl, rtol=1e-5)
    weighted = BetaTCVAE(1, 4, alpha=2.0, beta=5.0, gamma=3.0, dataset_size=1000, **TINY)
    weighted.load_state_dict(model.state_dict())
    terms = weighted.loss_function(*out, M_N=1.0)
    expected = full["Reconstruction_Loss"] + 2 * full["MI_Loss"] + 5 * full["TC_Loss"] + 3 * full["KLD"]
    assert torch.allclose(terms["loss"], expected, rtol=1e-5)


# -- DIP-VAE ----------------------------------------------------------------------------------------
def decorrelated(n: int, d: int, variance: float = 1.0, offset: float = 3.0) -> torch.Tensor:
    """A batch whose covariance (over the batch, divided by n) is exactly variance * I, mean offset."""
    centred = torch.randn(n, d, dtype=torch.float64)
    centred = centred - centred.mean(dim=0)
    q, _ = torch.linalg.qr(centred)  # orthonormal columns, each orthogonal to the ones vector
    return (q * math.sqrt(n * variance) + offset).float()


def dip_output(mu: torch.Tensor, log_var: torch.Tensor) -> VAEOutput:
    x = torch.zeros(mu.shape[0], 1, 16, 16)
    return VAEOutput(recons=x, input=x, mu=mu, log_var=log_var)


def test_dip_terms_vanish_for_a_decorrelated_unit_variance_batch():
    mu = decorrelated(64, 4)  # mean 3 on every dimension: the covariance must be centred over the batch
    assert torch.allclose(latent_covariance(mu), torch.eye(4), atol=1e-5)
    assert dip_penalty(latent_covariance(mu), 5.0, 50.0).item() == pytest.approx(0.0, abs=1e-6)
    model = DIPVAE(1, 4, dip_type="i", lambda_offdiag=5.0, lambda_diag=50.0, **TINY)
    _, terms = model.regularizer(dip_output(mu, torch.zeros_like(mu)), kl_weight=1.0)
    assert terms["DIP_Loss"].item() == pytest.approx(0.0, abs=1e-5)


def test_dip_penalty_is_positive_for_correlated_or_scaled_latents():
    torch.manual_seed(0)
    base = torch.randn(256, 3)
    mu = torch.stack([base[:, 0], base[:, 0] + 0.5 * base[:, 1], 2 * base[:, 2]], dim=1)
    covariance = torch.cov(mu.T, correction=0)  # independent: torch's population covariance
    diagonal = torch.diagonal(covariance)
    expected = 2.0 * (covariance - torch.diag(diagonal)).pow(2).sum() + 7.0 * (diagonal - 1).pow(2).sum()
    assert torch.allclose(dip_penalty(latent_covariance(mu), 2.0, 7.0), expected, rtol=1e-5)
    assert expected > 1.0


def test_dip_ii_adds_the_mean_posterior_variance_on_the_diagonal():
    mu = decorrelated(64, 4, variance=0.5)
    log_var = torch.log(torch.rand(64, 4) * 0.2 + 0.4)  # posterior variances in [0.4, 0.6]
    expected = 0.5 * torch.eye(4) + torch.diag(log_var.exp().mean(dim=0))
    assert torch.allclose(latent_covariance(mu, log_var), expected, atol=1e-5)
    half_variance = torch.full_like(mu, math.log(0.5))  # Cov[mu] = 0.5 I plus E[sigma^2] = 0.5 I
    dip_losses = {
        dip_type: DIPVAE(1, 4, dip_type=dip_type, lambda_offdiag=1.0, lambda_diag=1.0, **TINY)
        .regularizer(dip_output(mu, half_variance), kl_weight=1.0)[1]["DIP_Loss"]
        .item()
        for dip_type in ("i", "ii")
    }
    assert dip_losses["ii"] == pytest.approx(0.0, abs=1e-5)
    assert dip_losses["i"] == pytest.approx(4 * (0.5 - 1) ** 2)  # Cov[mu] alone: diagonal 0.5


# -- FactorVAE --------------------------------------------------------------------------------------
def test_permute_dims_shuffles_each_dimension_across_the_batch():
    torch.manual_seed(0)
    base = torch.randn(500, 2)
    z = torch.stack([base[:, 0], base[:, 0], base[:, 1]], dim=1)  # dims 0 and 1 perfectly correlated
    shuffled = permute_dims(z)
    assert torch.equal(shuffled.sort(dim=0).values, z.sort(dim=0).values)  # each column's values kept
    assert abs(torch.corrcoef(shuffled[:, :2].T)[0, 1].item()) < 0.2  # the dependence is gone
    assert not torch.equal(shuffled[:, 0], shuffled[:, 1])


def tiny_factor_vae() -> FactorVAE:
    torch.manual_seed(0)
    return FactorVAE(
        1, 4, gamma=3.0, discriminator_units=16, discriminator_layers=2, discriminator_lr=0.01, **TINY
    )


def test_factor_vae_losses_match_the_discriminator():
    model = tiny_factor_vae()
    x = images(8)
    out = model(x)
    losses = model.loss_function(*out, M_N=0.5)
    logits = model.discriminator(out.z)
    tc = (logits[:, 0] - logits[:, 1]).mean()
    expected = summed_squared_error(out.recons, x) + 0.5 * analytic_kl(out.mu, out.log_var).mean() + 3.0 * tc
    assert torch.allclose(losses["VAE_TC_Loss"], tc) and torch.allclose(losses["loss"], expected, rtol=1e-5)
    losses["loss"].backward()  # the VAE step first, then the discriminator on the same output
    auxiliary = model.auxiliary_loss(out)
    model.zero_grad()
    auxiliary["loss"].backward()
    assert model.head.fc_mu.weight.grad is None  # detached codes: nothing flows back into the encoder
    assert all(p.grad is not None for p in model.auxiliary_parameters())
    assert 0.0 <= auxiliary["D_Accuracy"].item() <= 1.0


def test_factor_vae_discriminator_has_its_own_optimizer_and_both_sets_train():
    model = tiny_factor_vae()
    discriminator_before = [p.detach().clone() for p in model.discriminator.parameters()]
    encoder_before = model.head.fc_mu.weight.detach().clone()
    trainer, _ = fit_one_epoch(model, images(24), lr=1e-3)
    main, auxiliary = trainer.optimizers
    main_ids = {id(p) for group in main.param_groups for p in group["params"]}
    discriminator_ids = {id(p) for p in model.discriminator.parameters()}
    assert not main_ids & discriminator_ids
    assert {id(p) for p in auxiliary.param_groups[0]["params"]} == discriminator_ids
    assert auxiliary.param_groups[0]["lr"] == 0.01
    assert all(not torch.equal(p, q) for p, q in zip(model.discriminator.parameters(), discriminator_before))
    assert not torch.equal(model.head.fc_mu.weight, encoder_before)
    assert {"train/aux_D_TC_Loss_epoch", "train/aux_D_Accuracy_epoch", "val/VAE_TC_Loss"} <= set(
        trainer.callback_metrics
    )


# -- ConditionalVAE ---------------------------------------------------------------------------------
def tiny_cvae(num_classes: int = 3) -> ConditionalVAE:
    torch.manual_seed(0)
    return ConditionalVAE(2, latent_dim=4, num_classes=num_classes, **TINY).eval()


def test_cvae_one_hot_encodes_class_indices_and_uses_float_labels_as_they_are():
    model = tiny_cvae()
    x = images(3, channels=2)
    indices = torch.tensor([0, 2, 1])
    one_hot = torch.eye(3)[indices]
    assert torch.equal(model.label_vectors(indices, 3), one_hot)
    factors = torch.tensor([[0.5, -1.0, 2.0]])
    assert torch.equal(model.label_vectors(factors, 3), factors.expand(3, 3))  # one row, broadcast
    with torch.no_grad():
        torch.manual_seed(1)
        from_indices = model(x, labels=indices)
        torch.manual_seed(1)
        from_vectors = model(x, labels=one_hot)
        assert torch.equal(from_indices.recons, from_vectors.recons) and from_indices.recons.shape == x.shape
        same_z = torch.zeros(2, 4)
        drawn = model.decode(torch.cat([same_z, one_hot[:2]], dim=1))  # classes 0 and 2
        assert not torch.allclose(drawn[0], drawn[1])  # the decoder reads the label
        assert model.sample(5, "cpu", labels=torch.tensor([1])).shape == (5, 2, 16, 16)
    assert model.encoder.layers[0][0].in_channels == 3  # the image's 2 channels plus the label channel


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (None, "needs labels"),
        (torch.rand(3, 4), r"shape \(3, 4\) do not fit"),
        (torch.rand(2, 3), "2 label rows for 3 images"),
        (torch.tensor([0, 3, 1]), r"\[0, 3\)"),
    ],
)
def test_cvae_labels_that_do_not_fit_are_clear_errors(labels, match):
    model = tiny_cvae()
    with pytest.raises(ValueError, match=match):
        model(images(3, channels=2), labels=labels)


def test_cvae_sample_needs_one_label_row_per_sample():
    model = tiny_cvae()
    with pytest.raises(ValueError, match="needs labels"):
        model.sample(4, "cpu")
    with pytest.raises(ValueError, match="3 label rows for 4 images"):
        model.sample(4, "cpu", labels=torch.tensor([0, 1, 2]))
