"""BaseVAE: the model API of PyTorch-VAE, kept so its users can switch, with its defects fixed.

Every model is a plain ``nn.Module`` (no Lightning, data or logging inside) with

- ``encode(x) -> list[Tensor]``              e.g. ``[mu, log_var]``
- ``decode(z) -> Tensor``                   latents -> images
- ``reparameterize(mu, log_var) -> Tensor``
- ``forward(x, **kwargs)``                  a tuple whose item 0 is the reconstruction and item 1 the input
- ``loss_function(*forward_output, M_N=kl_weight, **kwargs) -> dict``  with ``loss`` and named terms
  (the output rebuilt as the model's named tuple, then ``loss(output, M_N, **kwargs)``, the hook)
- ``sample(num_samples, current_device, **kwargs)`` and ``generate(x, **kwargs)``

The constructor's arguments are recorded in ``model.config`` so a model can be rebuilt from it.

The decoder's raw output, ``decode_params(z)``, holds the parameters of the likelihood p(x|z)
(``model.likelihood``, see :mod:`vaezoo.nn.likelihoods`: logits for ``bernoulli``, the image itself
for ``mse``); ``decode(z)`` is always an image, the likelihood's mean.

For evaluation, every model answers (with defaults here, overridden where a model differs):

- ``embed(x, **kwargs) -> Tensor``: the deterministic code, in the form ``decode`` takes;
- ``kl_per_dimension(x, **kwargs) -> (B, D)``: KL(q(z_d|x) || p(z_d)) per latent dimension, or
  ``NotImplementedError`` saying why there is none;
- ``log_importance_weights(x, num_samples, **kwargs) -> (B, S)``: log p(x|z_s) + log p(z_s)
  - log q(z_s|x) with z_s ~ q(z|x), in nats, or ``NotImplementedError`` saying why;
- ``likelihood_is_normalized``: whether log p(x|z) above is a normalised likelihood.
"""

from __future__ import annotations

