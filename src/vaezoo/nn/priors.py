"""Learned priors over latents: mixtures, the VampPrior, and conditional Gaussians for hierarchies.

All of them speak :class:`~vaezoo.nn.distributions.DiagonalGaussian`'s language (``log_prob``,
samples), so a model can swap N(0, I) for any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from vaezoo.losses.importance import log_mean_exp
from vaezoo.nn.blocks import GaussianHead, output_activation
from vaezoo.nn.distributions import DiagonalGaussian


class GaussianMixture:
    """The equal-weight mixture (1/K) sum_k N(mu_k, diag sigma_k^2) of K diagonal Gaussians, (K, D)."""

    def __init__(self, mu: Tensor, log_var: Tensor) -> None:
        self.components = DiagonalGaussian(mu, log_var)  # (K, D) each

    @property
    def num_components(self) -> int:
        return self.components.mu.shape[0]

    def log_prob(self, z: Tensor) -> Tensor:
        """log (1/K) sum_k N(z; mu_k, sigma_k^2), (..., D) -> (...)."""
        per_component = self.components.log_prob(z.unsqueeze(-2))  # (..., K)
        return log_mean_exp(per_component, dim=-1)

    def sample(self, num_samples: int) -> Tensor:
        """Pick a component uniformly for each sample, then draw from it: (N, D)."""
        mu, log_var = self.components.mu, self.components.log_var
        k = torch.randint(self.num_components, (num_samples,), device=mu.device)  # (N,)
        return DiagonalGaussian(mu[k], log_var[k]).rsample()


@contextmanager
def running_batch_norm(module: nn.Module) -> Iterator[None]:
    """Within the block, the BatchNorm layers of ``module`` normalise with their running statistics
    and leave them unchanged, as in evaluation; gradients still flow. For inputs that are not data
    (e.g. pseudo-inputs), so that they neither get statistics of their own nor shift the data's."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [m.training for m in norms]
    try:
        for norm in norms:
            norm.eval()
        yield
    finally:
        for norm, mode in zip(norms, modes):
            norm.train(mode)


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k q(z | u_k): the encoder's posteriors at K learned pseudo-inputs u_k
    (Tomczak & Welling 2018, "VAE with a VampPrior", Eq. 9).

    The pseudo-inputs are an unconstrained ``(K, C, H, W)`` parameter passed through the decoder's
    output activation (``sigmoid`` for data in [0, 1], ``tanh`` for [-1, 1], ``none``), so they
    always lie in the data's range; initialised from standard normal noise, i.e. images of
    scattered grey levels across the whole range.
    """

    def __init__(self, num_components: int, input_shape: Sequence[int], data_range: str = "sigmoid") -> None:
        super().__init__()
        if num_components < 1:
            raise ValueError(f"a VampPrior needs at least one pseudo-input, not {num_components}")
        self.raw_pseudo_inputs = nn.Parameter(torch.randn(num_components, *input_shape))  # (K, C, H, W)
        self.squash = output_activation(data_range)

    def pseudo_inputs(self) -> Tensor:
        return self.squash(self.raw_pseudo_inputs)  # (K, C, H, W), in the data range

    def forward(self, encode: Callable[[Tensor], list[Tensor]]) -> GaussianMixture:
        """The prior as a mixture, given the model's ``encode`` (images -> [mu, log_var, ...])."""
        mu, log_var = encode(self.pseudo_inputs())[:2]  # (K, D) each
        return GaussianMixture(mu, log_var)


class ConditionalGaussian(nn.Module):
    """A learned Gaussian p(z | h) = N(mu(h), diag sigma^2(h)) with one hidden layer, e.g. the
    top-down prior p(z_i | z_{i+1}) of a hierarchical VAE."""

    def __init__(self, in_features: int, latent_dim: int, width: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(in_features, width), nn.LeakyReLU())
        self.head = GaussianHead(width, latent_dim)

    def forward(self, h: Tensor) -> DiagonalGaussian:
        mu, log_var = self.head(self.hidden(h))  # (B, D), (B, D)
        return DiagonalGaussian(mu, log_var)


def precision_weighted(first: DiagonalGaussian, second: DiagonalGaussian) -> DiagonalGaussian:
    """The normalised product of two diagonal Gaussians (Sønderby et al. 2016, Eqs. 18-19)::

        sigma^2 = 1 / (sigma_1^-2 + sigma_2^-2),   mu = (mu_1 sigma_1^-2 + mu_2 sigma_2^-2) * sigma^2

    computed in log-space: log sigma^2 = -logaddexp(-log sigma_1^2, -log sigma_2^2), and mu_1's share
    of the precision is sigmoid(log sigma_2^2 - log sigma_1^2).
    """
    log_var = -torch.logaddexp(-first.log_var, -second.log_var)
    first_share = torch.sigmoid(second.log_var - first.log_var)
    mu = first_share * first.mu + (1.0 - first_share) * second.mu
    return DiagonalGaussian(mu, log_var)
