"""Known-answer tests for the deterministic autoencoders: AE (reconstruction only) and RAE-L2 / RAE-GP
(Ghosh et al. 2020, Eq. 11): the latent-norm term, the decoder's L2 penalty, the gradient penalty of
a linear decoder, and generation through the ex-post Gaussian mixture."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaezoo.evaluation.samplers import GaussianMixtureSampler, NormalSampler, embed_batches, sample_images
from vaezoo.models.rae import gradient_penalty, latent_norm, squared_weights
from vaezoo.registry import create_model

SMALL = {"hidden_dims": [8, 16], "image_size": 16}  # a 16 px, two-layer stack: fast model tests


def smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    """Blurry random 1x16x16 images in [0, 1]."""
    coarse = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return nn.functional.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)


def small(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, 1, 4, **SMALL, recon_reduction="sum", **kwargs)


# -- AE -------------------------------------------------------------------------------------------
def test_ae_loss_is_the_reconstruction_alone_with_no_kl():
    model = small("AE")
    x = smooth_images(4)
    output = model(x)
    losses = model.loss_function(*output, M_N=0.3)
    assert set(losses) == {"loss", "Reconstruction_Loss"} and model.kl_terms == ()
    expected = (output.recons - x).pow(2).flatten(1).sum(1).mean()  # summed squared error per image
    torch.testing.assert_close(losses["loss"], expected)
    assert not model.samples_from_prior
    with pytest.raises(NotImplementedError, match="--sampler gmm"):
        model.sample(2)
    with pytest.raises(ValueError, match="no prior"):
        NormalSampler(model)


# -- the latent-norm term ---------------------------------------------------------------------------
def test_latent_norm_is_half_the_squared_norm():
    z = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(latent_norm(z), torch.tensor([12.5, 0.5, 0.0]))


@pytest.mark.parametrize("name", ["RAE_L2", "RAE_GP"])
def test_rae_loss_is_eq_11(name):
    """loss = mean[recon] + beta * mean[0.5 ||z||^2] + reg_weight * L_REG, each term as logged."""
    model = small(name, beta=0.7, reg_weight=0.01)
    x = smooth_images(4)
    output = model(x)
    losses = model.loss_function(*output, M_N=123.0)  # M_N plays no part
    penalty = losses["Decoder_L2" if name == "RAE_L2" else "Gradient_Penalty"]
    torch.testing.assert_close(losses["Latent_Norm"], 0.5 * output.z.pow(2).sum(1).mean())
    torch.testing.assert_close(
        losses["loss"].detach(), losses["Reconstruction_Loss"] + 0.7 * losses["Latent_Norm"] + 0.01 * penalty
    )
    assert not model.samples_from_prior


# -- the L2 penalty -----------------------------------------------------------------------------------
def test_l2_term_is_the_sum_of_the_decoders_squared_parameters():
    model = small("RAE_L2", reg_weight=0.5)
    output = model(smooth_images(2))
    expected = sum(float(p.detach().double().pow(2).sum()) for p in model.decoder.parameters())
    losses = model.loss_function(*output)
    assert losses["Decoder_L2"].item() == pytest.approx(expected, rel=1e-5)
    linear = nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]]))
        linear.bias.copy_(torch.tensor([0.5, -0.5]))
    assert squared_weights(linear).item() == pytest.approx(15.5)
    # the term's gradient is weight decay on the decoder alone: 2 * reg_weight * theta, none on the encoder
    model.zero_grad()
    (model.reg_weight * squared_weights(model.decoder)).backward()
    weight = next(model.decoder.parameters())
    torch.testing.assert_close(weight.grad, 2 * 0.5 * weight.detach())
    assert all(p.grad is None for p in model.encoder.parameters())


# -- the gradient penalty -----------------------------------------------------------------------------
def linear_decoder(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, 5)  # D = 3 latents -> 5 outputs; its Jacobian is the weight W (5, 3)


def test_gradient_penalty_of_a_linear_decoder_with_the_ones_probe_is_the_squared_column_sums():
    decoder = linear_decoder()
    z = torch.randn(4, 3, requires_grad=True)
    penalty = gradient_penalty(decoder, z, probe="ones")  # grad of sum(W z + b) = W^T 1
    expected = decoder.weight.detach().sum(0).pow(2).sum()
    torch.testing.assert_close(penalty, expected.expand(4))
    # create_graph: the penalty trains the decoder, d/dW sum_j (sum_i W_ij)^2 = 2 * column sums
    penalty.sum().backward()
    torch.testing.assert_close(decoder.weight.grad, 4 * 2 * decoder.weight.detach().sum(0).expand(5, 3))


def test_gradient_penalty_with_the_gaussian_probe_estimates_the_frobenius_norm():
    decoder = linear_decoder()
    weight = decoder.weight.detach()
    z = torch.randn(3, 3)
    torch.manual_seed(5)
    penalty = gradient_penalty(decoder, z)
    torch.manual_seed(5)
    v = torch.randn(3, 5)  # the probe the penalty drew
    torch.testing.assert_close(penalty, (v @ weight).pow(2).sum(1))  # ||W^T v||^2 per example
    many = gradient_penalty(decoder, torch.zeros(20_000, 3)).mean()
    assert many.item() == pytest.approx(weight.pow(2).sum().item(), rel=0.05)  # E = ||W||_F^2


def test_gradient_penalty_of_a_nonlinear_decoder_and_without_a_graph():
    z = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    square = lambda z: z**2  # noqa: E731 - J = diag(2z): the ones probe gives ||2z||^2
    torch.testing.assert_close(gradient_penalty(square, z, probe="ones"), 4 * z.pow(2).sum(1))
    with torch.no_grad():  # validation: the decoder reruns on a detached copy, the result has no graph
        penalty = gradient_penalty(square, z, probe="ones")
    assert not penalty.requires_grad
    torch.testing.assert_close(penalty, 4 * z.pow(2).sum(1))
    with pytest.raises(ValueError, match="probe"):
        gradient_penalty(square, z, probe="twos")  # type: ignore[arg-type]


def test_rae_gp_penalty_reaches_the_encoder():
    model = small("RAE_GP", probe="ones")
    output = model(smooth_images(4))
    model.decoder_penalty(output).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


# -- generation through the ex-post Gaussian mixture ----------------------------------------------------
@pytest.mark.parametrize("name", ["AE", "RAE_L2", "RAE_GP"])
def test_a_trained_model_generates_through_the_gmm(name):
    model = small(name)
    x = smooth_images(32, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        optimizer.zero_grad()
        model.loss_function(*model(x))["loss"].backward()
        optimizer.step()
    codes = embed_batches(model, [x[:16], x[16:]])
    assert codes.shape == (32, 4)
    sampler = GaussianMixtureSampler(num_components=2).fit(codes)
    images = sample_images(model, sampler, 6, seed=0)
    assert images.shape == (6, 1, 16, 16) and torch.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1  # the sigmoid decoder's images
    torch.testing.assert_close(images, sample_images(model, sampler, 6, seed=0))  # seeded


def test_training_a_model_without_a_prior_says_so_once_without_a_warning(tmp_path, caplog):
    """A declared lack of prior (samples_from_prior False) is a note in the log, not a UserWarning."""
    import logging
    import warnings

    from vaezoo.cli import main

    args = ["train", "-c", "ae", "--model.hidden_dims", "[8, 16]", "--model.latent_dim", "3",
            "--data.image_size", "16", "--data.subset", "200", "--train.batch_size", "16",
            "--train.max_epochs", "2", "--train.limit_train_batches", "2", "--train.limit_val_batches", "1",
            "--logging.progress_bar", "none", "--logging.num_images", "16",
            "--logging.save_dir", str(tmp_path / "runs")]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        assert main(args) == 0
    assert not [w for w in caught if "no sample grid" in str(w.message)]
    assert sum("no sample grid" in record.getMessage() for record in caplog.records) == 1