import collections
import functools
import inspect
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from vaezoo.arguments import Alias, resolve_arguments
from vaezoo.losses.reconstruction import resolve_recon_reduction
from vaezoo.nn.distributions import DiagonalGaussian
from vaezoo.nn.likelihoods import LIKELIHOODS, Likelihood, build_likelihood

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
    """Wrap a constructor so the outermost call checks and translates its keyword arguments
    (:func:`~vaezoo.arguments.resolve_arguments`) and stores the bound arguments in
    ``self.config``."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        outermost = "_recording_config" not in self.__dict__
        if outermost:
            kwargs = resolve_arguments(type(self), kwargs)
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


@functools.cache
def with_recon_params(output_cls: Any) -> Any:
    """``output_cls`` (a NamedTuple) with one more, last field ``recon_params``: the likelihood's
    parameters of the reconstruction(s) the loss scores (e.g. Bernoulli logits), which ``recons``
    -- always an image -- cannot carry. Models with a likelihood other than ``mse`` return it."""
    fields = [*output_cls._fields, "recon_params"]
    return collections.namedtuple(f"{output_cls.__name__}WithParams", fields, module=output_cls.__module__)


ARCHITECTURES = ("conv", "mlp")  # "mlp": vector data (B, D), for models with supports_vectors


class BaseVAE(nn.Module):
    """Common API of every vaezoo model (PyTorch-VAE's ``BaseVAE``, device-agnostic)."""

    latent_dim: int
    config: dict[str, Any]
    loss_keys: tuple[str, ...] = ("loss",)  # every key loss_function returns (checked by the contract tests)
    samples_from_prior: bool = True  # False: sample() raises NotImplementedError saying why (e.g. VQ-VAE)
    # True: sample(n, device, temperature=t) scales the prior's noise by t (NVAE's reduced temperature).
    samples_with_temperature: ClassVar[bool] = False
    is_conditional: ClassVar[bool] = False  # True: forward/sample/generate need labels= (e.g. a CVAE)
    supports_vectors: ClassVar[bool] = False  # True: architecture="mlp" trains it on vectors (B, D)
    # True: trained on pairs that share factors (weak supervision, e.g. Ada-GVAE); forward(x, pairs=True)
    # reads rows i and B+i of a (2B, ...) batch as a pair, and still works on a plain batch.
    trains_on_pairs: ClassVar[bool] = False
    # Where the latents live, for the samplers of a model's own geometry: "euclidean" (R^D),
    # "hypersphere" (the unit sphere S^{D-1}, SVAE) or "poincare_ball" (the Poincare ball, PoincareVAE).
    latent_geometry: ClassVar[str] = "euclidean"
    latent_metric: ClassVar[bool] = False  # True: a learned metric on z, model.metric() (RHVAE)
    codebook_size: int | None = None  # K of a vector-quantised latent (its codes(x) are indices < K)
    # The loss terms that are KL(q(z|x) || p(z)) in closed form; kl_per_dimension's rows sum to them.
    kl_terms: ClassVar[tuple[str, ...]] = ()
    output_cls: Any = None  # the NamedTuple forward returns (models that use ``pack``)
    likelihood: Likelihood  # p(x|z), set by ``setup_likelihood``
    recon_reduction: str
    own_reconstruction: str | None = None  # set: the model's reconstruction term, which admits only "mse"
    # PyTorch-VAE's keywords for our arguments (merged along the MRO; see vaezoo.arguments) ...
    argument_aliases: ClassVar[dict[str, str | Alias]] = {"img_size": "image_size"}
    # ... and the ones it accepts but never uses, with the reason (dropped with a warning).
    ignored_arguments: ClassVar[dict[str, str]] = {}
    # Arguments that name files on the training machine and serve only the loss, with the value an
    # exported model is rebuilt with (DFCVAE's VGG weights: inference never runs the VGG).
    training_only_arguments: ClassVar[dict[str, Any]] = {}

    def check_architecture(self, architecture: str) -> str:
        """``architecture`` if it is one of ARCHITECTURES and the model supports it."""
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture {architecture!r} is not one of {ARCHITECTURES}")
        if architecture == "mlp" and not self.supports_vectors:
            from vaezoo.registry import get_model_class, list_models

            takers = [name for name in list_models() if get_model_class(name).supports_vectors]
            raise ValueError(
                f"{type(self).__name__} does not support architecture 'mlp' (vector data): it works on "
                f"images only; models that take vectors: {', '.join(takers)}"
            )
        return architecture

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            cls.__init__ = _record_config(cls.__init__)  # type: ignore[method-assign]

    # -- the PyTorch-VAE API ------------------------------------------------------------------
    def encode(self, input: Tensor) -> Sequence[Tensor]:
        """The posterior's parameters, e.g. ``[mu, log_var]``, or a distribution object that unpacks
        like them (:mod:`vaezoo.nn.distributions`)."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        """Latents -> images: the mean of p(x|z) under the decoder's parameters."""
        return self.likelihood.mean(self.decode_params(z))

    def decode_params(self, z: Tensor) -> Tensor:
        """Latents -> the decoder's raw output, the parameters of p(x|z) (B, C, H, W)."""
        raise NotImplementedError(f"{type(self).__name__} defines no decode_params")

    def decode_with_params(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(image, likelihood parameters) of latents z, from one decoder pass."""
        params = self.decode_params(z)
        return self.likelihood.mean(params), params

    def forward(self, input: Tensor, **kwargs: Any) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def loss_function(self, *inputs: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        """PyTorch-VAE's call, ``loss_function(*forward_output, M_N=kl_weight, ...)``: the forward
        output is rebuilt here, once, as the model's named tuple and scored by :meth:`loss`."""
        return self.loss(self.output_cls(*inputs[: len(self.output_cls._fields)]), M_N=M_N, **kwargs)

    def loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        """The objective of one forward ``output`` (the model's ``output_cls``): a dict with ``loss``
        (to minimise) and the named terms to log; ``M_N`` is the KL weight."""
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

    # -- the likelihood p(x|z) -----------------------------------------------------------------
    def setup_likelihood(
        self,
        likelihood: str,
        output_activation: str,
        recon_reduction: str | None,
        scale: str = "learned",
        std: float = 0.1,
    ) -> str:
        """Check and store the likelihood and the reconstruction scale; return the activation of
        the decoder's last layer (``"none"`` for Bernoulli logits, else ``output_activation``)."""
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood '{likelihood}' is not one of {LIKELIHOODS}")
        if self.own_reconstruction is not None and likelihood != "mse":
            raise ValueError(
                f"{type(self).__name__} takes likelihood 'mse' only, not '{likelihood}': "
                f"{self.own_reconstruction}"
            )
        self.recon_reduction = resolve_recon_reduction(recon_reduction, likelihood)
        self.likelihood = build_likelihood(likelihood, output_activation, self.recon_reduction, scale, std)
        if likelihood != "mse":
            self.output_cls = with_recon_params(type(self).output_cls)
        return self.likelihood.decoder_activation

    def pack(self, **values: Tensor) -> NamedTuple:
        """``forward``'s output from named values; the names ``output_cls`` lacks are dropped."""
        return self.output_cls(**{name: values[name] for name in self.output_cls._fields})

    def recon_params(self, output: Any, field: str = "recons") -> Tensor:
        """The likelihood parameters of a forward output: ``recon_params``, or the image in ``field``."""
        return getattr(output, "recon_params", getattr(output, field))

    def reconstruction_loss(self, recons: Tensor, input: Tensor) -> Tensor:
        """Per-example reconstruction term, (B,): -log p(x|z) from the likelihood parameters
        ``recons`` (for ``mse``, the squared error at ``recon_reduction`` scale)."""
        return -self.likelihood.log_prob(input, recons)

    def log_likelihood(self, input: Tensor, params: Tensor) -> Tensor:
        """log p(x|z) per example, (B,), as the evaluation reports it: minus the reconstruction term."""
        return -self.reconstruction_loss(params, input)

    @property
    def likelihood_is_normalized(self) -> bool:
        """True only when ``log_likelihood`` is a normalised log density or mass (not ``mse``,
        log-cosh, MS-SSIM or feature losses)."""
        likelihood = getattr(self, "likelihood", None)
        return bool(likelihood is not None and likelihood.normalized)

    # -- evaluation: codes, KL per dimension, importance weights --------------------------------
    def embed(self, x: Tensor, **kwargs: Any) -> Tensor:
        """The deterministic code of ``x`` in the form ``decode`` takes: by default ``encode(x)[0]``
        (the posterior mean of a Gaussian encoder, the code of a deterministic one)."""
        return self.encode(x)[0]

    def codes(self, x: Tensor, **kwargs: Any) -> Tensor:
        """The discrete codes of ``x``: codebook indices (B, ...) for a model with a ``codebook_size``."""
        raise NotImplementedError(f"{type(self).__name__} has no discrete codes (no codebook)")

    def latents_from_codes(self, codes: Tensor) -> Tensor:
        """The way back from :meth:`codes`: the latents (B, D, ...) of codebook indices (B, ...), in the
        form ``decode`` takes (e.g. codes drawn from a prior fitted over them)."""
        raise NotImplementedError(f"{type(self).__name__} has no discrete codes (no codebook)")

    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        """KL(q(z_d|x) || p(z_d)) of each latent dimension, (B, D)."""
        raise NotImplementedError(f"{type(self).__name__} defines no per-dimension KL")

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        """``num_samples`` draws z ~ q(z|x) per input, in the form ``decode`` takes, (B, S, ...),
        with log p(z) and log q(z|x) of each, (B, S) -- over all latents of a hierarchy."""
        raise NotImplementedError(f"{type(self).__name__} defines no posterior to sample from")

    def log_importance_weights(self, x: Tensor, num_samples: int, **kwargs: Any) -> Tensor:
        """log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x), z_s ~ q(z|x): (B, S) in nats
        (Burda et al. 2016, Eq. 8). ``log p(x|z)`` is :meth:`log_likelihood`, normalised only when
        ``likelihood_is_normalized``; training weights (beta, M_N) play no part."""
        z, log_prior, log_posterior = self.sample_latents(x, num_samples, **kwargs)
        batch = x.shape[0]
        params = self.decode_params(z.flatten(0, 1))  # (B*S, C, H, W)
        targets = x.unsqueeze(1).expand(batch, num_samples, *x.shape[1:]).flatten(0, 1)
        log_likelihood = self.log_likelihood(targets, params).view(batch, num_samples)
        return log_likelihood + log_prior - log_posterior  # (B, S)

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
