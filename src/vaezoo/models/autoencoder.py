"""ConvAutoencoder: the conv encoder / decoder stacks, the likelihood and the loss pipeline that
most models share, written once.

A family on top of it says only what differs:

- ``build_head(in_features, latent_dim)``: encoder features -> the posterior's parameters (and
  ``code_features()`` when the decoder's input is wider than ``latent_dim``);
- ``encode(x)``: the posterior q(z|x) as a distribution object (:mod:`vaezoo.nn.distributions`:
  a Gaussian, a point mass, a Gamma ...), which unpacks like PyTorch-VAE's ``encode`` list;
- ``regularizer(output, kl_weight)``: the term added to the reconstruction loss (KL, MMD, ...).

``forward`` is the same for every family that draws its code in one step (Gaussian, point mass,
Gamma, categorical, joint): z ~ q(z|x) by ``rsample``, decoded, returned with the posterior's named
parameters. Models whose forward computes more keep their own: conditioning on labels (CVAE), a
hierarchy of latents (HVAE, LVAE), several samples per image (IWAE, MIWAE), a second stage
(Two-Stage), a quantiser (VQ-VAE). ``loss`` is the weighted reconstruction term plus the regulariser.

``architecture="mlp"`` swaps the conv stacks for MLPs (:class:`vaezoo.nn.blocks.MLPEncoder`) so the
model trains on vectors (B, D): ``in_channels`` is then D, the number of features, and
``hidden_dims`` are the MLP's layer widths. A family whose computation needs images (a label
channel, VGG features, MS-SSIM, a spatial codebook) declares ``supports_vectors = False`` and is
refused with ``"mlp"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NamedTuple

from torch import Tensor, nn

from vaezoo.arguments import require_positive
from vaezoo.models.base import BaseVAE
from vaezoo.nn.blocks import (
    DEFAULT_HIDDEN_DIMS,
    DEFAULT_MLP_HIDDEN_DIMS,
    ConvDecoder,
    ConvEncoder,
    MLPDecoder,
    MLPEncoder,
)
from vaezoo.nn.distributions import PointMass, Posterior
from vaezoo.nn.likelihoods import LikelihoodName


class ConvAutoencoder(BaseVAE):
    """Conv encoder -> head -> posterior -> z -> conv decoder -> p(x|z), for ``in_channels`` x
    ``image_size`` x ``image_size`` images (any size the stride-2 stack divides).

    ``likelihood``, ``likelihood_scale``, ``likelihood_std``, ``recon_reduction`` and
    ``output_activation`` choose p(x|z) and the scale of its term (see :class:`VanillaVAE`, which
    documents them for every model built on this class). ``architecture``: ``"conv"`` (images) or
    ``"mlp"`` (vectors of ``in_channels`` features; ``image_size`` is then unused and
    ``hidden_dims`` defaults to ``DEFAULT_MLP_HIDDEN_DIMS``).
    """

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        *,
        image_size: int = 64,
        output_activation: Literal["sigmoid", "tanh", "none"] = "sigmoid",
        recon_reduction: Literal["mean", "sum"] | None = None,
        likelihood: LikelihoodName = "mse",
        likelihood_scale: Literal["fixed", "learned"] = "learned",
        likelihood_std: float = 0.1,
        architecture: Literal["conv", "mlp"] = "conv",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.architecture = self.check_architecture(architecture)
        if hidden_dims is not None:
            self.hidden_dims = list(hidden_dims)
        elif architecture == "mlp":
            self.hidden_dims = list(DEFAULT_MLP_HIDDEN_DIMS)
        else:
            self.hidden_dims = list(self.default_hidden_dims)
        require_positive(
            in_channels=in_channels,
            latent_dim=latent_dim,
            hidden_dims=self.hidden_dims,
            image_size=image_size,
        )
        self.output_activation = output_activation
        self.input_shape: tuple[int, ...] = (
            (in_channels,) if architecture == "mlp" else (in_channels, image_size, image_size)
        )
        self.decoder_activation = self.setup_likelihood(
            likelihood, output_activation, recon_reduction, likelihood_scale, likelihood_std
        )
        self.encoder = self.build_encoder(self.encoder_channels(in_channels), image_size)
        setattr(self, self.head_name, self.build_head(self.encoder_features(), latent_dim))
        self.decoder = self.build_decoder(in_channels, image_size)

    # -- what a family says ---------------------------------------------------------------------
    # The attribute that holds the head (its state_dict prefix). A family whose hooks need its own
    # arguments sets them on ``self`` before calling this constructor, which calls the hooks.
    head_name: ClassVar[str] = "head"
    head: nn.Module
    default_hidden_dims: ClassVar[tuple[int, ...]] = tuple(DEFAULT_HIDDEN_DIMS)
    supports_vectors: ClassVar[bool] = True  # architecture "mlp" works: nothing here needs images

    def build_encoder(self, in_channels: int, image_size: int) -> nn.Module:
        """Images (B, C, H, W) -> features: the stride-2 conv stack over ``hidden_dims``, flattened;
        or, with architecture "mlp", vectors (B, ``in_channels``) -> features: the MLP."""
        if self.architecture == "mlp":
            return MLPEncoder(in_channels, self.hidden_dims)
        return ConvEncoder(in_channels, self.hidden_dims, image_size)

    def encoder_features(self) -> int:
        """The width of the encoder's output, which the head reads."""
        features = self.encoder.out_features  # ConvEncoder's flat feature width
        if not isinstance(features, int):
            raise TypeError(
                f"{type(self).__name__}: its encoder has no out_features; override encoder_features"
            )
        return features

    def build_decoder(self, out_channels: int, image_size: int) -> nn.Module:
        """Codes (B, ``code_features()``) -> the likelihood's parameters (B, C, H, W), or (B, D)
        with architecture "mlp": the mirrored stack."""
        if self.architecture == "mlp":
            return MLPDecoder(self.code_features(), out_channels, self.hidden_dims, self.decoder_activation)
        return ConvDecoder(
            self.code_features(), out_channels, self.hidden_dims, image_size, self.decoder_activation
        )

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        """Encoder features (B, F) -> the posterior's parameters."""
        raise NotImplementedError(f"{type(self).__name__} defines no head")

    def encoder_channels(self, in_channels: int) -> int:
        """The channels the encoder reads: the image's, plus a label channel in a conditional model."""
        return in_channels

    def code_features(self) -> int:
        """The width of the code the decoder takes: ``latent_dim`` unless a family's code is wider
        (one-hot blocks of categorical variables, a conditional model's [z, y])."""
        return self.latent_dim

    def encode(self, input: Tensor) -> Posterior:
        """q(z|x) from the images (B, C, H, W)."""
        raise NotImplementedError(f"{type(self).__name__} defines no posterior")

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """The term added to the reconstruction loss, and the named terms to log."""
        raise NotImplementedError(f"{type(self).__name__} defines no regularizer")

    # -- the pipeline -----------------------------------------------------------------------------
    def decode_params(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # (B, C, H, W): the image, or the likelihood's parameters

    def forward(self, input: Tensor, **kwargs: Any) -> NamedTuple:
        posterior = self.encode(input)
        z = posterior.rsample(kwargs.get("global_step"))  # (B, D); the step anneals relaxed samplers
        recons, params = self.decode_with_params(z)
        return self.pack(recons=recons, recon_params=params, input=input, z=z, **posterior.fields())

    def loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        recon = self.reduce_over_batch(self.reconstruction_loss(self.recon_params(output), output.input))
        penalty, terms = self.regularizer(output, M_N, **kwargs)
        loss = self.reconstruction_weight * recon + penalty
        return {
            "loss": loss,
            "Reconstruction_Loss": recon.detach(),
            **{k: v.detach() for k, v in terms.items()},
        }

    @property
    def reconstruction_weight(self) -> float:
        """The weight of the reconstruction term in the loss: 1 unless a model has its own (InfoVAE's
        ``beta``). ``Reconstruction_Loss`` is logged unweighted."""
        return 1.0

    def reduce_over_batch(self, per_example: Tensor) -> Tensor:
        """The reconstruction term of the loss from its per-example values (B,): the batch mean
        (MSSIMVAE's ``size_average=False``: the sum)."""
        return per_example.mean()


class PointMassOutput(NamedTuple):
    """``forward``'s result for a deterministic encoder: PyTorch-VAE's ``[recons, input, z]``, with names."""

    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    z: Tensor  # (B, D)


class PointMassAutoencoder(ConvAutoencoder):
    """The pipeline with a deterministic encoder z = f(x): a linear code head and a point-mass
    "posterior" (AE, RAE, the Wasserstein and adversarial autoencoders). ``embed`` is the code;
    with no posterior there is no ``kl_per_dimension`` and no likelihood bound (both raise
    ``NotImplementedError``, which evaluation reports as not applicable)."""

    output_cls = PointMassOutput

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        return nn.Linear(in_features, latent_dim)  # a code, not a distribution's parameters

    def encode(self, input: Tensor) -> PointMass:
        """The code z = f(x), (B, D), as a point mass (no noise; unpacks as ``[z]``)."""
        return PointMass(self.head(self.encoder(input)))

    # -- evaluation: the code is the representation; there is no posterior ----------------------
    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has a deterministic encoder: no posterior q(z|x), so no KL per dimension"
        )

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError(
            f"{type(self).__name__} has a deterministic encoder: no posterior q(z|x), so no likelihood bound"
        )
