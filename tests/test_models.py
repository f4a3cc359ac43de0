"""VanillaVAE and the BaseVAE API: shapes, losses with known values, PyTorch-VAE compatibility."""

import math

import numpy as np
import pytest
import torch

import vaezoo
from vaezoo.losses import gaussian_kl, squared_error
from vaezoo.models import BaseVAE, VanillaVAE
from vaezoo.registry import UnknownModelError, create_model, get_model_class, list_models


@pytest.mark.parametrize(
    ("channels", "size", "hidden_dims"),
    [(3, 64, None), (1, 64, None), (1, 32, [16, 32, 64]), (3, 96, [8, 16, 32, 64, 128]), (4, 16, [8, 8])],
)
def test_forward_shapes(channels, size, hidden_dims):
    model = VanillaVAE(channels, 12, hidden_dims, image_size=size)
    x = torch.rand(3, channels, size, size)
    out = model(x)
    assert out.recons.shape == x.shape and out.input is x
    assert out.mu.shape == (3, 12) and out.log_var.shape == (3, 12)
    recons, inp, mu, log_var = out  # unpacks like PyTorch-VAE's list
    assert model.generate(x).shape == x.shape
    assert model.sample(5, "cpu").shape == (5, channels, size, size)
    mu2, log_var2 = model.encode(x)
    assert model.decode(mu2).shape == x.shape


def test_pytorch_vae_positional_constructor_and_defaults():
    model = VanillaVAE(3, 128)
    assert [layer[0].out_channels for layer in model.encoder.layers] == [32, 64, 128, 256, 512]
    assert model(torch.rand(2, 3, 64, 64))[0].shape == (2, 3, 64, 64)
    assert vaezoo.create_model("VanillaVAE", in_channels=3, latent_dim=128).latent_dim == 128


def test_hidden_dims_of_the_caller_are_not_mutated():
    dims = [8, 16, 32]
    VanillaVAE(1, 4, dims, image_size=32)
    assert dims == [8, 16, 32]


def test_unsupported_image_size_says_which_sizes_work():
    with pytest.raises(ValueError, match=r"image_size 50 .* multiple of 2\^5 = 32, e.g. 32, 64, 96, 128"):
        VanillaVAE(3, 8, image_size=50)


@pytest.mark.parametrize(("activation", "low", "high"), [("sigmoid", 0, 1), ("tanh", -1, 1)])
def test_output_range_follows_the_activation(activation, low, high):
    model = VanillaVAE(1, 4, [8, 8], image_size=16, output_activation=activation)
    y = model.decode(torch.randn(16, 4) * 100)
    assert y.min() >= low and y.max() <= high and y.min() < (low + high) / 2 < y.max()


@pytest.mark.parametrize("device", [0, "cpu", torch.device("cpu"), None])
def test_sample_accepts_int_str_and_torch_device(device):
    model = VanillaVAE(1, 4, [8, 8], image_size=16)
    samples = model.sample(2, device)
    assert samples.shape == (2, 1, 16, 16) and samples.device.type == "cpu"


def test_kld_equals_the_closed_form_and_is_non_negative():
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    log_var = torch.tensor([[0.0, 0.0], [math.log(4.0), math.log(0.25)]])
    # KL(N(mu, s^2) || N(0, 1)) = 0.5 * (mu^2 + s^2 - 1 - ln s^2) per dimension
    expected_second = 0.5 * (1 + 4 - 1 - math.log(4)) + 0.5 * (4 + 0.25 - 1 - math.log(0.25))
    assert torch.allclose(gaussian_kl(mu, log_var), torch.tensor([0.0, expected_second]))
    assert (gaussian_kl(torch.randn(100, 8) * 3, torch.randn(100, 8) * 3) >= 0).all()


def test_kld_matches_torch_distributions():
    mu, log_var = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * log_var))
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu, log_var), expected, atol=1e-5)


def test_loss_dict_keys_scale_and_sign():
    torch.manual_seed(0)
    model = VanillaVAE(1, 6, [8, 16], image_size=16, recon_reduction="sum")
    x = torch.rand(4, 1, 16, 16)
    out = model(x)
    losses = model.loss_function(*out, M_N=0.5)
    assert set(losses) == {"loss", "Reconstruction_Loss", "KLD"}
    kld = gaussian_kl(out.mu, out.log_var).mean()
    recon = ((out.recons - x) ** 2).sum(dim=(1, 2, 3)).mean()
    assert losses["KLD"] >= 0 and torch.isclose(losses["KLD"], kld)
    assert torch.isclose(losses["Reconstruction_Loss"], recon)
    assert torch.isclose(losses["loss"], recon + 0.5 * kld)
    mean_model = VanillaVAE(1, 6, [8, 16], image_size=16)  # PyTorch-VAE's pixel mean
    mean_model.load_state_dict(model.state_dict())
    assert torch.isclose(squared_error(out.recons, x, "mean").mean() * 256, recon)


def test_config_is_recorded_and_rebuilds_the_model():
    model = create_model("VAE", 1, 5, hidden_dims=(4, 8), image_size=16)
    assert model.config == {
        "in_channels": 1,
        "latent_dim": 5,
        "hidden_dims": [4, 8],
        "image_size": 16,
        "output_activation": "sigmoid",
        "recon_reduction": None,
        "likelihood": "mse",
        "likelihood_scale": "learned",
        "likelihood_std": 0.1,
        "architecture": "conv",
    }
    assert model.recon_reduction == "mean"  # None: PyTorch-VAE's pixel mean for the squared error
    clone = create_model("VanillaVAE", **model.config)
    clone.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(clone.eval().encode(x)[0], model.eval().encode(x)[0])


