"""The Gaussian-family models take PyTorch-VAE's constructor arguments with PyTorch-VAE's meaning.

tests/test_pytorch_vae_models.py runs PyTorch-VAE's own calls; this file checks, model by model,
that a PyTorch-VAE argument -- given by position or by its keyword -- lands in the same vaezoo
argument (same recorded config, same loss) as vaezoo's own keyword, that the knobs vaezoo added for
PyTorch-VAE (InfoVAE's and LogCoshVAE's ``beta``, MSSIMVAE's ``size_average``) weigh what they
weigh there and change nothing when left out, and the two call conventions PyTorch-VAE has and
vaezoo's trainer does not use: BetaTCVAE's data set size derived from ``M_N``, and FactorVAE's
``optimizer_idx``.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from vaezoo.arguments import Alias, merged_class_table
from vaezoo.config import load_config
from vaezoo.registry import create_model, get_model_class
from vaezoo.training.run import data_model_arguments

REPO = Path(__file__).resolve().parents[1]
SMALL = {"hidden_dims": [8, 8], "image_size": 16}
DIMS = [8, 8]  # hidden_dims, where it is given by position

# PyTorch-VAE's constructors at HEAD a6896b9 (models/*.py), in order, **kwargs left out.
PYTORCH_VAE_SIGNATURES: dict[str, list[str]] = {
    "VanillaVAE": ["in_channels", "latent_dim", "hidden_dims"],
    "BetaVAE": [
        "in_channels", "latent_dim", "hidden_dims", "beta", "gamma", "max_capacity", "Capacity_max_iter",
        "loss_type",
    ],
    "BetaTCVAE": ["in_channels", "latent_dim", "hidden_dims", "anneal_steps", "alpha", "beta", "gamma"],
    "InfoVAE": [
        "in_channels", "latent_dim", "hidden_dims", "alpha", "beta", "reg_weight", "kernel_type", "latent_var",
    ],
    "LogCoshVAE": ["in_channels", "latent_dim", "hidden_dims", "alpha", "beta"],
    "MSSIMVAE": ["in_channels", "latent_dim", "hidden_dims", "window_size", "size_average"],
    "SWAE": [
        "in_channels", "latent_dim", "hidden_dims", "reg_weight", "wasserstein_deg", "num_projections",
        "projection_dist",
    ],
    "WAE_MMD": ["in_channels", "latent_dim", "hidden_dims", "reg_weight", "kernel_type", "latent_var"],
    "VampVAE": ["in_channels", "latent_dim", "hidden_dims", "num_components"],
    "DFCVAE": ["in_channels", "latent_dim", "hidden_dims", "alpha", "beta"],
    "DIPVAE": ["in_channels", "latent_dim", "hidden_dims", "lambda_diag", "lambda_offdiag"],
    "FactorVAE": ["in_channels", "latent_dim", "hidden_dims", "gamma"],
    "IWAE": ["in_channels", "latent_dim", "hidden_dims", "num_samples"],
    "MIWAE": ["in_channels", "latent_dim", "hidden_dims", "num_samples", "num_estimates"],
}  # fmt: skip
MODELS = list(PYTORCH_VAE_SIGNATURES)


def build(name: str, *args: Any, **kwargs: Any) -> torch.nn.Module:
    """The model, quietly: DFCVAE's random-VGG and BetaTCVAE's dataset_size warnings are expected here."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        warnings.filterwarnings("ignore", message=".*no dataset_size given.*")
        return create_model(name, *args, **kwargs)


def images(n: int = 6, size: int = 16) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 1, size, size)


def losses(model: torch.nn.Module, x: torch.Tensor, seed: int = 2, **kwargs: Any) -> dict[str, torch.Tensor]:
    """One forward pass and its loss, with the random draws (z, prior samples) fixed by ``seed``."""
    torch.manual_seed(seed)
    return model.loss_function(*model(x), **kwargs)


