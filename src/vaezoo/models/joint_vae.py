"""JointVAE of Dupont, "Learning Disentangled Joint Continuous and Discrete Representations" (NeurIPS 2018)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vaezoo.arguments import Alias, as_int
from vaezoo.losses import gaussian_kl
from vaezoo.losses.schedules import linear_capacity
from vaezoo.models.autoencoder import ConvAutoencoder
from vaezoo.models.cat_vae import (
    RelaxedCategoricalPosterior,
    default_min_temperature,
    kl_per_variable,
    sample_one_hot,
)
from vaezoo.models.vanilla_vae import expand_samples, per_dimension
from vaezoo.nn.blocks import GaussianHead
from vaezoo.nn.distributions import DiagonalGaussian, Posterior, log_standard_normal
from vaezoo.nn.gumbel import RelaxedCategorical
from vaezoo.registry import register_model


def rising_capacity(step: int, min_capacity: float, max_capacity: float, anneal_steps: int) -> float:
    """A capacity rising linearly from ``min_capacity`` to ``max_capacity`` over ``anneal_steps``
    steps, then flat (PyTorch-VAE's ``latent_min_capacity`` .. ``latent_max_capacity`` schedule)."""
    return min_capacity + linear_capacity(step, max_capacity - min_capacity, anneal_steps)


class JointOutput(NamedTuple):
    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    mu: Tensor  # (B, D)
    log_var: Tensor  # (B, D)
    logits: Tensor  # (B, Q_1 + ... + Q_K): the K categorical variables' logits side by side
    z: Tensor  # (B, D + Q_1 + ... + Q_K): Gaussian sample and relaxed one-hots, concatenated


class JointPosterior(Posterior):
    """q(z, c|x) = q(z|x) q(c|x): a Gaussian z beside relaxed categorical codes c; a draw is
    [z, c], (B, D + sum Q), the code the decoder reads."""

    def __init__(self, gaussian: DiagonalGaussian, categorical: RelaxedCategoricalPosterior) -> None:
        self.gaussian, self.categorical = gaussian, categorical

    def rsample(self, global_step: int | None = None) -> Tensor:
        return torch.cat([self.gaussian.rsample(), self.categorical.rsample(global_step)], dim=1)

    def mode(self) -> Tensor:
        return torch.cat([self.gaussian.mode(), self.categorical.mode()], dim=1)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) + log q(c|x) of a code [z, c] with one-hot c."""
        dim = self.gaussian.mu.shape[-1]
        return self.gaussian.log_prob(z[..., :dim]) + self.categorical.log_prob(z[..., dim:])

    def kl(self, other: Posterior) -> Tensor:
        if not isinstance(other, JointPosterior):
            raise TypeError(f"a joint posterior's closed-form KL needs another, not {type(other).__name__}")
        return self.gaussian.kl(other.gaussian) + self.categorical.kl(other.categorical)

    def as_list(self) -> list[Tensor]:
        return [*self.gaussian.as_list(), *self.categorical.as_list()]

    def fields(self) -> dict[str, Tensor]:
        return {**self.gaussian.fields(), **self.categorical.fields()}


@register_model
class JointVAE(ConvAutoencoder):
    """A VAE with a continuous and a discrete latent, each with its own capacity (Dupont 2018).

    q(z, c|x) = q(z|x) q(c|x): z is Gaussian (``latent_dim`` dimensions, prior N(0, I)); c is one or
    more categorical variables (``categorical_dim``: an int or a list of class counts, uniform
    prior), relaxed with the Gumbel-softmax (Jang et al. 2017, Eq. 2). The decoder sees [z, c].
    Eq. 7 pushes each KL towards a capacity that grows linearly over training::

        loss = recon_weight * mean_batch[ recon ]
               + M_N * ( gamma_z * |KL(q(z|x)||p(z)) - C_z| + gamma_c * |KL(q(c|x)||p(c)) - C_c| )

    with both KLs averaged over the batch, C_z rising linearly from ``cont_min_capacity`` to
    ``cont_max_capacity`` over ``cont_capacity_steps`` training steps and then flat, C_c likewise
    (``disc_*``) and capped at the most a discrete code can carry, sum_k log Q_k. gamma_z is
    ``cont_gamma`` and gamma_c ``disc_gamma``, each ``gamma`` unless given. With the defaults
    (``recon_weight = 1``, minimum capacities 0, one ``gamma``), ``recon_reduction="sum"`` and
    ``M_N = 1`` this is Eq. 7 with the paper's gamma and capacities in nats. The temperature
    anneals as in :class:`CategoricalVAE` (``min_temperature`` None: 0.5, or ``temperature`` if lower).

    ``likelihood`` (with ``likelihood_scale``, ``likelihood_std``) works as in :class:`VanillaVAE`.
    Evaluation uses exact one-hot codes, as :class:`CategoricalVAE`'s: ``embed`` is [mu, one-hot of
    each variable's most probable class] (B, D + sum Q); ``kl_per_dimension`` is (B, D + K), the
    Gaussian KL per dimension then each categorical variable's KL to its uniform prior;
    ``log_importance_weights`` sample z and one-hot c from q(z|x) q(c|x).

    Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD_Continuous``, ``KLD_Discrete``,
    ``Capacity_Continuous``, ``Capacity_Discrete``, ``Temperature``. Fixes to PyTorch-VAE: the
    temperature anneals, capacities follow the checkpointed global step (not a class counter that
    also counted validation), the discrete capacity stops at ``disc_max_capacity`` (PyTorch-VAE
    only capped it at log Q), the two KLs are logged, and several categorical variables are allowed.

    Arguments in PyTorch-VAE's order -- ``(in_channels, latent_dim, categorical_dim,
    cont_min_capacity, cont_max_capacity, cont_gamma, cont_capacity_steps, disc_min_capacity,
    disc_max_capacity, disc_gamma, disc_capacity_steps, hidden_dims, temperature, anneal_rate,
    anneal_interval, recon_weight)``, so ``JointVAE(3, 10, 40, 0.0)`` is a minimum continuous
    capacity of 0 -- and the rest by keyword only. PyTorch-VAE's names: ``latent_*`` for the
    ``cont_*`` arguments and ``categorical_*`` for the ``disc_*`` ones (``latent_num_iter`` and
    ``categorical_num_iter`` are the ``*_capacity_steps``), ``alpha`` for ``recon_weight`` and
    ``img_size`` for ``image_size``. Its ``temperature`` is the starting temperature here too (its
    annealing did nothing); its defaults differ (alpha = 30, temperature = 0.5, categorical_dim
    required): vaezoo's apply when a key is left out.
    """

    loss_keys = (
        "loss", "Reconstruction_Loss", "KLD_Continuous", "KLD_Discrete",
        "Capacity_Continuous", "Capacity_Discrete", "Temperature",
    )  # fmt: skip
    output_cls = JointOutput
    kl_terms = ("KLD_Continuous", "KLD_Discrete")

    argument_aliases = {
        "latent_min_capacity": "cont_min_capacity",
        "latent_max_capacity": "cont_max_capacity",
        "latent_gamma": "cont_gamma",
        "latent_num_iter": Alias("cont_capacity_steps", as_int),
        "categorical_min_capacity": "disc_min_capacity",
        "categorical_max_capacity": "disc_max_capacity",
        "categorical_gamma": "disc_gamma",
        "categorical_num_iter": Alias("disc_capacity_steps", as_int),
        "alpha": "recon_weight",
    }

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        categorical_dim: int | list[int] = 10,
        cont_min_capacity: float = 0.0,
        cont_max_capacity: float = 25.0,
        cont_gamma: float | None = None,
        cont_capacity_steps: int = 25_000,
        disc_min_capacity: float = 0.0,
        disc_max_capacity: float = 25.0,
        disc_gamma: float | None = None,
        disc_capacity_steps: int = 25_000,
        hidden_dims: list[int] | None = None,
        temperature: float = 1.0,
        anneal_rate: float = 3e-5,
        anneal_interval: int = 100,
        recon_weight: float = 1.0,
        *,
        gamma: float = 30.0,
        min_temperature: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.counts = [categorical_dim] if isinstance(categorical_dim, int) else list(categorical_dim)
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)  # reads counts: code_features
        self.recon_weight = recon_weight
        self.cont_gamma = gamma if cont_gamma is None else cont_gamma
        self.disc_gamma = gamma if disc_gamma is None else disc_gamma
        # (minimum, maximum, steps) of each capacity's linear rise
        self.cont_capacity = (cont_min_capacity, cont_max_capacity, cont_capacity_steps)
        self.disc_capacity = (disc_min_capacity, disc_max_capacity, disc_capacity_steps)
        minimum = default_min_temperature(temperature) if min_temperature is None else min_temperature
        schedule = (temperature, minimum, anneal_rate, anneal_interval)
        self.categorical = RelaxedCategorical(self.encoder_features(), self.counts, *schedule)

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        return GaussianHead(in_features, latent_dim)  # the continuous part; the categorical follows

    def code_features(self) -> int:
        return self.latent_dim + sum(self.counts)  # z and one one-hot block per categorical variable

    def encode(self, input: Tensor) -> JointPosterior:
        """q(z|x) q(c|x), the Gaussian and the categorical parts from the same features;
        unpacks as PyTorch-VAE's ``[mu, log_var, logits]``."""
        features = self.encoder(input)  # (B, F)
        gaussian = DiagonalGaussian(*self.head(features))  # (B, D)
        return JointPosterior(
            gaussian, RelaxedCategoricalPosterior(self.categorical(features), self.categorical)
        )

    def loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        temperature = self.categorical.temperature
        step = temperature.current_step(kwargs.get("global_step"))  # the last training step if absent
        recon = self.reconstruction_loss(self.recon_params(output), output.input).mean()
        kl_cont = gaussian_kl(output.mu, output.log_var).mean()
        kl_disc = self.categorical.kl(output.logits).mean()  # summed over the categorical variables
        c_cont = rising_capacity(step, *self.cont_capacity)
        c_disc = min(rising_capacity(step, *self.disc_capacity), self.categorical.max_kl)
        capacity_terms = (
            self.cont_gamma * (kl_cont - c_cont).abs() + self.disc_gamma * (kl_disc - c_disc).abs()
        )
        loss = self.recon_weight * recon + M_N * capacity_terms
        return {
            "loss": loss,
            "Reconstruction_Loss": recon.detach(),
            "KLD_Continuous": kl_cont.detach(),
            "KLD_Discrete": kl_disc.detach(),
            "Capacity_Continuous": torch.tensor(c_cont),
            "Capacity_Discrete": torch.tensor(c_disc),
            "Temperature": torch.tensor(temperature(step)),
        }

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        """z ~ N(0, I) and a uniformly drawn one-hot per categorical variable: (N, D + sum Q)."""
        z = torch.randn(num_samples, self.latent_dim, device=device)
        return torch.cat([z, self.categorical.sample_prior(num_samples, device)], dim=1)

    # -- evaluation: Gaussian z and exact one-hot c -----------------------------------------------
    def embed(self, x: Tensor, **kwargs: Any) -> Tensor:
        return self.encode(x).mode()  # (B, D + sum Q): the mean and the most probable classes

    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        mu, log_var, logits = self.encode(x)
        continuous = per_dimension(DiagonalGaussian(mu, log_var)).kl_standard_normal()  # (B, D)
        return torch.cat([continuous, kl_per_variable(self.categorical, logits)], dim=1)  # (B, D + K)

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        mu, log_var, logits = self.encode(x)
        gaussian = expand_samples(DiagonalGaussian(mu, log_var), num_samples)  # (B, S, D)
        z = gaussian.rsample()
        codes, log_q_codes = sample_one_hot(self.categorical, logits, num_samples)  # (B, S, sum Q), (B, S)
        log_prior = log_standard_normal(z) - self.categorical.max_kl  # uniform p(c) = prod 1 / Q_k
        return torch.cat([z, codes], dim=-1), log_prior, gaussian.log_prob(z) + log_q_codes
