"""The adversarial family: AAE and VAE-GAN. Each objective is checked against a hand computation
with a discriminator whose output is known, and each objective's gradients are checked to reach only
the parameters it trains; the registry-wide contract lives in test_zoo_contract.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vaezoo.config import TrainConfig
from vaezoo.models.aae import AAE
from vaezoo.models.autoencoder import PointMassOutput
from vaezoo.models.vae_gan import VAEGAN
from vaezoo.registry import create_model
from vaezoo.training import VAEModule

TINY = {"hidden_dims": [8, 8], "image_size": 16, "recon_reduction": "sum"}


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def tiny_aae(**kwargs) -> AAE:
    torch.manual_seed(0)
    return create_model("AAE", 1, 4, **{**TINY, "discriminator_units": 16, **kwargs})


def tiny_vae_gan(**kwargs) -> VAEGAN:
    torch.manual_seed(0)
    settings = {**TINY, "discriminator_dims": [4, 4], "discriminator_units": 8, **kwargs}
    return create_model("VAEGAN", 1, 4, **settings)


class ConstantLatentDiscriminator(nn.Module):
    """Two logits (prior, encoder) that are the same for every code."""

    def __init__(self, logits: tuple[float, float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(z.shape[0], 2)


class FixedFeatureDiscriminator(nn.Module):
    """Features W @ vec(x) for a fixed matrix W, and a constant logit."""

    def __init__(self, weight: torch.Tensor, logit: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)  # (F, C*H*W)
        self.logit = nn.Parameter(torch.tensor(logit))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logit.expand(x.shape[0]), x.flatten(1) @ self.weight.T


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


# -- known answers with a constant discriminator ------------------------------------------------------
def test_aae_losses_are_the_bce_of_a_constant_discriminator():
    model = tiny_aae(adversarial_weight=2.5)
    model.discriminator = ConstantLatentDiscriminator((0.7, -0.3))  # D(z) = sigmoid(1.0) for every z
    x = images()
    output = model(x)
    losses = model.loss_function(*output)
    generator = softplus(-1.0)  # -log sigmoid(1)
    torch.testing.assert_close(losses["Generator_Loss"], torch.tensor(generator))
    torch.testing.assert_close(losses["loss"], losses["Reconstruction_Loss"] + 2.5 * generator)
    expected_recon = ((output.recons - x) ** 2).sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(losses["Reconstruction_Loss"], expected_recon.detach())
    aux = model.auxiliary_loss(output)
    # prior draws labelled real: -log sigmoid(1); codes labelled fake: -log(1 - sigmoid(1))
    torch.testing.assert_close(aux["loss"], torch.tensor(0.5 * (softplus(-1.0) + softplus(1.0))))
    assert aux["D_Accuracy"].item() == 0.5  # "real" for every input: right on the prior half only


def test_vae_gan_gan_terms_are_the_bce_of_a_constant_discriminator():
    model = tiny_vae_gan()
    model.discriminator = FixedFeatureDiscriminator(torch.randn(5, 256), logit=-0.4)
    output = model(images())
    losses = model.loss_function(*output, M_N=1.0)
    generator = 2 * softplus(0.4)  # -log Dis(x_hat) - log Dis(x_p), Dis = sigmoid(-0.4)
    torch.testing.assert_close(losses["Generator_Loss"], torch.tensor(generator))
    expected = losses["KLD"] + model.gamma * losses["Reconstruction_Loss"] + generator
    torch.testing.assert_close(losses["loss"].detach(), expected)
    aux = model.auxiliary_loss(output)
    # real: -log sigmoid(-0.4); reconstructions and samples: -log(1 - sigmoid(-0.4)) each
    torch.testing.assert_close(aux["loss"], torch.tensor(softplus(0.4) + 2 * softplus(-0.4)))
    assert aux["D_Accuracy"].item() == pytest.approx(2 / 3)  # "fake" for all: right on two thirds


def test_vae_gan_feature_term_is_the_gaussian_nll_of_a_fixed_feature_map():
    weight = torch.randn(7, 256, generator=torch.Generator().manual_seed(1))
    x, recons = images(4, seed=2), images(4, seed=3)
    expected = 0.5 * ((x.flatten(1) - recons.flatten(1)) @ weight.T).pow(2).sum(dim=1)  # (B,)
    model = tiny_vae_gan()
    model.discriminator = FixedFeatureDiscriminator(weight, logit=0.0)
    torch.testing.assert_close(model.reconstruction_loss(recons, x), expected)
    with_pixels = tiny_vae_gan(pixel_weight=2.0)
    with_pixels.discriminator = FixedFeatureDiscriminator(weight, logit=0.0)
    pixel = ((recons - x) ** 2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(with_pixels.reconstruction_loss(recons, x), expected + 2.0 * pixel)


def test_vae_gan_discriminator_features_are_normalised_per_image():
    model = tiny_vae_gan()
    logits, features = model.discriminator(images(3))
    assert logits.shape == (3,) and features.shape == (3, 4 * 4 * 4)
    torch.testing.assert_close(features.mean(dim=1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(features.var(dim=1, unbiased=False), torch.ones(3), atol=2e-2, rtol=0)  # eps


# -- each objective's gradients reach only its own parameters ----------------------------------------
@pytest.mark.parametrize("build", [tiny_aae, tiny_vae_gan], ids=["AAE", "VAEGAN"])
def test_each_objective_has_gradients_on_its_own_parameters_only(build):
    model = build()
    own = {id(p) for p in model.auxiliary_parameters()}
    assert own == {id(p) for p in model.discriminator.parameters()}
    output = model(images())
    model.loss_function(*output)["loss"].backward()
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.grad is not None for p in model.parameters() if id(p) not in own)
    model.zero_grad(set_to_none=True)
    model.auxiliary_loss(output)["loss"].backward()
    assert all(p.grad is not None for p in model.discriminator.parameters())
    assert all(p.grad is None for p in model.parameters() if id(p) not in own)


@pytest.mark.parametrize("build", [tiny_aae, tiny_vae_gan], ids=["AAE", "VAEGAN"])
def test_a_step_of_one_objective_leaves_the_other_networks_weights_unchanged(build):
    """One SGD optimizer over *every* parameter: a main step moves only the autoencoder, a
    discriminator step only the discriminator (parameters without gradients are not stepped)."""
    model = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def snapshot() -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in model.named_parameters()}

    def changed(before: dict[str, torch.Tensor]) -> set[str]:
        return {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}

    discriminator = {f"discriminator.{name}" for name, _ in model.discriminator.named_parameters()}
    output = model(images())
    before = snapshot()
    optimizer.zero_grad(set_to_none=True)
    model.loss_function(*output)["loss"].backward()
    optimizer.step()
    moved = changed(before)
    assert moved and not moved & discriminator
    before = snapshot()
    optimizer.zero_grad(set_to_none=True)
    model.auxiliary_loss(output)["loss"].backward()
    optimizer.step()
    assert changed(before) == discriminator


def encoder_and_decoder_grads(model: VAEGAN, loss: torch.Tensor) -> tuple[list, list]:
    encoder = [*model.encoder.parameters(), *model.head.parameters()]
    grads = torch.autograd.grad(loss, [*encoder, *model.decoder.parameters()], allow_unused=True)
    return list(grads[: len(encoder)]), list(grads[len(encoder) :])


def test_vae_gan_routes_algorithm_1s_objectives_to_the_encoder_and_the_decoder():
    """Encoder: grad(KL + L_llike); decoder: grad(gamma * L_llike + G), G the generator's GAN loss."""
    model = tiny_vae_gan(gamma=3.0).eval()  # eval: batch norm uses running stats, passes agree
    x = images()
    torch.manual_seed(5)
    output = model(x)
    enc_main, dec_main = encoder_and_decoder_grads(model, model.loss_function(*output, M_N=1.0)["loss"])

    torch.manual_seed(5)
    output = model(x)  # the same z and prior draws
    kl = (-0.5 * (1 + output.log_var - output.mu**2 - output.log_var.exp()).sum(dim=1)).mean()
    _, real_features = model.discriminator(x)
    _, recon_features = model.discriminator(output.recons)
    llike = 0.5 * (real_features - recon_features).pow(2).sum(dim=1).mean()
    enc_expected, _ = encoder_and_decoder_grads(model, kl + llike)
    torch.manual_seed(5)
    output = model(x)
    logit_recon, recon_features = model.discriminator(output.recons)
    logit_fake, _ = model.discriminator(output.fake)
    llike = 0.5 * (real_features.detach() - recon_features).pow(2).sum(dim=1).mean()
    generator = F.softplus(-logit_recon).mean() + F.softplus(-logit_fake).mean()
    _, dec_expected = encoder_and_decoder_grads(model, 3.0 * llike + generator)
    for got, want in zip(enc_main + dec_main, enc_expected + dec_expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


# -- the AAE's discriminator learns the prior from the aggregate posterior ----------------------------
def test_aae_discriminator_separates_a_shifted_aggregate_posterior_from_the_prior():
    model = tiny_aae(discriminator_units=32)
    optimizer = torch.optim.Adam(model.auxiliary_parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    accuracies = []
    for _ in range(60):
        codes = torch.randn(64, 4, generator=generator) + 2.0  # q(z) = N(2, I) against p(z) = N(0, I)
        output = PointMassOutput(recons=torch.zeros(1), input=torch.zeros(1), z=codes)
        aux = model.auxiliary_loss(output)
        optimizer.zero_grad()
        aux["loss"].backward()
        optimizer.step()
        accuracies.append(aux["D_Accuracy"].item())
    # the Bayes classifier of N(0, I) against N(2, I) in 4-D is right 1 - Phi(-2) ~ 97.7 % of the time
    assert sum(accuracies[:3]) / 3 < 0.8 < 0.9 < sum(accuracies[-10:]) / 10


@pytest.mark.parametrize("build", [tiny_aae, tiny_vae_gan], ids=["AAE", "VAEGAN"])
def test_the_trainer_gives_the_discriminator_its_own_optimizer(build):
    model = build(discriminator_lr=3e-4)
    main, auxiliary = VAEModule(model, TrainConfig(lr=1e-3, scheduler="none")).configure_optimizers()
    discriminator = {id(p) for p in model.discriminator.parameters()}
    main_params = {id(p) for group in main.param_groups for p in group["params"]}
    assert main_params == {id(p) for p in model.parameters()} - discriminator
    assert {id(p) for p in auxiliary.param_groups[0]["params"]} == discriminator
    assert main.param_groups[0]["lr"] == 1e-3 and auxiliary.param_groups[0]["lr"] == 3e-4