def test_registry_names_aliases_and_errors():
    assert "VanillaVAE" in list_models()
    assert {"VAE", "GaussianVAE"} <= set(list_models(include_aliases=True))
    assert get_model_class("VAE") is get_model_class("GaussianVAE") is VanillaVAE
    with pytest.raises(UnknownModelError, match="unknown model 'VanilaVAE'. Did you mean 'VanillaVAE'"):
        create_model("VanilaVAE", 1, 2)
    with pytest.raises(ValueError, match="registered twice"):
        vaezoo.register_model(type("VanillaVAE", (BaseVAE,), {}))


# pythae's model classes (benchmark_VAE's pythae.models) and vaezoo's model of each. Two more:
# DisentangledBetaVAE is the BetaVAE with loss_type "B" (Burgess et al.'s capacity objective), and
# pythae's HVAE is the HamiltonianVAE (PyTorch-VAE's hierarchical HVAE holds the name here).
PYTHAE_MODELS = {
    "AE": "AE", "VAE": "VanillaVAE", "BetaVAE": "BetaVAE",
    "BetaTCVAE": "BetaTCVAE", "FactorVAE": "FactorVAE", "IWAE": "IWAE", "MIWAE": "MIWAE", "PIWAE": "PIWAE",
    "CIWAE": "CIWAE", "MSSSIM_VAE": "MSSIMVAE", "WAE_MMD": "WAE_MMD", "INFOVAE_MMD": "InfoVAE",
    "VAMP": "VampVAE", "SVAE": "SVAE", "PoincareVAE": "PoincareVAE", "Adversarial_AE": "AAE",
    "VAEGAN": "VAEGAN", "VQVAE": "VQVAE", "RAE_L2": "RAE_L2", "RAE_GP": "RAE_GP", "RHVAE": "RHVAE",
    "VAE_LinNF": "FlowVAE", "VAE_IAF": "IAFVAE",
}  # fmt: skip


def test_pythae_model_names_find_their_vaezoo_models():
    for pythae_name, ours in PYTHAE_MODELS.items():
        assert get_model_class(pythae_name).__name__ == ours, pythae_name
    assert get_model_class("HamiltonianVAE").__name__ == "HamiltonianVAE"
    assert get_model_class("HVAE").__name__ == "HVAE"  # PyTorch-VAE's hierarchical one


def test_every_model_file_is_registered():
    import pkgutil

    import vaezoo.models as package

    modules = {m.name for m in pkgutil.iter_modules(package.__path__)} - {"base", "autoencoder"}  # bases
    registered_modules = {get_model_class(n).__module__.rsplit(".", 1)[-1] for n in list_models()}
    assert modules == registered_modules


@pytest.mark.slow  # 9 s with AMX, 15 s without AVX-512
def test_fifty_steps_on_a_fixed_dsprites_batch_halve_the_loss():
    from vaezoo.data import render_dsprites

    rng = np.random.default_rng(0)
    classes = np.stack([rng.integers(0, size, 16) for size in (3, 6, 40, 32, 32)], axis=1)
    x = torch.from_numpy(render_dsprites(classes)).float().unsqueeze(1)  # (16, 1, 64, 64) in {0, 1}
    torch.manual_seed(0)
    model = VanillaVAE(1, 10, recon_reduction="sum")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(50):
        loss = model.loss_function(*model(x), M_N=1.0)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.5 * losses[0], (losses[0], losses[-5:])


def test_a_misspelled_constructor_argument_is_an_error_naming_the_nearest_one():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'bta' \(did you mean 'beta'\?\)"):
        create_model("BetaVAE", in_channels=1, latent_dim=4, bta=10.0)


def test_pytorch_vae_keywords_are_translated_and_recorded_under_our_names():
    model = create_model("VanillaVAE", 1, 4, img_size=32, name="VanillaVAE")  # as PyTorch-VAE's run.py
    assert model.config["image_size"] == 32 and "img_size" not in model.config and "name" not in model.config
    with pytest.raises(TypeError, match="both 'img_size' and 'image_size'"):
        create_model("VanillaVAE", 1, 4, img_size=32, image_size=32)
    with pytest.raises(TypeError, match="name='BetaVAE', which names another model"):
        create_model("VanillaVAE", 1, 4, name="BetaVAE")


def test_an_image_size_the_stack_cannot_halve_names_the_sizes_that_fit():
    from vaezoo.registry import create_model

    with pytest.raises(
        ValueError,
        match=r"image_size 28 does not fit 3 stride-2 layers .* multiple of 2\^3 = 8, e\.g\. 8, 16, 24, 32",
    ):
        create_model("VanillaVAE", in_channels=1, latent_dim=4, hidden_dims=[8, 16, 32], image_size=28)
    model = create_model("VanillaVAE", in_channels=1, latent_dim=4, hidden_dims=[8, 16, 32], image_size=40)
    assert model(torch.rand(2, 1, 40, 40))[0].shape == (2, 1, 40, 40)  # not a power of two, a multiple of 8
