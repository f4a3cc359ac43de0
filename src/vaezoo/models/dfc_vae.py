"""DFC-VAE of Hou, Shen, Sun & Qiu, "Deep Feature Consistent Variational Autoencoder" (WACV 2017)."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from vaezoo.losses import squared_error
from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.nn.vgg import VGG19BNFeatures, imagenet_normalize
from vaezoo.registry import register_model

DEFAULT_FEATURE_LAYERS = ("relu1_1", "relu2_1", "relu3_1")  # the paper's VAE-123


@register_model
class DFCVAE(VanillaVAE):
    """A Gaussian VAE whose reconstruction term compares VGG19-BN features, not pixels (Hou et al. 2017).

    Eq. 5: the per-layer feature loss is the squared error between the feature maps of x and x_hat
    at layer l, here at the model's ``recon_reduction`` scale (``"mean"``: Eq. 5, whose factor 1/2 is
    left to ``beta``; ``"sum"``: summed over the feature map). Eq. 7 (alpha and beta named as in the
    paper and PyTorch-VAE: alpha weighs the KL of Eq. 6, beta the feature loss)::

        loss = beta * sum_l mean_batch[ feature_loss_l ] + pixel_weight * mean_batch[ pixel recon ]
               + alpha * M_N * mean_batch[ KL(q(z|x) || N(0, I)) ]

    ``pixel_weight = 0`` is the paper; PyTorch-VAE added the pixel error at weight 1 (inside beta).
    Layers: ``feature_layers`` (default relu1_1, relu2_1, relu3_1; relu4_1, relu5_1 ... also work).
    Images are mapped from the decoder's range (``tanh``: [-1, 1], otherwise [0, 1]) to ImageNet
    normalisation, one channel repeated to three (the data must have 1 or 3 channels).

    ``feature_weights`` names a local torchvision ``vgg19_bn`` state dict (``.pth``, read with
    ``weights_only=True``, or ``.safetensors``); nothing is downloaded. With ``feature_weights=None``
    the VGG weights are RANDOM: the model trains, but the loss is not the paper's perceptual loss
    (a warning says so at construction).

    The VGG is frozen (no gradients, always eval mode) and kept out of the module tree -- a plain
    attribute, not a submodule -- so it is not in ``state_dict()`` (checkpoints stay small and load
    without the weight file's contents), not in ``parameters()`` (never given to an optimizer) and
    not switched to training mode; it follows the input's device when the loss is computed.
    Loss keys: ``loss``, ``Reconstruction_Loss`` (the beta-weighted feature term plus the pixel
    term), ``KLD``. Fixes to PyTorch-VAE: no download, ImageNet normalisation, VGG not saved in
    checkpoints nor given to Adam, any channel count 1/3 and image size. ``likelihood`` must stay
    ``"mse"``: the feature loss is not a likelihood, so ``likelihood_is_normalized`` is False.

    Signature: PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, alpha, beta)``; the
    rest is keyword-only. To reproduce PyTorch-VAE's pixel term, ``beta * pixel MSE``, set
    ``pixel_weight = beta``.
    """

    own_reconstruction = "its reconstruction term, a VGG feature loss, replaces the likelihood"
    training_only_arguments: ClassVar[dict[str, Any]] = {"feature_weights": None}  # the loss's VGG file
    supports_vectors = False  # VGG features of images
    feature_network: VGG19BNFeatures  # a plain attribute, not a submodule (see above)

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: list[int] | None = None,
        alpha: float = 1.0,
        beta: float = 0.5,
        *,
        image_size: int = 64,
        output_activation: Literal["sigmoid", "tanh", "none"] = "sigmoid",
        recon_reduction: Literal["mean", "sum"] = "mean",
        pixel_weight: float = 0.0,
        feature_layers: list[str] | None = None,
        feature_weights: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            in_channels,
            latent_dim,
            hidden_dims,
            image_size=image_size,
            output_activation=output_activation,
            recon_reduction=recon_reduction,
            **kwargs,
        )
        if in_channels not in (1, 3):
            raise ValueError(f"DFCVAE compares VGG features of 1- or 3-channel images, not {in_channels}")
        self.alpha, self.beta, self.pixel_weight = alpha, beta, pixel_weight
        self.value_range = (-1.0, 1.0) if output_activation == "tanh" else (0.0, 1.0)
        network = VGG19BNFeatures(feature_layers if feature_layers is not None else DEFAULT_FEATURE_LAYERS)
        if feature_weights is None:
            warnings.warn(
                "DFCVAE: feature_weights is None, so the VGG19-BN feature network has RANDOM weights and the "
                "loss is not the paper's perceptual loss; pass feature_weights=<path to a torchvision "
                "vgg19_bn .pth or .safetensors file> for ImageNet features",
                UserWarning,
                stacklevel=3,  # the caller of the (config-recording) constructor
            )
        else:
            network.load_weights(feature_weights)
        object.__setattr__(self, "feature_network", network)  # not a submodule: see the docstring

    def reconstruction_loss(self, recons: Tensor, input: Tensor) -> Tensor:
        """beta * sum over layers of the feature squared error (+ pixel term), per example: (B,)."""
        network = self.feature_network.to(recons.device)
        fake = network(imagenet_normalize(recons.float(), self.value_range))  # [(B, C_l, H_l, W_l)]
        with torch.no_grad():  # the targets need no graph: a backward pass through VGG for x_hat only
            real = network(imagenet_normalize(input.float(), self.value_range))
        loss = recons.new_zeros(recons.shape[0])
        for fake_l, real_l in zip(fake, real):
            loss = loss + self.beta * squared_error(fake_l, real_l, self.recon_reduction)
        if self.pixel_weight:
            loss = loss + self.pixel_weight * squared_error(recons, input, self.recon_reduction)
        return loss

    def regularizer(self, output: Any, kl_weight: float, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """alpha * M_N * KL (Eq. 7's alpha)."""
        return super().regularizer(output, self.alpha * kl_weight, **kwargs)
