"""Schedules as pure functions of the training step, so resuming a run resumes them exactly.

Models get ``global_step`` (training batches so far) from the training module in ``forward`` and
``loss_function`` keyword arguments; nothing here keeps state.
"""

from __future__ import annotations

import math


def linear_capacity(step: int, max_capacity: float, anneal_steps: int) -> float:
    """Capacity C rising linearly from 0 to ``max_capacity`` over ``anneal_steps`` steps, then flat
    (Burgess et al. 2018, "Understanding disentangling in beta-VAE", Sec. 5)."""
    if anneal_steps <= 0:
        return float(max_capacity)
    return float(max_capacity) * min(1.0, max(0, step) / anneal_steps)


def exponential_temperature(
    step: int, initial: float, rate: float, min_temperature: float, interval: int = 1
) -> float:
    """Gumbel-softmax temperature max(initial * exp(-rate * t), min_temperature), with t the step
    rounded down to a multiple of ``interval`` (Jang et al. 2017, Sec. 2.2). It decreases until it
    reaches ``min_temperature``, which must be below ``initial`` for any annealing to happen."""
    t = (max(0, step) // max(1, interval)) * max(1, interval)
    return max(initial * math.exp(-rate * t), min_temperature)


def linear_warmup(step: int, warmup_steps: int) -> float:
    """A weight rising linearly from 0 to 1 over ``warmup_steps`` steps (KL annealing)."""
    return 1.0 if warmup_steps <= 0 else min(1.0, max(0, step) / warmup_steps)


def cyclical(step: int, cycle_steps: int, ramp: float = 0.5) -> float:
    """A weight that rises linearly from 0 to 1 over the first ``ramp`` fraction of every cycle of
    ``cycle_steps`` steps, then holds 1 until the cycle ends (Fu et al. 2019, "Cyclical Annealing
    Schedule: A Simple Approach to Mitigating KL Vanishing", Eq. 6, with R = ``ramp``)."""
    if cycle_steps <= 0:
        return 1.0
    position = (max(0, step) % cycle_steps) / cycle_steps
    return min(1.0, position / ramp)


def kl_schedule(name: str, step: int, steps: int, ramp: float = 0.5) -> float:
    """The factor of the KL weight at ``step`` for ``train.kl_schedule``: ``constant`` (1),
    ``linear`` (a warm-up over ``steps``) or ``cyclical`` (cycles of ``steps``)."""
    if name == "linear":
        return linear_warmup(step, steps)
    if name == "cyclical":
        return cyclical(step, steps, ramp)
    return 1.0
