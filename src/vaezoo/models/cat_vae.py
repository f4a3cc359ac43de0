"""The categorical VAE of Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax" (ICLR 2017)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.models.autoencoder import ConvAutoencoder
from vaezoo.nn.distributions import Posterior
from vaezoo.nn.gumbel import RelaxedCategorical, kl_to_uniform
from vaezoo.registry import register_model


class CategoricalOutput(NamedTuple):
    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    logits: Tensor  # (B, N * Q) unnormalised log q(c|x): N variables with Q classes, side by side
    z: Tensor  # (B, N * Q) relaxed one-hot samples


DEFAULT_MIN_TEMPERATURE = 0.5  # Jang et al.'s floor of the annealed temperature (Sec. 4)


def default_min_temperature(temperature: float) -> float:
    """The floor of the annealing when none is given: 0.5, or the starting ``temperature`` if it
    is lower (then it stays there, as PyTorch-VAE's temperature always did)."""
    return min(DEFAULT_MIN_TEMPERATURE, temperature)


# -- exact (not relaxed) categorical codes, for evaluation -----------------------------------------
def variable_blocks(categorical: RelaxedCategorical, logits: Tensor) -> list[Tensor]:
    """The logits of ``categorical``'s variables as (B, K, Q) blocks, in the layout of the codes."""
    return [block.view(block.shape[0], -1, block.shape[-1]) for block in categorical.variables(logits)]


def one_hot_mode(categorical: RelaxedCategorical, logits: Tensor) -> Tensor:
    """The most probable class of every variable, one-hot, in the decoder's layout: (B, sum Q)."""
    blocks = variable_blocks(categorical, logits)
    return torch.cat([F.one_hot(b.argmax(-1), b.shape[-1]).to(logits).flatten(1) for b in blocks], dim=1)


def kl_per_variable(categorical: RelaxedCategorical, logits: Tensor) -> Tensor:
    """KL(q(c_k|x) || Uniform(Q_k)) of every variable: (B, K)."""
    return torch.cat([kl_to_uniform(block) for block in variable_blocks(categorical, logits)], dim=1)


def sample_one_hot(
    categorical: RelaxedCategorical, logits: Tensor, num_samples: int
) -> tuple[Tensor, Tensor]:
    """Exact one-hot draws c ~ q(c|x), (B, S, sum Q), and their log q(c|x), (B, S)."""
    codes: list[Tensor] = []
    log_q = logits.new_zeros(logits.shape[0], num_samples)  # (B, S)
    for block in variable_blocks(categorical, logits):  # (B, K, Q)
        log_p = F.log_softmax(block, dim=-1).unsqueeze(1).expand(-1, num_samples, -1, -1)  # (B, S, K, Q)
        classes = torch.distributions.Categorical(logits=log_p).sample()  # (B, S, K)
        codes.append(F.one_hot(classes, block.shape[-1]).to(logits).flatten(2))  # (B, S, K * Q)
        log_q = log_q + log_p.gather(-1, classes.unsqueeze(-1)).squeeze(-1).sum(-1)
    return torch.cat(codes, dim=-1), log_q


class RelaxedCategoricalPosterior(Posterior):
    """q(c|x) of independent categorical variables from their logits (B, sum Q), drawn as
    Gumbel-softmax relaxations at the temperature of the training step; unpacks as ``[logits]``."""

    def __init__(self, logits: Tensor, categorical: RelaxedCategorical) -> None:
        self.logits, self.categorical = logits, categorical

    def rsample(self, global_step: int | None = None) -> Tensor:
        return self.categorical.rsample(self.logits, global_step)  # (B, sum Q), relaxed one-hot

    def mode(self) -> Tensor:
        return one_hot_mode(self.categorical, self.logits)  # (B, sum Q), one-hot

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(c|x) of one-hot codes c (B, sum Q), summed over the variables."""
        blocks = zip(variable_blocks(self.categorical, self.logits), variable_blocks(self.categorical, z))
        return torch.stack([(F.log_softmax(logit, -1) * c).flatten(1).sum(1) for logit, c in blocks]).sum(0)

    def kl(self, other: Posterior) -> Tensor:
        """KL(q || other) between categoricals of the same layout (:meth:`uniform` is the prior)."""
        if not isinstance(other, RelaxedCategoricalPosterior):
            raise TypeError(f"a categorical's closed-form KL needs a categorical, not {type(other).__name__}")
        pairs = zip(
            variable_blocks(self.categorical, self.logits), variable_blocks(self.categorical, other.logits)
        )
        terms = [
            (F.softmax(q, -1) * (F.log_softmax(q, -1) - F.log_softmax(p, -1))).flatten(1).sum(1)
            for q, p in pairs
        ]
        return torch.stack(terms).sum(0)  # (B,), summed over the variables

    def uniform(self) -> RelaxedCategoricalPosterior:
        """The uniform prior over the same variables (zero logits)."""
        return RelaxedCategoricalPosterior(torch.zeros_like(self.logits), self.categorical)

    def as_list(self) -> list[Tensor]:
        return [self.logits]

    def fields(self) -> dict[str, Tensor]:
        return {"logits": self.logits}


@register_model(aliases=("GumbelVAE",))
class CategoricalVAE(ConvAutoencoder):
    """VAE with ``latent_dim`` categorical latents of ``categorical_dim`` classes (Jang et al. 2017).

    q(c|x) is a product of N = ``latent_dim`` categoricals; samples are relaxed with the
    Gumbel-softmax (Eq. 2) at temperature tau, annealed as in Sec. 2.2 / 4:
    tau = max(temperature * exp(-anneal_rate * t), min_temperature), t the training step rounded
    down to ``anneal_interval``. The prior p(c) is uniform over the Q classes of each variable, so
    the KL term of the ELBO is, per image, ``sum_n (sum_k q_nk log q_nk + log Q)``::

        loss = mean_batch[ recon(x, x_hat) ] + M_N * mean_batch[ KL(q(c|x) || Uniform(Q)) ]

    with ``recon`` the squared error at ``recon_reduction`` scale (``"sum"``: M_N = 1 is the ELBO),
    multiplied by ``recon_weight`` (PyTorch-VAE's ``alpha``; 1, the ELBO, unless given).
    Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD`` and ``Temperature`` (the tau in use).
    ``likelihood`` (with ``likelihood_scale``, ``likelihood_std``) works as in :class:`VanillaVAE`.

    Evaluation uses the discrete model, with exact one-hot codes where training relaxes them:
    ``embed`` is the one-hot of each variable's most probable class (B, N * Q); ``kl_per_dimension``
    the KL of each variable to the uniform prior, (B, N); ``log_importance_weights`` draw one-hot c
    from q(c|x), with log q(c|x) = sum_n log softmax(logits_n)[c_n] and log p(c) = -N log Q.

    Fixes to PyTorch-VAE: the temperature really anneals (it had ``min_temp = temp``) and follows the
    global step, restored on resume (it used ``batch_idx``, which restarts every epoch); the
    recon weight ``alpha`` defaults to 1 (PyTorch-VAE: 30), so ``M_N`` alone balances the terms,
    as in every vaezoo model.

    Arguments in PyTorch-VAE's order, ``(in_channels, latent_dim, categorical_dim, hidden_dims,
    temperature, anneal_rate, anneal_interval, recon_weight)``, and the rest by keyword only.
    PyTorch-VAE's ``alpha`` is ``recon_weight`` and its ``img_size`` ``image_size``; its
    ``temperature`` is the starting temperature here too, annealed down to ``min_temperature``
    (None: 0.5, or ``temperature`` itself if that is lower).
    """

    loss_keys = ("loss", "Reconstruction_Loss", "KLD", "Temperature")
    kl_terms = ("KLD",)
    output_cls = CategoricalOutput
    argument_aliases = {"alpha": "recon_weight"}
    head_name = "categorical"
    categorical: RelaxedCategorical

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        categorical_dim: int = 40,
        hidden_dims: list[int] | None = None,
        temperature: float = 1.0,
        anneal_rate: float = 3e-5,
        anneal_interval: int = 100,
        recon_weight: float = 1.0,
        *,
        min_temperature: float | None = None,
        **kwargs: Any,
    ) -> None:
        # read by build_head and code_features, which ConvAutoencoder's constructor calls
        self.categorical_dim, self.recon_weight = categorical_dim, recon_weight
        minimum = default_min_temperature(temperature) if min_temperature is None else min_temperature
        self.temperature_schedule = (temperature, minimum, anneal_rate, anneal_interval)
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        """Features -> logits of N = ``latent_dim`` variables of Q classes, sampled relaxed."""
        return RelaxedCategorical(
            in_features, [self.categorical_dim] * latent_dim, *self.temperature_schedule
        )

    def code_features(self) -> int:
        return self.latent_dim * self.categorical_dim  # N one-hot blocks of Q

    def encode(self, input: Tensor) -> RelaxedCategoricalPosterior:
        """q(c|x): logits of the N variables, (B, N * Q); unpacks as PyTorch-VAE's ``[logits]``."""
        return RelaxedCategoricalPosterior(self.categorical(self.encoder(input)), self.categorical)

    def loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        recon = self.reconstruction_loss(self.recon_params(output), output.input).mean()
        kld = self.categorical.kl(output.logits).mean()  # summed over the N variables, mean over B
        loss = self.recon_weight * recon + M_N * kld
        temperature = torch.tensor(self.categorical.temperature(kwargs.get("global_step")))
        return {
            "loss": loss,
            "Reconstruction_Loss": recon.detach(),
            "KLD": kld.detach(),
            "Temperature": temperature,
        }

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        """One uniformly drawn class per variable, one-hot: (num_samples, N * Q)."""
        return self.categorical.sample_prior(num_samples, device)

    # -- evaluation: the discrete model -----------------------------------------------------------
    def embed(self, x: Tensor, **kwargs: Any) -> Tensor:
        return self.encode(x).mode()  # (B, N * Q), the most probable class of each variable

    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        return kl_per_variable(self.categorical, self.encode(x)[0])  # (B, N)

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        codes, log_posterior = sample_one_hot(self.categorical, self.encode(x)[0], num_samples)
        return codes, torch.full_like(log_posterior, -self.categorical.max_kl), log_posterior
