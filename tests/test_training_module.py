"""VAEModule: the same KL weight in training and validation, the batch counter, the auxiliary-optimizer hook."""

import lightning as L
import torch
from helpers import fit_one_epoch
from torch import nn

from vaezoo.models import VanillaVAE
from vaezoo.training import VAEModule


class WithCritic(VanillaVAE):
    """A test model with an auxiliary objective: a linear critic on the detached latent mean."""

    auxiliary_lr = 0.01

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.critic = nn.Linear(self.latent_dim, 1)
        self.seen_steps: list[int] = []

    def auxiliary_optimizer_kwargs(self):
        return {"betas": (0.5, 0.9)}

    def auxiliary_parameters(self):
        return list(self.critic.parameters())

    def auxiliary_loss(self, output, **kwargs):
        if self.training:
            self.seen_steps.append(kwargs["global_step"])
        return {"loss": self.critic(output.mu.detach()).pow(2).mean()}


def fit(model: nn.Module, **train: object) -> tuple[L.Trainer, VAEModule]:
    return fit_one_epoch(
        model, torch.rand(24, 1, 16, 16, generator=torch.Generator().manual_seed(0)), **train
    )


def test_validation_uses_the_training_kl_weight():
    torch.manual_seed(0)
    trainer, _ = fit(VanillaVAE(1, 4, [8, 8], image_size=16), kl_weight=0.25)
    metrics = trainer.callback_metrics
    expected = metrics["val/Reconstruction_Loss"] + 0.25 * metrics["val/KLD"]
    assert torch.isclose(metrics["val/loss"], expected, rtol=1e-5)
    assert metrics["val/KLD"] > 0


def test_auxiliary_parameters_get_their_own_optimizer():
    torch.manual_seed(0)
    model = WithCritic(1, 4, [8, 8], image_size=16)
    critic_before = model.critic.weight.detach().clone()
    encoder_before = model.head.fc_mu.weight.detach().clone()
    trainer, module = fit(model, gradient_clip_val=1.0)
    assert not module.automatic_optimization
    main, auxiliary = trainer.optimizers
    main_ids = {id(p) for group in main.param_groups for p in group["params"]}
    assert not main_ids & {id(p) for p in model.critic.parameters()}
    assert auxiliary.param_groups[0]["lr"] == 0.01
    assert auxiliary.param_groups[0]["betas"] == (0.5, 0.9)
    assert not torch.equal(model.critic.weight, critic_before)  # both optimisers stepped
    assert not torch.equal(model.head.fc_mu.weight, encoder_before)
    assert model.seen_steps == [0, 1, 2]  # the training batches before this one
    assert int(module.train_batches) == 3
    assert "train/aux_loss_epoch" in trainer.callback_metrics and "val/aux_loss" in trainer.callback_metrics


def test_the_weights_moving_average_follows_each_update_and_is_what_validates():
    import lightning as L

    from vaezoo.models import VanillaVAE

    torch.manual_seed(0)
    model = VanillaVAE(in_channels=1, latent_dim=2, hidden_dims=[4, 8], image_size=16)
    seen: list[torch.Tensor] = []

    class RecordWeights(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            seen.append(pl_module.model.head.fc_mu.weight.detach().clone())

    trainer, module = fit_one_epoch(
        model, torch.rand(32, 1, 16, 16), ema_decay=0.5, callbacks=[RecordWeights()]
    )
    expected = seen[0]  # the first update copies the weights, then e <- 0.5 e + 0.5 w
    for weights in seen[1:]:
        expected = 0.5 * expected + 0.5 * weights
    assert module.ema is not None and len(seen) == 4
    assert torch.allclose(module.ema.module.head.fc_mu.weight, expected)
    assert not torch.allclose(module.ema.module.head.fc_mu.weight, model.head.fc_mu.weight)
    assert module.inference_model is module.ema.module
    assert not any(p.requires_grad for p in module.ema.parameters())  # outside the optimizer and DDP
