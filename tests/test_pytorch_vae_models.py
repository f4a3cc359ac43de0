"""PyTorch-VAE's callers, unchanged: every model built as PyTorch-VAE's tests and configs build it.

The calls below are the ones PyTorch-VAE (github.com/AntixK/PyTorch-VAE, HEAD a6896b9) makes: the
positional calls of its ``tests/`` scripts, and ``Model(**config["model_params"])`` -- name included --
of its ``run.py`` with the ``model_params`` of its ``configs/*.yaml``. Each model then runs what
PyTorch-VAE's experiment and scripts run on it, on the CPU: ``forward(x, labels=y)``,
``loss_function(*out, M_N=..., optimizer_idx=..., batch_idx=...)``, ``sample(n, current_device)``
with an int device index, and ``generate(x)``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytest
import torch

from vaezoo.registry import get_model_class

# (model name as PyTorch-VAE spells it, positional args, keyword args): its tests' calls ...
TEST_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("BetaTCVAE", (3, 64), {"anneal_steps": 100}),
    ("BetaVAE", (3, 10), {"loss_type": "H"}),
    ("CVAE", (3, 40, 10), {}),
    ("DFCVAE", (3, 10), {}),
    ("DIPVAE", (3, 64), {}),
    ("FactorVAE", (3, 10), {}),
    ("GammaVAE", (3, 10), {}),
    ("GumbelVAE", (3, 10), {}),
    ("HVAE", (3,), {"latent1_dim": 10, "latent2_dim": 20}),
    ("IWAE", (3, 10), {}),
    ("JointVAE", (3, 10, 40, 0.0), {}),
    ("LVAE", (3, [4, 8, 16, 32, 128]), {"hidden_dims": [32, 64, 128, 256, 512]}),
    ("LogCoshVAE", (3, 10), {"alpha": 10}),
    ("MIWAE", (3, 10), {}),
    ("MSSIMVAE", (3, 10), {}),
    ("SWAE", (3, 10), {"reg_weight": 100}),
    ("VQVAE", (3, 64, 512), {}),
    ("VampVAE", (3,), {"latent_dim": 10}),
    ("VanillaVAE", (3, 10), {}),
    ("WAE_MMD", (3, 10), {"reg_weight": 100}),
    ("TwoStageVAE", (3, 10), {"hidden_dims2": [1024, 1024]}),  # no test there; its signature
]

# ... and the model_params of its configs/*.yaml (file name -> keys), passed as run.py passes them.
CONFIG_MODEL_PARAMS: dict[str, dict[str, Any]] = {
    "bbvae": dict(
        name="BetaVAE",
        in_channels=3,
        latent_dim=128,
        loss_type="B",
        gamma=10.0,
        max_capacity=25,
        Capacity_max_iter=10000,
    ),
    "betatc_vae": dict(
        name="BetaTCVAE", in_channels=3, latent_dim=10, anneal_steps=10000, alpha=1.0, beta=6.0, gamma=1.0
    ),
    "bhvae": dict(name="BetaVAE", in_channels=3, latent_dim=128, loss_type="H", beta=10.0),
    "cat_vae": dict(
        name="CategoricalVAE",
        in_channels=3,
        latent_dim=512,
        categorical_dim=40,
        temperature=0.5,
        anneal_rate=0.00003,
        anneal_interval=100,
        alpha=1.0,
    ),
    "cvae": dict(name="ConditionalVAE", in_channels=3, num_classes=40, latent_dim=128),
    "dfc_vae": dict(name="DFCVAE", in_channels=3, latent_dim=128),
    "dip_vae": dict(name="DIPVAE", in_channels=3, latent_dim=128, lambda_diag=0.05, lambda_offdiag=0.1),
    "factorvae": dict(name="FactorVAE", in_channels=3, latent_dim=128, gamma=6.4),
    "gammavae": dict(
        name="GammaVAE", in_channels=3, latent_dim=128, gamma_shape=8.0, prior_shape=2.0, prior_rate=1.0
    ),
    "hvae": dict(name="HVAE", in_channels=3, latent1_dim=64, latent2_dim=64, pseudo_input_size=128),
    "infovae": dict(
        name="InfoVAE", in_channels=3, latent_dim=128, reg_weight=110, kernel_type="imq", alpha=-9.0, beta=10.5
    ),
    "iwae": dict(name="IWAE", in_channels=3, latent_dim=128, num_samples=5),
    "joint_vae": dict(
        name="JointVAE",
        in_channels=3,
        latent_dim=512,
        categorical_dim=40,
        latent_min_capacity=0.0,
        latent_max_capacity=20.0,
        latent_gamma=10.0,
        latent_num_iter=25000,
        categorical_min_capacity=0.0,
        categorical_max_capacity=20.0,
        categorical_gamma=10.0,
        categorical_num_iter=25000,
        temperature=0.5,
        anneal_rate=0.00003,
        anneal_interval=100,
        alpha=10.0,
    ),
    "logcosh_vae": dict(name="LogCoshVAE", in_channels=3, latent_dim=128, alpha=10.0, beta=1.0),
    "lvae": dict(
        name="LVAE", in_channels=3, latent_dims=[4, 8, 16, 32, 128], hidden_dims=[32, 64, 128, 256, 512]
    ),
    "miwae": dict(name="MIWAE", in_channels=3, latent_dim=128, num_samples=5, num_estimates=3),
    "mssim_vae": dict(name="MSSIMVAE", in_channels=3, latent_dim=128),
    "swae": dict(
        name="SWAE",
        in_channels=3,
        latent_dim=128,
        reg_weight=100,
        wasserstein_deg=2.0,
        num_projections=200,
        projection_dist="normal",
    ),
    "vae": dict(name="VanillaVAE", in_channels=3, latent_dim=128),
    "vampvae": dict(name="VampVAE", in_channels=3, latent_dim=128),
    "vq_vae": dict(name="VQVAE", in_channels=3, embedding_dim=64, num_embeddings=512, img_size=64, beta=0.25),
    "wae_mmd_imq": dict(name="WAE_MMD", in_channels=3, latent_dim=128, reg_weight=100, kernel_type="imq"),
    "wae_mmd_rbf": dict(name="WAE_MMD", in_channels=3, latent_dim=128, reg_weight=5000, kernel_type="rbf"),
}

CASES = [
    pytest.param(name, args, kwargs, id=f"tests:{name}{args}") for name, args, kwargs in TEST_CALLS
] + [
    pytest.param(params["name"], (), params, id=f"configs/{file}.yaml")
    for file, params in CONFIG_MODEL_PARAMS.items()
]


def construct(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.nn.Module:
    """The model as PyTorch-VAE's caller builds it; DFCVAE's random-VGG warning is expected here."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        return get_model_class(name)(*args, **kwargs)


