"""Schedules and distribution helpers shared by the zoo."""

import math

import pytest
import torch

from vaezoo.losses.schedules import exponential_temperature, linear_capacity, linear_warmup
from vaezoo.nn.distributions import DiagonalGaussian, log_standard_normal


def test_linear_capacity():
    assert linear_capacity(0, 25.0, 100) == 0.0
    assert linear_capacity(50, 25.0, 100) == pytest.approx(12.5)
    assert linear_capacity(10_000, 25.0, 100) == 25.0
    assert linear_capacity(5, 25.0, 0) == 25.0


def test_exponential_temperature_really_anneals_to_the_minimum():
    values = [exponential_temperature(s, 1.0, 1e-2, 0.1, interval=100) for s in (0, 99, 100, 250, 10_000)]
    assert values[0] == values[1] == 1.0  # held within an interval
    assert values[2] == pytest.approx(math.exp(-1.0))
    assert values[3] == pytest.approx(math.exp(-2.0)) and values[4] == 0.1
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_linear_warmup():
    assert [linear_warmup(s, 4) for s in (0, 2, 4, 8)] == [0.0, 0.5, 1.0, 1.0]


def test_gaussian_kl_between_two_gaussians_matches_torch():
    p = DiagonalGaussian(torch.randn(4, 3), torch.randn(4, 3))
    q = DiagonalGaussian(torch.randn(4, 3), torch.randn(4, 3))
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(p.mu, p.std), torch.distributions.Normal(q.mu, q.std)
    ).sum(-1)
    assert torch.allclose(p.kl(q), expected, atol=1e-5)
    standard = DiagonalGaussian(torch.zeros(4, 3), torch.zeros(4, 3))
    assert torch.allclose(p.kl(standard), p.kl_standard_normal(), atol=1e-6)


def test_log_densities_match_torch():
    z = torch.randn(5, 3)
    g = DiagonalGaussian(torch.randn(5, 3), torch.randn(5, 3))
    assert torch.allclose(
        g.log_prob(z), torch.distributions.Normal(g.mu, g.std).log_prob(z).sum(-1), atol=1e-5
    )
    assert torch.allclose(log_standard_normal(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_cyclical_annealing_rises_over_the_ramp_of_each_cycle_then_holds():
    from vaezoo.losses.schedules import cyclical, kl_schedule

    # cycles of 8 steps, rising over the first half (Fu et al. 2019, R = 0.5)
    assert [cyclical(step, 8, 0.5) for step in range(10)] == [0, 0.25, 0.5, 0.75, 1, 1, 1, 1, 0, 0.25]
    assert kl_schedule("linear", 3, 4) == 0.75 and kl_schedule("linear", 9, 4) == 1.0
    assert kl_schedule("constant", 0, 0) == 1.0


def test_the_training_module_uses_the_scheduled_kl_weight_step_by_step():
    from helpers import fit_one_epoch

    from vaezoo.models import VanillaVAE

    torch.manual_seed(0)
    model = VanillaVAE(in_channels=1, latent_dim=2, hidden_dims=[4, 8], image_size=16)
    used: list[float] = []
    loss_function = model.loss_function

    def recording(*args, **kwargs):
        if model.training:
            used.append(kwargs["M_N"])
        return loss_function(*args, **kwargs)

    model.loss_function = recording  # type: ignore[method-assign]
    fit_one_epoch(model, torch.rand(32, 1, 16, 16), kl_weight=2.0, kl_schedule="linear", kl_schedule_steps=4)
    assert used == [0.0, 0.5, 1.0, 1.5]  # kl_weight 2 times 0, 1/4, 2/4, 3/4: four batches of 8


def test_a_kl_schedule_needs_its_length():
    from vaezoo.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="train.kl_schedule_steps = 0 must be a positive number of batches"):
        load_config(None, ["--train.kl_schedule", "cyclical"])


@pytest.mark.parametrize("scheduler", ["none", "exponential"])
def test_the_lr_warms_up_linearly_and_the_scheduler_keeps_its_own_rate(scheduler):
    import lightning as L
    from helpers import fit_one_epoch

    from vaezoo.config import ConfigError, load_config
    from vaezoo.models import VanillaVAE

    class StepRates(L.Callback):
        def __init__(self) -> None:
            self.rates: list[float] = []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            self.rates.append(optimizer.param_groups[0]["lr"])

    torch.manual_seed(0)
    model = VanillaVAE(in_channels=1, latent_dim=2, hidden_dims=[4, 8], image_size=16)
    seen = StepRates()
    trainer, _ = fit_one_epoch(
        model, torch.rand(32, 1, 16, 16), [seen], lr=0.01, lr_warmup_steps=3, scheduler=scheduler
    )
    assert seen.rates == pytest.approx([0.01 / 3, 0.02 / 3, 0.01, 0.01])  # four batches of 8
    gamma = 0.95 if scheduler == "exponential" else 1.0  # one epoch's decay, untouched by the warm-up
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01 * gamma)
    with pytest.raises(ConfigError, match="train.lr_warmup_steps = -1"):
        load_config(None, ["--train.lr_warmup_steps", "-1"])
