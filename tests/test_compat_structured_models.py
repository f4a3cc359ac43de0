"""PyTorch-VAE's constructor arguments on the structured models: CVAE, HVAE, LVAE, JointVAE,
CategoricalVAE, VQVAE, GammaVAE, TwoStageVAE.

Positional arguments come in PyTorch-VAE's order (github.com/AntixK/PyTorch-VAE, HEAD a6896b9,
``models/*.py``), every other argument is keyword-only, and each of its keywords means here what it
means there: the same config and weights as our own name, the same role in the loss. That models
run as PyTorch-VAE's callers run them is checked in test_pytorch_vae_models.py.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import pytest
import torch

from vaezoo.arguments import Alias, merged_class_table
from vaezoo.config import resolve_model_section
from vaezoo.models.cat_vae import CategoricalOutput
from vaezoo.models.joint_vae import JointOutput, JointVAE
from vaezoo.models.lvae import LVAE
from vaezoo.models.twostage_vae import TwoStageVAE
from vaezoo.registry import create_model, get_model_class

SMALL = {"hidden_dims": [8, 16], "image_size": 16}

# PyTorch-VAE's positional parameters, in its order (its models/*.py)
PYTORCH_VAE_POSITIONAL: dict[str, list[str]] = {
    "ConditionalVAE": ["in_channels", "num_classes", "latent_dim", "hidden_dims", "img_size"],
    "HVAE": ["in_channels", "latent1_dim", "latent2_dim", "hidden_dims", "img_size", "pseudo_input_size"],
    "LVAE": ["in_channels", "latent_dims", "hidden_dims"],
    "JointVAE": [
        "in_channels", "latent_dim", "categorical_dim",
        "latent_min_capacity", "latent_max_capacity", "latent_gamma", "latent_num_iter",
        "categorical_min_capacity", "categorical_max_capacity", "categorical_gamma", "categorical_num_iter",
        "hidden_dims", "temperature", "anneal_rate", "anneal_interval", "alpha",
    ],
    "CategoricalVAE": [
        "in_channels", "latent_dim", "categorical_dim", "hidden_dims",
        "temperature", "anneal_rate", "anneal_interval", "alpha",
    ],
    "VQVAE": ["in_channels", "embedding_dim", "num_embeddings", "hidden_dims", "beta", "img_size"],
    "GammaVAE": ["in_channels", "latent_dim", "hidden_dims", "gamma_shape", "prior_shape", "prior_rate"],
    "TwoStageVAE": ["in_channels", "latent_dim", "hidden_dims", "hidden_dims2"],
}  # fmt: skip
# PyTorch-VAE parameters that take a position of ours without being one of our keywords' aliases
BY_POSITION = {("LVAE", "latent_dims"): "latent_dim"}  # a list in the latent_dim position


def positional_names(cls: type) -> list[str]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]


def ours(cls: type, name: str) -> str:
    alias = merged_class_table(cls, "argument_aliases").get(name, name)
    return alias.target if isinstance(alias, Alias) else str(alias)


@pytest.mark.parametrize("name", sorted(PYTORCH_VAE_POSITIONAL))
def test_positional_parameters_are_pytorch_vaes_in_its_order_and_the_rest_keyword_only(name):
    cls = get_model_class(name)
    ignored = merged_class_table(cls, "ignored_arguments")
    expected = [
        BY_POSITION.get((name, p), ours(cls, p)) for p in PYTORCH_VAE_POSITIONAL[name] if p not in ignored
    ]
    assert positional_names(cls) == expected
    # ... and every PyTorch-VAE keyword is accepted: one of ours, an alias of one, or ignored
    params = set(inspect.signature(cls.__init__).parameters)
    for keyword in PYTORCH_VAE_POSITIONAL[name]:
        assert keyword in ignored or ours(cls, keyword) in params, keyword


def build(name: str, *args: Any, seed: int = 0, **kwargs: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HVAE's pseudo_input_size
        return create_model(name, *args, **kwargs)


def run_loss(model: torch.nn.Module, channels: int = 3, seed: int = 1, **loss_kwargs: Any) -> dict:
    torch.manual_seed(seed)
    x = torch.rand(4, channels, 16, 16)
    labels = torch.tensor([0, 1, 2, 1])
    output = model(x, labels=labels)
    return model.loss_function(*output, M_N=0.5, labels=labels, **loss_kwargs)


# (model, PyTorch-VAE's call, the same model in vaezoo's names)
SAME_MODEL = [
    ("CVAE", (3, 3, 6), {**SMALL}, (3,), {"latent_dim": 6, "num_classes": 3, **SMALL}),
    (
        "ConditionalVAE",
        (),
        {"in_channels": 3, "num_classes": 3, "latent_dim": 6, "img_size": 16, "hidden_dims": [8, 16]},
        (3,),
        {"latent_dim": 6, "num_classes": 3, **SMALL},
    ),
    (
        "HVAE",
        (3,),
        {
            "latent1_dim": 6,
            "latent2_dim": 3,
            "img_size": 16,
            "pseudo_input_size": 128,
            "hidden_dims": [8, 16],
        },
        (3, 6),
        {"latent2_dim": 3, **SMALL},
    ),
    ("HVAE", (3, 6, 3, [8, 16], 16), {}, (3,), {"latent_dim": 6, "latent2_dim": 3, **SMALL}),
    ("LVAE", (3, [6, 4, 2], [8, 16]), {"image_size": 16}, (3, 6), {"latent_dims": [6, 4, 2], **SMALL}),
    ("LVAE", (3,), {"latent_dims": [6, 4, 2], **SMALL}, (3, 6), {"latent_dims": [6, 4, 2], **SMALL}),
    (
        "JointVAE",
        (3, 6, 5, 1.0, 20.0, 10.0, 1000, 0.5, 1.5, 20.0, 2000, [8, 16], 0.8, 1e-3, 10, 3.0),
        {"image_size": 16},
        (3, 6),
        {
            "categorical_dim": 5,
            "cont_min_capacity": 1.0,
            "cont_max_capacity": 20.0,
            "cont_gamma": 10.0,
            "cont_capacity_steps": 1000,
            "disc_min_capacity": 0.5,
            "disc_max_capacity": 1.5,
            "disc_gamma": 20.0,
            "disc_capacity_steps": 2000,
            "temperature": 0.8,
            "anneal_rate": 1e-3,
            "anneal_interval": 10,
            "recon_weight": 3.0,
            **SMALL,
        },
    ),
    (
        "JointVAE",  # the keys of PyTorch-VAE's configs/joint_vae.yaml
        (),
        {
            "in_channels": 3,
            "latent_dim": 6,
            "categorical_dim": 5,
            "latent_min_capacity": 1.0,
            "latent_max_capacity": 20.0,
            "latent_gamma": 10.0,
            "latent_num_iter": 1000.0,
            "categorical_min_capacity": 0.5,
            "categorical_max_capacity": 1.5,
            "categorical_gamma": 20.0,
            "categorical_num_iter": 2000,
            "temperature": 0.8,
            "anneal_rate": 1e-3,
            "anneal_interval": 10,
            "alpha": 3.0,
            "img_size": 16,
            "hidden_dims": [8, 16],
        },
        (3, 6, 5, 1.0, 20.0, 10.0, 1000, 0.5, 1.5, 20.0, 2000, [8, 16], 0.8, 1e-3, 10, 3.0),
        {"image_size": 16},
    ),
    (
        "GumbelVAE",
        (3, 4, 5, [8, 16], 0.8, 1e-3, 10, 3.0),
        {"image_size": 16},
        (3, 4),
        {
            "categorical_dim": 5,
            "temperature": 0.8,
            "anneal_rate": 1e-3,
            "anneal_interval": 10,
            "recon_weight": 3.0,
            **SMALL,
        },
    ),
    (
        "CategoricalVAE",
        (),
        {"in_channels": 3, "latent_dim": 4, "categorical_dim": 5, "alpha": 3.0, **SMALL},
        (3, 4, 5),
        {"recon_weight": 3.0, **SMALL},
    ),
    ("VQVAE", (3, 4, 8, [8, 16], 0.5, 16), {}, (3, 4, 8), {"beta": 0.5, **SMALL}),
    (
        "VQVAE",
        (),
        {"in_channels": 3, "embedding_dim": 4, "num_embeddings": 8, "img_size": 16, "beta": 0.5},
        (3, 4, 8),
        {"beta": 0.5, "image_size": 16},
    ),
    (
        "GammaVAE",
        (3, 4, [8, 16], 3.0, 1.5, 2.0),
        {"image_size": 16},
        (3, 4),
        {"shape_boosts": 3, "prior_shape": 1.5, "prior_rate": 2.0, **SMALL},
    ),
    (
        "GammaVAE",
        (),
        {
            "in_channels": 3,
            "latent_dim": 4,
            "gamma_shape": 3.0,
            "prior_shape": 1.5,
            "prior_rate": 2.0,
            **SMALL,
        },
        (3, 4),
        {"shape_boosts": 3, "prior_shape": 1.5, "prior_rate": 2.0, **SMALL},
    ),
    (
        "TwoStageVAE",
        (3, 4, [8, 16], [32, 16]),
        {"image_size": 16},
        (3, 4),
        {"hidden_dims2": [32, 16], **SMALL},
    ),
]


@pytest.mark.parametrize(
    ("name", "theirs_args", "theirs_kwargs", "our_args", "our_kwargs"),
    SAME_MODEL,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(SAME_MODEL)],
)
def test_pytorch_vae_arguments_build_the_model_our_names_build(
    name, theirs_args, theirs_kwargs, our_args, our_kwargs
):
    theirs = build(name, *theirs_args, **theirs_kwargs)
    mine = build(name, *our_args, **our_kwargs)
    rebuilt = build(name, **theirs.config)  # the config records the arguments in our names
    assert type(theirs) is type(mine) is type(rebuilt)
    our_state = mine.state_dict()
    for other in (theirs, rebuilt):
        state = other.state_dict()
        assert list(state) == list(our_state)
        for key in our_state:
            assert torch.equal(state[key], our_state[key]), key
    # the same loss on the same data and noise, every term
    theirs_losses, our_losses = run_loss(theirs, global_step=500), run_loss(mine, global_step=500)
    assert set(theirs_losses) == set(our_losses)
    for key in our_losses:
        torch.testing.assert_close(theirs_losses[key], our_losses[key], msg=key)


# -- what the keys mean in the loss -------------------------------------------------------------------
def joint_output(model: JointVAE) -> JointOutput:
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    mu, log_var = torch.tensor([[1.0, 0.0], [0.0, -1.0]]), torch.zeros(2, 2)
    logits = torch.zeros(2, 3)  # one uniform 3-way variable: KL 0
    logits[:, 0] = 1e4  # ... made one-hot: KL log 3
    return JointOutput(torch.zeros_like(x), x, mu, log_var, logits, torch.zeros(2, 5))


def test_joint_vae_minimum_capacities_gammas_and_alpha_play_pytorch_vaes_roles():
    """PyTorch-VAE's JointVAE loss: alpha * recon + M_N * (cat_gamma * |KL_c - C_c| + lat_gamma * |KL_z - C_z|),
    C rising linearly from min to max capacity over num_iter steps (vaezoo caps C_c at the max too)."""
    pvae = dict(
        latent_min_capacity=1.0, latent_max_capacity=5.0, latent_gamma=2.0, latent_num_iter=100,
        categorical_min_capacity=0.2, categorical_max_capacity=3.0, categorical_gamma=7.0,
        categorical_num_iter=200, alpha=4.0,
    )  # fmt: skip
    model = build("JointVAE", 1, 2, 3, recon_reduction="sum", **SMALL, **pvae)
    output = joint_output(model)
    kl_cont = (0.5 * (output.mu**2 + output.log_var.exp() - 1 - output.log_var).sum(1)).mean()
    kl_disc = math.log(3)
    recon = (output.input**2).sum(dim=(1, 2, 3)).mean()
    for step in (0, 50, 100, 150, 400):
        losses = model.loss_function(*output, M_N=0.5, global_step=step)
        c_cont = 1.0 + (5.0 - 1.0) * min(1.0, step / 100)
        c_disc = min(0.2 + (3.0 - 0.2) * min(1.0, step / 200), math.log(3))
        assert losses["Capacity_Continuous"].item() == pytest.approx(c_cont)
        assert losses["Capacity_Discrete"].item() == pytest.approx(c_disc)
        expected = 4.0 * recon + 0.5 * (2.0 * abs(kl_cont - c_cont) + 7.0 * abs(kl_disc - c_disc))
        torch.testing.assert_close(losses["loss"], expected)
        torch.testing.assert_close(losses["Reconstruction_Loss"], recon)  # logged unweighted, as there


def test_joint_vae_defaults_keep_one_gamma_no_minimum_and_no_recon_weight():
    model = build("JointVAE", 1, 2, 3, recon_reduction="sum", gamma=6.0, **SMALL)
    assert (model.cont_gamma, model.disc_gamma, model.recon_weight) == (6.0, 6.0, 1.0)
    output = joint_output(model)
    losses = model.loss_function(*output, M_N=1.0, global_step=12_500)
    kl_cont = (0.5 * (output.mu**2 + output.log_var.exp() - 1 - output.log_var).sum(1)).mean()
    c_cont, c_disc = 12.5, math.log(3)  # half of 25 nats; the discrete one capped at log 3
    recon = (output.input**2).sum(dim=(1, 2, 3)).mean()
    expected = recon + 6.0 * (abs(kl_cont - c_cont) + abs(math.log(3) - c_disc))
    torch.testing.assert_close(losses["loss"], expected)
    # one gamma given alongside one of PyTorch-VAE's: that one wins for its KL only
    model = build("JointVAE", 1, 2, 3, gamma=6.0, latent_gamma=1.0, **SMALL)
    assert (model.cont_gamma, model.disc_gamma) == (1.0, 6.0)


def test_categorical_vae_alpha_weighs_the_reconstruction():
    model = build("CategoricalVAE", 1, 2, 3, alpha=5.0, recon_reduction="sum", **SMALL)
    x = torch.rand(2, 1, 16, 16)
    output = CategoricalOutput(torch.zeros_like(x), x, torch.zeros(2, 6), torch.zeros(2, 6))
    losses = model.loss_function(*output, M_N=0.25)
    recon = (x**2).sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(losses["Reconstruction_Loss"], recon)
    torch.testing.assert_close(losses["KLD"], torch.tensor(0.0))  # uniform logits
    torch.testing.assert_close(losses["loss"], 5.0 * recon)
    logits = torch.zeros(2, 6)
    logits[:, 0] = logits[:, 3] = 1e4  # both variables one-hot: KL 2 log 3
    losses = model.loss_function(*output._replace(logits=logits), M_N=0.25)
    torch.testing.assert_close(losses["loss"], 5.0 * recon + 0.25 * 2 * math.log(3))
    assert build("CategoricalVAE", 1, 2, 3, **SMALL).recon_weight == 1.0  # vaezoo's default: the ELBO


@pytest.mark.parametrize("name", ["CategoricalVAE", "JointVAE"])
def test_pytorch_vaes_temperature_is_the_starting_one_and_anneals_to_the_floor(name):
    """PyTorch-VAE's temperature is where the annealing starts (its own never moved from there);
    below vaezoo's floor of 0.5 it is kept, instead of the error a floor above the start would be."""
    x = torch.rand(2, 1, 16, 16)
    for temperature, floor in ((0.5, 0.5), (0.3, 0.3), (1.0, 0.5)):
        model = build(name, 1, 2, 3, temperature=temperature, anneal_rate=1e-2, anneal_interval=1, **SMALL)
        first = model.loss_function(*model(x, global_step=0), global_step=0)["Temperature"].item()
        late = model.loss_function(*model(x, global_step=10_000), global_step=10_000)["Temperature"].item()
        assert first == pytest.approx(temperature) and late == pytest.approx(floor)
    model = build(name, 1, 2, 3, temperature=1.0, min_temperature=0.7, anneal_rate=1.0, **SMALL)
    assert model.categorical.temperature(10_000) == pytest.approx(0.7)  # an explicit floor is kept


