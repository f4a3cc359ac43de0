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
from pytorch_vae_layouts import CONFIGS

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

# ... and the model_params of its configs/*.yaml, passed as its run.py passes them (name included).
CONFIG_MODEL_PARAMS: dict[str, dict[str, Any]] = {
    file: layout["model_params"] for file, layout in CONFIGS.items()
}

CASES = [pytest.param(name, args, kwargs, id=f"tests:{name}{args}") for name, args, kwargs in TEST_CALLS] + [
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
