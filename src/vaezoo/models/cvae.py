"""Conditional VAE: encoder and decoder both see a label (class, attributes or factor values)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.models.base import Device, resolve_device
from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.registry import register_model


@register_model(aliases=("CVAE",))
class ConditionalVAE(VanillaVAE):
    """Conditional VAE: Sohn, Lee & Yan (2015), "Learning Structured Output Representation using
    Deep Conditional Generative Models" (NeurIPS), Sec. 3-4, the conditional lower bound (Eq. 4)
    with the label as the condition and the image as the output, and a prior N(0, I) that ignores
    the label (as in PyTorch-VAE)::

        loss = recon(x, decode(z, y)) + M_N * KL(q(z | x, y) || N(0, I)),   z ~ q(z | x, y)

    The label y reaches the encoder as one extra image channel, Linear(num_classes -> H*W), and the
    decoder as a vector concatenated to z. It comes in the ``labels=`` keyword of ``forward``,
    ``generate`` and ``sample``: int class indices (B,) are one-hot encoded; float label vectors
    (B, num_classes) -- dSprites factor values, CelebA attributes -- are used as they are; a single
    row is repeated for the whole batch. ``num_classes`` is filled in by the trainer from the data.
    ``decode`` takes [z, y] already concatenated, (B, latent_dim + num_classes), as in PyTorch-VAE.

    Evaluation: ``embed(x, labels=y)`` is [mu(x, y), y], (B, latent_dim + num_classes), the form
    ``decode`` takes, so ``decode(embed(x, labels=y))`` reconstructs x; the code proper is its first
    ``latent_dim`` columns (the rest is the label you gave, which a disentanglement metric must not
    see). ``kl_per_dimension`` and ``log_importance_weights`` are those of q(z|x, y) against N(0, I)
    and of the conditional model p(x|z, y), all given the same ``labels=``.

    Fixed from PyTorch-VAE: any image size and channel count (it hard-coded 3 x 64 x 64 and a
    512 x 2 x 2 decoder input); ``sample`` checks its labels and broadcasts a single row.

    Arguments in PyTorch-VAE's order, ``(in_channels, num_classes, latent_dim, hidden_dims,
    image_size)`` -- ``CVAE(3, 40, 10)`` is 40 classes and 10 latent dimensions -- and the rest
    (VanillaVAE's ``output_activation``, ``likelihood`` ...) by keyword only. ``latent_dim`` is
    required; it has a placeholder default only because ``num_classes`` (default 40, CelebA's
    attributes) comes before it. PyTorch-VAE's ``img_size`` means ``image_size``.
    """

    is_conditional = True
    supports_vectors = False  # the label enters as an extra image channel

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 40,
        latent_dim: int | None = None,
        hidden_dims: Sequence[int] | None = None,
        image_size: int = 64,
        *,
        output_activation: Literal["sigmoid", "tanh", "none"] = "sigmoid",
        **kwargs: Any,
    ) -> None:
        if latent_dim is None:
            raise TypeError("ConditionalVAE() missing required argument 'latent_dim'")
        self.num_classes = num_classes  # read by the hooks below, which the base's constructor calls
        super().__init__(
            in_channels,
            latent_dim,
            hidden_dims,
            image_size=image_size,
            output_activation=output_activation,
            **kwargs,
        )
        self.embed_class = nn.Linear(num_classes, image_size * image_size)

    def encoder_channels(self, in_channels: int) -> int:
        return in_channels + 1  # the image and its label channel

    def code_features(self) -> int:
        return self.latent_dim + self.num_classes  # the decoder reads [z, y]

    def label_vectors(self, labels: Tensor | None, num_rows: int) -> Tensor:
        """``labels`` as a float (num_rows, num_classes) tensor; a clear error if they do not fit."""
        usage = f"class indices (N,) or label vectors (N, {self.num_classes}), with N = {num_rows} or 1"
        if labels is None:
            raise ValueError(f"ConditionalVAE needs labels=...: {usage}")
        if labels.dtype == torch.bool:
            labels = labels.float()
        if not labels.is_floating_point():
            labels = labels.reshape(-1)
            if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes:
                raise ValueError(f"class indices must lie in [0, {self.num_classes}), got {labels.tolist()}")
            labels = F.one_hot(labels.long(), self.num_classes).float()  # (N, K)
        elif labels.dim() == 1:  # one label vector, or one value per image when num_classes == 1
            labels = labels.view(1, -1) if self.num_classes > 1 else labels.view(-1, 1)
        if labels.dim() != 2 or labels.shape[1] != self.num_classes:
            raise ValueError(f"labels of shape {tuple(labels.shape)} do not fit: expected {usage}")
        if labels.shape[0] == 1:
            labels = labels.expand(num_rows, -1)
        if labels.shape[0] != num_rows:
            raise ValueError(f"{labels.shape[0]} label rows for {num_rows} images: expected {usage}")
        return labels

    def condition(self, input: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """The encoder's input, the image with its label channel (B, C + 1, H, W), and y (B, K)."""
        y = self.label_vectors(labels, input.shape[0]).to(input)  # (B, K)
        label_channel = self.embed_class(y).view(-1, 1, *input.shape[-2:])  # (B, 1, H, W)
        return torch.cat([input, label_channel], dim=1), y

    def forward(self, input: Tensor, labels: Tensor | None = None, **kwargs: Any) -> NamedTuple:
        conditioned, y = self.condition(input, labels)
        mu, log_var = self.encode(conditioned)  # (B, D) each
        z = self.reparameterize(mu, log_var)  # (B, D)
        recons, params = self.decode_with_params(torch.cat([z, y], dim=1))  # (B, C, H, W)
        return self.pack(recons=recons, recon_params=params, input=input, mu=mu, log_var=log_var)

    # -- evaluation, given labels ------------------------------------------------------------------
    def embed(self, x: Tensor, labels: Tensor | None = None, **kwargs: Any) -> Tensor:
        conditioned, y = self.condition(x, labels)
        return torch.cat([self.encode(conditioned)[0], y], dim=1)  # (B, D + K)

    def kl_per_dimension(self, x: Tensor, labels: Tensor | None = None, **kwargs: Any) -> Tensor:
        return super().kl_per_dimension(self.condition(x, labels)[0])  # (B, D)

    def sample_latents(
        self, x: Tensor, num_samples: int, labels: Tensor | None = None, **kwargs: Any
    ) -> tuple[Tensor, Tensor, Tensor]:
        """z ~ q(z|x, y) with the label appended, [z, y] (B, S, D + K), as ``decode`` takes it."""
        conditioned, y = self.condition(x, labels)
        z, log_prior, log_posterior = super().sample_latents(conditioned, num_samples)  # (B, S, D)
        y = y.unsqueeze(1).expand(-1, num_samples, -1)  # (B, S, K)
        return torch.cat([z, y], dim=-1), log_prior, log_posterior

    def sample(
        self, num_samples: int, current_device: Device = None, labels: Tensor | None = None, **kwargs: Any
    ) -> Tensor:
        """Decode prior latents under ``labels`` (``num_samples`` rows, or one row for all)."""
        device = resolve_device(current_device, self.device)
        z = self.sample_prior(num_samples, device)  # (N, D)
        y = self.label_vectors(labels, num_samples).to(z)  # (N, K)
        return self.decode(torch.cat([z, y], dim=1))
