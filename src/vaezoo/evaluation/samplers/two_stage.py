"""A second VAE on the latents: the two-stage sampler of Dai & Wipf 2019."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vaezoo.evaluation.samplers.base import (
    LatentSampler,
    evaluating,
    fit_by_adam,
    register_sampler,
    standardization,
)
from vaezoo.losses import gaussian_kl, squared_error
from vaezoo.nn.latent_vae import LatentVAE, learned_variance_nll


@register_sampler
class TwoStageSampler(LatentSampler):
    """A second VAE on the latents (Dai & Wipf 2019, "Diagnosing and Enhancing VAE Models", Sec. 4).

    Stage 2 is vaezoo's :class:`~vaezoo.nn.latent_vae.LatentVAE`: u ~ N(0, I) of the codes'
    dimension M (the paper's kappa = d), an MLP q(u|z), and p(z|u) = N(z_hat(u), gamma I) with a
    learned scalar gamma, the paper's key point: gamma shrinks to the reconstruction error, so the KL
    term is weighted enough to push q(u) towards N(0, I). Its negative ELBO per code::

        ||z - z_hat(u)||^2 / (2 gamma) + (M/2) log gamma + KL(q(u|z) || N(0, I))

    is minimised with Adam for ``steps`` minibatches under a cosine learning-rate decay.

    Sampling draws u ~ N(0, I) and returns z_hat(u) + sqrt(gamma) * eps, a draw from the fitted
    density p(z) = E_u N(z; z_hat(u), gamma I). The paper returns the mean z_hat(u)
    (``decoder_noise=False``), which is the same once gamma -> 0; but on small or nearly Gaussian
    code sets stage 2 may settle with q(u|z) = p(u) and gamma = the codes' variance (a Gaussian fit),
    and then the mean alone is one point for every u. Two further choices of ours: with
    ``standardize`` the codes are shifted and scaled per dimension before fitting (conditioning) and
    the samples mapped back; training is seeded, runs on the CPU in one thread (the net is too small
    to gain from more) and in a forked RNG, leaving the global stream untouched.
    """

    name = "two_stage"
    summary = "a second VAE fitted on training latents"

    def __init__(
        self,
        width: int = 256,
        steps: int = 2000,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
        standardize: bool = True,
        decoder_noise: bool = True,
        progress: bool = False,
    ) -> None:
        super().__init__()
        if min(width, steps, batch_size) < 1 or lr <= 0:
            raise ValueError(
                f"width, steps, batch_size and lr must be positive, got {(width, steps, batch_size, lr)}"
            )
        self.width, self.steps, self.batch_size, self.lr = width, steps, batch_size, lr
        self.seed, self.standardize, self.decoder_noise = seed, standardize, decoder_noise
        self.progress = progress
        self.losses: list[float] = []  # the training loss at every step, to check convergence

    def config(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.seed,
            "standardize": self.standardize,
            "decoder_noise": self.decoder_noise,
        }

    def describe(self, dims: int) -> str:
        return f"a latent VAE of width {self.width}, {self.steps} steps"

    def _fit(self, flat: Tensor) -> None:
        flat = flat.float()  # (N, M)
        self.shift, self.scale = standardization(flat, self.standardize)  # (M,) each
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                self.net = LatentVAE(flat.shape[1], self.width)
                data = (flat - self.shift) / self.scale  # (N, M)
                self.losses = train_latent_vae(
                    self.net, data, self.steps, self.batch_size, self.lr, self.progress
                )
        finally:
            torch.set_num_threads(threads)

    def _sample(self, num_samples: int, generator: torch.Generator | None) -> Tensor:
        u = torch.randn(num_samples, self.shift.shape[0], generator=generator)  # (n, M) ~ N(0, I)
        with evaluating(self.net):
            z = self.net.decoder(u)  # (n, M) the mean of p(z|u)
            if self.decoder_noise:
                z = z + torch.exp(0.5 * self.net.log_gamma) * torch.randn(z.shape, generator=generator)
        return z * self.scale + self.shift

    def _state(self) -> dict[str, Tensor]:
        net = {f"net.{key}": value for key, value in self.net.state_dict().items()}
        return {"shift": self.shift, "scale": self.scale, **net}

    def _load_state(self, state: dict[str, Tensor]) -> None:
        self.shift, self.scale = state["shift"], state["scale"]
        self.net = LatentVAE(self.shift.shape[0], self.width)
        self.net.load_state_dict({key[4:]: value for key, value in state.items() if key.startswith("net.")})
        self.net.eval()


def train_latent_vae(
    net: LatentVAE, data: Tensor, steps: int, batch_size: int, lr: float, progress: bool = False
) -> list[float]:
    """Fit stage 2 to codes ``data`` (N, M) by minibatch Adam with cosine decay; the loss per step."""
    dims = data.shape[1]

    def negative_elbo(rows: Tensor) -> Tensor:
        z = data[rows]  # (B, M)
        posterior = net.encoder(z)  # q(u|z)
        z_hat = net.decoder(posterior.rsample())  # (B, M)
        nll = learned_variance_nll(squared_error(z_hat, z, "sum"), net.log_gamma, dims)  # (B,)
        return (nll + gaussian_kl(posterior.mu, posterior.log_var)).mean()

    return fit_by_adam(
        net,
        negative_elbo,
        data.shape[0],
        steps,
        batch_size,
        lr,
        description="two-stage sampler",
        progress=progress,
    )