def test_gamma_shape_is_the_number_of_shape_boosts():
    model = build("GammaVAE", 1, 2, gamma_shape=8.0, **SMALL)
    assert model.shape_boosts == 8 and isinstance(model.shape_boosts, int)
    assert model.config["shape_boosts"] == 8 and "gamma_shape" not in model.config
    with pytest.raises(ValueError, match="whole number"):
        build("GammaVAE", 1, 2, gamma_shape=2.5, **SMALL)
    with pytest.raises(TypeError, match="mean the same"):
        build("GammaVAE", 1, 2, gamma_shape=8.0, shape_boosts=8, **SMALL)


def test_lvae_list_is_pytorch_vaes_rungs_bottom_first():
    """PyTorch-VAE's latent_dims[0] is its first encoder block's (nearest the image) and the one its
    decoder reads; latent_dims[-1] is drawn from N(0, I) in ``sample``. So is ours."""
    model = build("LVAE", 1, [5, 3, 2], [8, 16], image_size=16)
    assert model.latent_dim == 5 and model.latent_dims == [5, 3, 2]
    assert model.decoder(torch.zeros(1, 5)).shape == (1, 1, 16, 16)  # the decoder reads the bottom rung
    assert model.top_down[-1].hidden[0].in_features == 2  # the top rung feeds the first prior
    assert model.sample_prior(4, torch.device("cpu")).shape == (4, 5)
    out = model(torch.rand(2, 1, 16, 16))
    assert [z.shape[1] for z in out.latents] == [5, 3, 2]
    with pytest.raises(ValueError, match="must be latent_dim"):
        build("LVAE", 1, 4, latent_dims=[5, 3], **SMALL)
    with pytest.raises(ValueError, match="differ"):
        build("LVAE", 1, [5, 3], latent_dims=[5, 2], **SMALL)
    with pytest.raises(TypeError, match="latent_dim"):
        LVAE(1, **SMALL)


