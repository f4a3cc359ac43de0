"""Helpers shared by test files."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from types import ModuleType
from typing import NoReturn

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vaezoo.config import TrainConfig
from vaezoo.training import VAEModule

# Overrides of configs/vae.yaml for a small, fast run: 32x32 dSprites, a three-layer model, 3 + 2
# batches of 16 per epoch, two epochs.
TINY_RUN = [
    "--model.hidden_dims", "[8, 16, 32]", "--model.latent_dim", "4",
    "--data.image_size", "32", "--data.subset", "400",
    "--train.batch_size", "16", "--train.max_epochs", "2",
    "--train.limit_train_batches", "3", "--train.limit_val_batches", "2",
    "--logging.num_images", "16", "--logging.progress_bar", "none",
]  # fmt: skip


def fit_one_epoch(
    model: nn.Module, images: torch.Tensor, callbacks: list[L.Callback] | None = None, **train: object
) -> tuple[L.Trainer, VAEModule]:
    """One quiet Lightning epoch of ``model`` through VAEModule on ``images`` (train = val, batches of 8)."""
    data = TensorDataset(images, torch.zeros(len(images)))
    module = VAEModule(model, TrainConfig(**{"scheduler": "none", **train}))
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(module, DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
    return trainer, module


def require_package(module: str, extra: str, env: Mapping[str, str] = os.environ) -> ModuleType:
    """``module`` imported; else a skip saying which extra installs it, or under ``CI=true`` a
    failure (a CI image that lost a package cannot pass unnoticed)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        skip_or_fail(
            f"{module} is not installed: pip install 'vaezoo[{extra}]' (or `make test`, which installs .[dev])",
            env,
        )
        raise  # not reached: skip_or_fail raises


def skip_or_fail(message: str, env: Mapping[str, str] = os.environ) -> NoReturn:
    """Skip the test saying ``message`` (how to enable it); under ``CI=true`` fail instead, so a CI
    image that lost a package or a system install cannot pass unnoticed."""
    if env.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
