"""Relaxed categorical latents (Gumbel-softmax / Concrete), shared by CategoricalVAE and JointVAE.

Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax" (ICLR 2017); Maddison et al.,
"The Concrete Distribution" (ICLR 2017). Every function works over the last dimension (the classes).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.losses.schedules import exponential_temperature


def gumbel_softmax(logits: Tensor, temperature: float, eps: float = 1e-10) -> Tensor:
    """A relaxed one-hot sample y = softmax((logits + g) / tau), g ~ Gumbel(0, 1) (Jang et al., Eq. 2).

    (..., Q) unnormalised log-probabilities -> (..., Q) points on the simplex. As tau -> 0 the samples
    become one-hot, with class k drawn with probability softmax(logits)_k (the Gumbel-max trick, Eq. 1).
    """
    uniform = torch.rand_like(logits)
    gumbel = -torch.log(-torch.log(uniform + eps) + eps)  # (..., Q)
    return F.softmax((logits + gumbel) / temperature, dim=-1)


def kl_to_uniform(logits: Tensor) -> Tensor:
    """KL(Cat(softmax(logits)) || Uniform(Q)) = sum_k q_k log q_k + log Q, per variable: (..., Q) -> (...).

    0 for a uniform q, log Q for a one-hot q (the most a Q-way variable can carry).
    """
    log_q = F.log_softmax(logits, dim=-1)
    return (log_q.exp() * log_q).sum(-1) + math.log(logits.shape[-1])


def uniform_one_hot(num_samples: int, num_variables: int, num_classes: int, device: torch.device) -> Tensor:
    """One-hot draws from the uniform prior p(c): (N, num_variables, num_classes)."""
    classes = torch.randint(num_classes, (num_samples, num_variables), device=device)
    return F.one_hot(classes, num_classes).float()


class AnnealedTemperature(nn.Module):
    """The Gumbel-softmax temperature max(tau0 * exp(-rate * t), tau_min), t = training step (Jang et al. Sec. 2.2).

    ``global_step`` comes from the trainer, so the schedule resumes exactly. The last training step
    seen is kept in a buffer (saved in checkpoints): a call without ``global_step`` (``sample``,
    ``generate``, plain Python use) gets the temperature training had reached. This replaces
    PyTorch-VAE's schedule, which had ``min_temp == temp`` (never annealed) and counted ``batch_idx``
    (restarting every epoch).
    """

    last_step: Tensor  # long scalar buffer, registered in __init__

    def __init__(self, initial: float, minimum: float, rate: float, interval: int = 1) -> None:
        super().__init__()
        if not 0 < minimum <= initial:
            raise ValueError(f"min_temperature {minimum} must be in (0, temperature = {initial}]")
        if rate < 0:
            raise ValueError(f"anneal_rate {rate} must be >= 0")
        self.initial, self.minimum, self.rate, self.interval = initial, minimum, rate, interval
        self.register_buffer("last_step", torch.zeros((), dtype=torch.long))

    def current_step(self, global_step: int | None = None) -> int:
        """``global_step`` (recorded if training), or the last training step recorded when it is None."""
        if global_step is None:
            return int(self.last_step)
        if self.training:
            self.last_step.fill_(int(global_step))
        return int(global_step)

    def forward(self, global_step: int | None = None) -> float:
        step = self.current_step(global_step)
        return exponential_temperature(step, self.initial, self.rate, self.minimum, self.interval)


class RelaxedCategorical(nn.Module):
    """Independent categorical latents c_k with ``class_counts[k]`` classes each, from encoder features.

    The logits of all variables sit side by side in one (B, sum Q) tensor; samples are relaxed
    one-hots in the same layout (what the decoder sees). The prior is uniform over each variable.
    """

    def __init__(
        self,
        in_features: int,
        class_counts: list[int],
        temperature: float,
        min_temperature: float,
        anneal_rate: float,
        anneal_interval: int,
    ) -> None:
        super().__init__()
        if not class_counts or min(class_counts) < 2:
            raise ValueError(f"categorical variables need at least 2 classes each, got {class_counts}")
        self.class_counts = list(class_counts)
        self.size = sum(class_counts)  # width of the logits and of a sample
        self.max_kl = sum(math.log(q) for q in class_counts)  # KL of one-hot q to the uniform prior
        self.fc_logits = nn.Linear(in_features, self.size)
        self.temperature = AnnealedTemperature(temperature, min_temperature, anneal_rate, anneal_interval)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc_logits(features)  # (B, F) -> (B, sum Q) logits

    def variables(self, logits: Tensor) -> list[Tensor]:
        """One (B, Q_k) block per variable; equal counts as a single (B, K, Q) block (faster)."""
        if len(set(self.class_counts)) == 1:
            return [logits.view(logits.shape[0], -1, self.class_counts[0])]
        return list(logits.split(self.class_counts, dim=-1))

    def rsample(self, logits: Tensor, global_step: int | None = None) -> Tensor:
        """Gumbel-softmax samples at the annealed temperature: (B, sum Q)."""
        tau = self.temperature(global_step)
        return torch.cat([gumbel_softmax(block, tau).flatten(1) for block in self.variables(logits)], dim=1)

    def kl(self, logits: Tensor) -> Tensor:
        """KL(q(c|x) || uniform) summed over the variables: (B, sum Q) -> (B,)."""
        per_variable = (
            kl_to_uniform(block).reshape(len(logits), -1).sum(1) for block in self.variables(logits)
        )
        return cast(Tensor, sum(per_variable))  # a Tensor, not 0: there is at least one variable (__init__)

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        """A uniformly drawn one-hot per variable: (num_samples, sum Q)."""
        if len(set(self.class_counts)) == 1:
            counts = [(len(self.class_counts), self.class_counts[0])]
        else:
            counts = [(1, q) for q in self.class_counts]
        draws = [uniform_one_hot(num_samples, k, q, device).flatten(1) for k, q in counts]
        return torch.cat(draws, dim=1)