def test_cvae_needs_its_latent_dim_and_reads_pytorch_vaes_order():
    model = build("CVAE", 3, 7, 5, **SMALL)
    assert (model.num_classes, model.latent_dim) == (7, 5)
    assert model.embed_class.in_features == 7 and model.head.fc_mu.out_features == 5
    assert build("ConditionalVAE", 1, latent_dim=4, **SMALL).num_classes == 40  # default as before
    with pytest.raises(TypeError, match="latent_dim"):
        build("ConditionalVAE", 3, 7, **SMALL)


def test_hvae_ignores_pseudo_input_size_with_a_warning():
    with pytest.warns(UserWarning, match="pseudo_input_size"):
        model = create_model("HVAE", 1, latent1_dim=4, latent2_dim=2, pseudo_input_size=128, **SMALL)
    assert (model.latent_dim, model.latent2_dim) == (4, 2) and "pseudo_input_size" not in model.config


def test_two_stage_hidden_dims2_are_stage_twos_layers():
    model = build("TwoStageVAE", 1, 4, [8, 16], [32, 16], image_size=16)
    encoder = [m.out_features for m in model.stage2.encoder.hidden if isinstance(m, torch.nn.Linear)]
    decoder = [m.out_features for m in model.stage2.decoder if isinstance(m, torch.nn.Linear)]
    assert encoder == [32, 16] and model.stage2.encoder.head.fc_mu.in_features == 16
    assert decoder == [16, 32, 4]  # reversed, then back to the latent
    default = build("TwoStageVAE", 1, 4, **SMALL)  # vaezoo's stage 2, as before
    encoder = [m.out_features for m in default.stage2.encoder.hidden if isinstance(m, torch.nn.Linear)]
    decoder = [m.out_features for m in default.stage2.decoder if isinstance(m, torch.nn.Linear)]
    assert (encoder, decoder) == ([256], [256, 256, 4])
    assert isinstance(build("TwoStageVAE", 1, 4, stage2_width=8, **SMALL), TwoStageVAE)
    with pytest.raises(ValueError, match="not both"):
        build("TwoStageVAE", 1, 4, hidden_dims2=[8], stage2_width=8, **SMALL)