def run_like_pytorch_vae(model: torch.nn.Module, batch: int = 4) -> None:
    """One training and one validation call as PyTorch-VAE's experiment makes them, then its
    sampling and reconstruction calls; checks what its callers rely on."""
    x = torch.rand(batch, 3, 64, 64) * 2 - 1  # CelebA at 64x64, as PyTorch-VAE's data reach its models
    labels = (torch.rand(batch, 40) > 0.5).float()  # CelebA's 40 attributes; only CVAE reads them
    model.train()
    out = model(x, labels=labels)
    assert out[0].shape == x.shape and torch.equal(out[1], x)
    losses = model.loss_function(*out, M_N=0.00025, optimizer_idx=0, batch_idx=0)
    assert math.isfinite(losses["loss"].item()) and losses["loss"].requires_grad
    losses["loss"].backward()
    model.eval()
    with torch.no_grad():
        val = model.loss_function(*model(x, labels=labels), M_N=1.0, optimizer_idx=0, batch_idx=0)
        assert math.isfinite(val["loss"].item())
        assert model.generate(x, labels=labels).shape == x.shape
        if getattr(model, "samples_from_prior", True):
            assert model.sample(batch, 0, labels=labels).shape == x.shape  # int GPU index, on a CPU


@pytest.mark.parametrize(("name", "args", "kwargs"), CASES)
def test_pytorch_vae_call_constructs_and_runs(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]):
    model = construct(name, args, kwargs)
    run_like_pytorch_vae(model)
