"""NaN and Inf during training: ``train.nonfinite: stop`` names the batch and the terms and keeps the
last good checkpoint; ``skip`` leaves the update out and counts it; ``train.skip_grad_norm`` skips
updates whose gradient norm is too large."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import TINY_RUN, fit_one_epoch

from vaezoo.config import load_config
from vaezoo.models import VanillaVAE
from vaezoo.training.module import NonFiniteLoss, UpdatesAllSkipped
from vaezoo.training.run import train

REPO = Path(__file__).resolve().parents[1]


def images_with_a_nan_batch(bad_batch: int) -> torch.Tensor:
    torch.manual_seed(0)
    images = torch.rand(32, 1, 16, 16)  # four batches of 8
    images[bad_batch * 8] = float("nan")
    return images


def tiny_model() -> VanillaVAE:
    torch.manual_seed(0)
    return VanillaVAE(in_channels=1, latent_dim=2, hidden_dims=[4, 8], image_size=16)


def test_stop_names_the_batch_and_the_terms_that_went_non_finite():
    with pytest.raises(NonFiniteLoss) as caught:
        fit_one_epoch(tiny_model(), images_with_a_nan_batch(2), nonfinite="stop")
    message = str(caught.value)
    assert "training batch 3 (epoch 0)" in message
    assert "loss = nan" in message and "Reconstruction_Loss = nan" in message
    assert "train.nonfinite: skip" in message  # says how to carry on instead


def test_skip_leaves_the_update_out_and_counts_it():
    trainer, module = fit_one_epoch(tiny_model(), images_with_a_nan_batch(2), nonfinite="skip")
    assert module.skipped_updates == 1
    assert all(bool(torch.isfinite(p).all()) for p in module.model.parameters())
    assert all(bool(torch.isfinite(b).all()) for b in module.model.buffers())  # BatchNorm's statistics too
    assert trainer.callback_metrics["train/skipped_updates"] == 1
    assert math.isfinite(float(trainer.callback_metrics["train/loss_epoch"]))  # the NaN is not averaged in


def test_a_gradient_norm_above_skip_grad_norm_skips_the_update():
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    _, module = fit_one_epoch(model, torch.rand(32, 1, 16, 16), skip_grad_norm=1e-9)
    assert module.skipped_updates == 4  # every one of the four updates
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))

    _, loose = fit_one_epoch(tiny_model(), torch.rand(32, 1, 16, 16), skip_grad_norm=1e9)
    assert loose.skipped_updates == 0


def test_a_run_whose_updates_are_all_skipped_stops_saying_why(monkeypatch):
    import vaezoo.training.module as module_file

    monkeypatch.setattr(module_file, "STALLED_AFTER_SKIPS", 3)
    with pytest.raises(UpdatesAllSkipped) as caught:  # four updates, all above the limit
        fit_one_epoch(tiny_model(), torch.rand(32, 1, 16, 16), skip_grad_norm=1e-9)
    message = str(caught.value)
    assert "training batch 3 (epoch 0): the last 3 updates were all skipped" in message
    assert "> train.skip_grad_norm = 1e-09" in message and "raise train.skip_grad_norm" in message
    monkeypatch.setattr(module_file, "STALLED_AFTER_SKIPS", 2)  # one skip, then kept updates: no stop
    _, module = fit_one_epoch(tiny_model(), images_with_a_nan_batch(2), nonfinite="skip")
    assert module.skipped_updates == 1 and module.skips_in_a_row == 0


class PoisonBatch(L.Callback):
    """Fill the images of training batch ``at`` (1-based) with NaN, as a corrupt batch would."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx
    ) -> None:
        if pl_module.batches_seen + 1 == self.at:
            batch[0].fill_(float("nan"))


@pytest.mark.slow
def test_a_run_stopped_by_a_nan_keeps_its_last_good_checkpoint(tmp_path, monkeypatch, isolated_cache):
    monkeypatch.chdir(REPO)
    overrides = [*TINY_RUN, "--train.max_epochs", "1", "--logging.checkpoint_every_n_steps", "2"]
    config = load_config("configs/vae.yaml", [*overrides, "--logging.save_dir", str(tmp_path)])
    with pytest.raises(NonFiniteLoss, match="training batch 3 "):
        train(config, extra_callbacks=[PoisonBatch(3)])
    last = tmp_path / "VanillaVAE" / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2  # written after batch 2, untouched by the failed batch 3
    assert all(bool(torch.isfinite(v).all()) for v in saved["state_dict"].values() if v.is_floating_point())