def test_vqvae_positions_are_embedding_dim_num_embeddings_hidden_dims_beta_img_size():
    model = build("VQVAE", 1, 4, 8, [8, 16], 0.5, 16)
    assert (model.latent_dim, model.num_embeddings, model.beta) == (4, 8, 0.5)
    assert model(torch.rand(2, 1, 16, 16)).z_e.shape == (2, 4, 4, 4)
    with pytest.raises(TypeError):
        build("VQVAE", 1, 4, 8, [8, 16], 0.5, 16, 2)  # num_residual_layers is keyword-only


# -- from YAML: the same names, checked and translated -------------------------------------------------
@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            {
                "name": "JointVAE",
                "latent_dim": 4,
                "latent_num_iter": 1e4,
                "categorical_gamma": 3.0,
                "alpha": 2.0,
            },
            {"cont_capacity_steps": 10_000, "disc_gamma": 3.0, "recon_weight": 2.0},
        ),
        ({"name": "GammaVAE", "latent_dim": 4, "gamma_shape": 8.0}, {"shape_boosts": 8}),
        ({"name": "HVAE", "latent1_dim": 4, "latent2_dim": 2}, {"latent_dim": 4, "latent2_dim": 2}),
        ({"name": "VQVAE", "embedding_dim": 4, "img_size": 32}, {"latent_dim": 4, "image_size": 32}),
        ({"name": "GumbelVAE", "latent_dim": 4, "alpha": 1.0}, {"recon_weight": 1.0}),
        ({"name": "LVAE", "latent_dims": [4, 8]}, {"latent_dims": [4, 8]}),
        ({"name": "TwoStageVAE", "latent_dim": 4, "hidden_dims2": [64, 64]}, {"hidden_dims2": [64, 64]}),
    ],
    ids=lambda v: v["name"] if isinstance(v, dict) and "name" in v else "",
)
def test_a_yaml_model_section_takes_pytorch_vaes_keys(section, expected):
    resolved = resolve_model_section(section, "test.yaml")
    assert expected.items() <= resolved.items()