def same_weights(target: torch.nn.Module, source: torch.nn.Module) -> torch.nn.Module:
    target.load_state_dict(source.state_dict())
    return target


# -- the signatures ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_positional_parameters_are_pytorch_vaes_and_the_rest_keyword_only(name):
    cls = get_model_class(name)
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    positional = [p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    aliases = merged_class_table(cls, "argument_aliases")
    target = {key: (a.target if isinstance(a, Alias) else a) for key, a in aliases.items()}
    assert positional == [target.get(key, key) for key in PYTORCH_VAE_SIGNATURES[name]]
    others = {p.kind for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD}
    assert others <= {inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD}


def test_vanilla_vaes_own_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        create_model("VanillaVAE", 1, 4, DIMS, 16)  # image_size is not PyTorch-VAE's 4th argument
    model = build("VanillaVAE", 1, 4, DIMS, image_size=16, recon_reduction="sum")
    assert model.config["image_size"] == 16 and model.config["recon_reduction"] == "sum"


# Each model called positionally as PyTorch-VAE orders its arguments, and by vaezoo's keywords.
POSITIONAL_EQUALS_KEYWORD = [
    ("BetaVAE", (2.0, 50.0, 10.0, 300, "B"),
     dict(beta=2.0, gamma=50.0, max_capacity=10.0, capacity_anneal_steps=300, loss_type="B")),
    ("BetaTCVAE", (50, 2.0, 3.0, 4.0), dict(anneal_steps=50, alpha=2.0, beta=3.0, gamma=4.0)),
    ("InfoVAE", (-2.0, 3.0, 50.0, "rbf", 1.5),
     dict(alpha=-2.0, beta=3.0, reg_weight=50.0, kernel_type="rbf", latent_var=1.5)),
    ("LogCoshVAE", (5.0, 2.0), dict(alpha=5.0, beta=2.0)),
    ("MSSIMVAE", (7, False), dict(window_size=7, size_average=False)),
    ("SWAE", (50.0, 3.0, 20, "cauchy"),
     dict(reg_weight=50.0, wasserstein_deg=3.0, num_projections=20, projection_dist="cauchy")),
    ("WAE_MMD", (5000.0, "rbf", 2.0), dict(reg_weight=5000.0, kernel_type="rbf", latent_var=2.0)),
    ("VampVAE", (7,), dict(num_components=7)),
    ("DFCVAE", (2.0, 0.25), dict(alpha=2.0, beta=0.25)),
    ("DIPVAE", (0.05, 0.1), dict(lambda_diag=0.05, lambda_offdiag=0.1)),
    ("FactorVAE", (6.4,), dict(gamma=6.4)),
    ("IWAE", (7,), dict(num_samples=7)),
    ("MIWAE", (2, 4), dict(num_samples=2, num_estimates=4)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "args", "kwargs"), POSITIONAL_EQUALS_KEYWORD, ids=[c[0] for c in POSITIONAL_EQUALS_KEYWORD]
)
def test_a_positional_call_in_pytorch_vaes_order_is_the_keyword_call(name, args, kwargs):
    extra = {"dataset_size": 1000} if name == "BetaTCVAE" else {}
    positional = build(name, 1, 4, DIMS, *args, image_size=16, **extra)
    keyword = build(name, 1, 4, hidden_dims=DIMS, image_size=16, **kwargs, **extra)
    assert positional.config == keyword.config
    for key, value in kwargs.items():
        assert positional.config[key] == value
    rebuilt = build(name, **positional.config)  # the recorded config rebuilds the model
    assert rebuilt.config == positional.config


# -- BetaVAE: Capacity_max_iter ---------------------------------------------------------------------
def test_capacity_max_iter_is_capacity_anneal_steps_recorded_as_an_int():
    model = build("BetaVAE", 1, 4, Capacity_max_iter=1e5, **SMALL)
    assert model.config["capacity_anneal_steps"] == 100_000 and "Capacity_max_iter" not in model.config
    assert isinstance(model.config["capacity_anneal_steps"], int)
    assert build("BetaVAE", 1, 4, DIMS, 4, 1000.0, 25, 1e5, image_size=16).capacity_anneal_steps == 100_000
    pvae = build("BetaVAE", 1, 4, gamma=10.0, max_capacity=25, Capacity_max_iter=400, **SMALL)
    ours = same_weights(
        build("BetaVAE", 1, 4, gamma=10.0, max_capacity=25, capacity_anneal_steps=400, **SMALL), pvae
    )
    x = images()
    for step in (0, 100, 1000):
        a, b = (losses(m, x, M_N=0.5, global_step=step) for m in (pvae, ours))
        assert torch.equal(a["loss"], b["loss"]) and torch.equal(a["Capacity"], b["Capacity"])
    assert losses(pvae, x, global_step=100)["Capacity"].item() == pytest.approx(25 * 100 / 400)


# -- InfoVAE: beta, the reconstruction weight ----------------------------------------------------------
def test_info_vae_beta_weighs_the_reconstruction_term_and_defaults_to_none():
    x = images()
    default = build("InfoVAE", 1, 4, alpha=-9.0, reg_weight=110.0, **SMALL)
    assert default.config["beta"] == 1.0
    one = same_weights(build("InfoVAE", 1, 4, alpha=-9.0, beta=1.0, reg_weight=110.0, **SMALL), default)
    weighted = same_weights(build("InfoVAE", 1, 4, alpha=-9.0, beta=10.5, reg_weight=110.0, **SMALL), default)
    base, same, terms = (losses(m, x, M_N=0.25) for m in (default, one, weighted))
    assert torch.equal(base["loss"], same["loss"])  # leaving beta out is beta = 1, the old loss
    recon = base["Reconstruction_Loss"]
    assert torch.equal(terms["Reconstruction_Loss"], recon)  # logged unweighted, as PyTorch-VAE logs it
    expected = 10.5 * recon + (1 + 9.0) * 0.25 * terms["KLD"] + (-9.0 + 110.0 - 1) * terms["MMD"]
    torch.testing.assert_close(terms["loss"], expected)
    torch.testing.assert_close(terms["loss"] - base["loss"], 9.5 * recon)
    with pytest.raises(ValueError, match="beta"):
        build("InfoVAE", 1, 4, beta=-1.0, **SMALL)


# -- LogCoshVAE: beta, the KL weight multiplier -------------------------------------------------------
def test_log_cosh_vae_beta_multiplies_the_kl_weight_and_defaults_to_one():
    x = images()
    default = build("LogCoshVAE", 1, 4, alpha=10.0, **SMALL)
    assert default.config["beta"] == 1.0
    weighted = same_weights(build("LogCoshVAE", 1, 4, alpha=10.0, beta=10.0, **SMALL), default)
    base, terms = losses(default, x, M_N=0.5), losses(weighted, x, M_N=0.5)
    torch.testing.assert_close(base["loss"], base["Reconstruction_Loss"] + 0.5 * base["KLD"])
    torch.testing.assert_close(terms["loss"], terms["Reconstruction_Loss"] + 10.0 * 0.5 * terms["KLD"])
    assert torch.equal(losses(weighted, x, M_N=5.0)["loss"], losses(default, x, M_N=50.0)["loss"])


# -- MSSIMVAE: size_average ----------------------------------------------------------------------------
def test_mssim_vae_size_average_false_sums_the_reconstruction_term_over_the_batch():
    x = images(5)
    mean = build("MSSIMVAE", 1, 4, **SMALL)
    assert mean.config["size_average"] is True and mean.size_average
    summed = same_weights(build("MSSIMVAE", 1, 4, size_average=False, **SMALL), mean)
    averaged, total = losses(mean, x, M_N=0.5), losses(summed, x, M_N=0.5)
    torch.testing.assert_close(total["Reconstruction_Loss"], 5 * averaged["Reconstruction_Loss"])
    assert torch.equal(total["KLD"], averaged["KLD"])  # the KL term stays a batch mean
    torch.testing.assert_close(total["loss"], total["Reconstruction_Loss"] + 0.5 * total["KLD"])


# -- BetaTCVAE: the data set size derived from M_N -------------------------------------------------------
def test_beta_tcvae_without_dataset_size_warns_once_and_derives_it_as_pytorch_vae():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = create_model("BetaTCVAE", 1, 4, anneal_steps=100, **SMALL)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "pass dataset_size" in messages[0], messages
    x = images(8)
    for kl_weight in (0.00025, 0.5, 1.0):  # N = B / M_N: 32000, 16 and, in validation, B
        explicit = same_weights(build("BetaTCVAE", 1, 4, dataset_size=round(8 / kl_weight), **SMALL), model)
        derived, given = losses(model, x, M_N=kl_weight), losses(explicit, x, M_N=kl_weight)
        for key in ("loss", "MI_Loss", "TC_Loss", "KLD"):
            assert torch.equal(derived[key], given[key]), (kl_weight, key)
    with pytest.raises(ValueError, match="M_N > 0"):
        losses(model, x, M_N=0.0)


def test_beta_tcvae_warns_only_when_it_has_to_derive_the_data_set_size():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_model("BetaTCVAE", 1, 4, dataset_size=1000, **SMALL)
        create_model("BetaTCVAE", 1, 4, sampling="mws", **SMALL)  # needs no data set size


def test_beta_tcvae_from_the_trainer_gets_the_data_set_size_from_the_data_and_no_warning():
    config = load_config(REPO / "configs" / "betatc_vae.yaml")
    data = SimpleNamespace(
        channels=1, image_size=16, label_dim=0, num_train=737, kind="images", output_activation=None
    )
    kwargs = data_model_arguments(config, data)  # what training/run.py's prepare passes
    assert kwargs["dataset_size"] == 737
    kwargs = {key: value for key, value in kwargs.items() if key != "name"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = create_model(config.model_name, **{**kwargs, "hidden_dims": DIMS})
    assert model.dataset_size == 737 and model.tc_dataset_size(8, 0.00025) == 737


# -- FactorVAE: optimizer_idx ------------------------------------------------------------------------------
def test_factor_vae_optimizer_idx_0_is_the_vae_loss_and_1_the_discriminators():
    model = build("FactorVAE", 1, 4, gamma=6.4, **SMALL)
    x = images()
    out = model(x)
    vae = model.loss_function(*out, M_N=0.5, optimizer_idx=0, batch_idx=0)
    assert set(vae) == set(model.loss_keys) == {"loss", "Reconstruction_Loss", "KLD", "VAE_TC_Loss"}
    torch.manual_seed(3)
    plain = model.loss_function(*out, M_N=0.5)  # vaezoo's trainer passes no optimizer_idx
    assert torch.equal(plain["loss"], vae["loss"])
    vae["loss"].backward()  # PyTorch-VAE's VAE step, then its discriminator step on the same output
    model.zero_grad()
    torch.manual_seed(4)
    disc = model.loss_function(*out, optimizer_idx=1, batch_idx=0)  # no M_N, as PyTorch-VAE calls it
    torch.manual_seed(4)
    auxiliary = model.auxiliary_loss(out)
    assert "D_TC_Loss" in disc and torch.equal(disc["D_TC_Loss"], auxiliary["D_TC_Loss"])
    disc["loss"].backward()
    discriminator = {id(p) for p in model.discriminator.parameters()}
    assert all(p.grad is None for p in model.parameters() if id(p) not in discriminator)  # z detached
    assert any(p.grad is not None for p in model.discriminator.parameters())
    with pytest.raises(ValueError, match="optimizer_idx"):
        model.loss_function(*out, optimizer_idx=2)
