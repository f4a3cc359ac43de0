"""BaseVAE: the model API of PyTorch-VAE, kept so its users can switch, with its defects fixed.

Every model is a plain ``nn.Module`` (no Lightning, data or logging inside) with

- ``encode(x) -> list[Tensor]``              e.g. ``[mu, log_var]``
- ``decode(z) -> Tensor``                   latents -> images
- ``reparameterize(mu, log_var) -> Tensor``
- ``forward(x, **kwargs)``                  a tuple whose item 0 is the reconstruction and item 1 the input
- ``loss_function(*forward_output, M_N=kl_weight, **kwargs) -> dict``  with ``loss`` and named terms
- ``sample(num_samples, current_device, **kwargs)`` and ``generate(x, **kwargs)``

The constructor's arguments are recorded in ``model.config`` so a model can be rebuilt from it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import Tensor, nn

from vaezoo.nn.distributions import DiagonalGaussian

Device = int | str | torch.device | None


def resolve_device(device: Device, fallback: torch.device) -> torch.device:
    """Accept PyTorch-VAE's int GPU index, a string or a torch.device; None means ``fallback``.

    An int names a CUDA device; on a machine without CUDA there is no such device, so it means the CPU.
    """
    if device is None:
        return fallback
    if isinstance(device, int):
        return torch.device("cuda", device) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(device)


def _record_config(init: Any) -> Any:
    """Wrap a constructor so the outermost call stores its bound arguments in ``self.config``."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        outermost = "_recording_config" not in self.__dict__
        if outermost:
            self.__dict__["_recording_config"] = True
        init(self, *args, **kwargs)
        if outermost:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config: dict[str, Any] = {}
            for name, value in list(bound.arguments.items())[1:]:
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    config.update(value)
                elif kind is not inspect.Parameter.VAR_POSITIONAL:
                    config[name] = list(value) if isinstance(value, tuple) else value
            self.__dict__["config"] = config
            del self.__dict__["_recording_config"]

    return wrapper


class BaseVAE(nn.Module):
    """Common API of every vaezoo model (PyTorch-VAE's ``BaseVAE``, device-agnostic)."""

    latent_dim: int
    config: dict[str, Any]
    loss_keys: tuple[str, ...] = ("loss",)  # every key loss_function returns (checked by the contract tests)
    samples_from_prior: bool = True  # False: sample() raises NotImplementedError saying why (e.g. VQ-VAE)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            cls.__init__ = _record_config(cls.__init__)  # type: ignore[method-assign]

    # -- the PyTorch-VAE API ------------------------------------------------------------------
    def encode(self, input: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, input: Tensor, **kwargs: Any) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def loss_function(self, *inputs: Any, **kwargs: Any) -> dict[str, Tensor]:
        raise NotImplementedError

    def reparameterize(self, mu: Tensor, log_var: Tensor) -> Tensor:
        """z = mu + sigma * eps with eps ~ N(0, I) (Kingma & Welling 2014, Sec. 2.4)."""
        return DiagonalGaussian(mu, log_var).rsample()

    def sample_prior(self, num_samples: int, device: torch.device) -> Tensor:
        """Latents from the prior p(z); N(0, I) unless a model overrides it."""
        return torch.randn(num_samples, self.latent_dim, device=device)

    def sample(self, num_samples: int, current_device: Device = None, **kwargs: Any) -> Tensor:
        """Decode ``num_samples`` latents drawn from the prior; device as int, str or torch.device."""
        device = resolve_device(current_device, self.device)
        return self.decode(self.sample_prior(num_samples, device))

    def generate(self, x: Tensor, **kwargs: Any) -> Tensor:
        """The reconstruction of ``x``."""
        return self.forward(x, **kwargs)[0]

    # -- training hooks (the generic LightningModule asks; models never import Lightning) -------
    def auxiliary_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by a second optimizer on ``auxiliary_loss`` (e.g. FactorVAE's
        discriminator) and left out of the main one. A model that returns any is trained with
        manual optimisation: main step on ``loss_function``, then auxiliary step."""
        return []

    def auxiliary_loss(self, output: Any, **kwargs: Any) -> dict[str, Tensor]:
        """The auxiliary objective on a forward output: a dict with ``loss`` plus named terms."""
        raise NotImplementedError(f"{type(self).__name__} has no auxiliary objective")

    auxiliary_lr: float | None = None  # learning rate of the auxiliary optimizer (None: the main lr)

    def auxiliary_optimizer_kwargs(self) -> dict[str, Any]:
        """Further keyword arguments of the auxiliary optimizer (e.g. Adam ``betas``)."""
        return {}

    # -- conveniences ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
