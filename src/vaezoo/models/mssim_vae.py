"""The VAE with a multi-scale structural-similarity reconstruction loss (PyTorch-VAE's MSSIMVAE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from vaezoo.losses.ssim import MsSsimForm, ms_ssim
from vaezoo.models.vanilla_vae import VanillaVAE
from vaezoo.registry import register_model

DATA_RANGE = {"sigmoid": 1.0, "tanh": 2.0}  # the value range of each decoder output, hence of the data


@register_model(aliases=("MSSSIM_VAE",))
class MSSIMVAE(VanillaVAE):
    """Gaussian VAE whose reconstruction term is 1 - MS-SSIM, the multi-scale structural similarity
    of Wang, Simoncelli & Bovik 2003, "Multi-Scale Structural Similarity for Image Quality
    Assessment", Eq. 7 (five scales, weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333; see
    :func:`vaezoo.losses.ssim.ms_ssim`); the KL term is the VAE's (Kingma & Welling 2014):

        recon = 1 - MS-SSIM(x_hat, x)                    (``recon_reduction="mean"``)
        recon = C*H*W * (1 - MS-SSIM(x_hat, x))          (``"sum"``: a per-pixel dissimilarity summed,
                                                          so M_N weighs the KL as in the other models)
        loss  = mean_batch[ recon ] + M_N * mean_batch[ KL(q(z|x) || N(0, I)) ]

    ``data_range`` is the value range L of the images (1 for [0, 1], 2 for [-1, 1]); by default it
    follows ``output_activation``. Images too small for five scales use as many as fit (32 px: 4).
    ``size_average`` (PyTorch-VAE's MS-SSIM option) reduces the reconstruction term over the batch:
    ``True`` (the default, as there) averages the per-image terms, ``False`` sums them (the KL term
    stays a batch mean; ``Reconstruction_Loss`` is logged as it enters the loss).

    Signature: PyTorch-VAE's order, ``(in_channels, latent_dim, hidden_dims, window_size,
    size_average)``; ``data_range`` and VanillaVAE's arguments are keyword-only.

    ``ssim_form`` maps each scale's term t in [-1, 1] into [0, 1] before the fractional powers:
    ``"shifted"`` (1 + t) / 2, the default, keeps a gradient for every image; ``"clamped"`` max(t, 0),
    the metric's usual form, gives images with an anti-correlated scale none (7 % of 64x64 dSprites
    images at initialisation). Evaluation reports the standard metrics either way.

    Fixed against PyTorch-VAE: the Gaussian window has its minus sign (exp(-(x-c)^2 / 2 sigma^2));
    terms are mapped into [0, 1] before the fractional powers (NaN before); the data
    range matches the data instead of a fixed 1.0; ``sample`` is device-agnostic (no ``.cuda()``).
    Loss keys: ``loss``, ``Reconstruction_Loss``, ``KLD``. ``likelihood`` must stay ``"mse"``: 1 - MS-SSIM
    is not a likelihood, so ``likelihood_is_normalized`` is False.
    """

    own_reconstruction = "its reconstruction term, 1 - MS-SSIM, replaces the likelihood"
    supports_vectors = False  # MS-SSIM compares image windows

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        hidden_dims: Sequence[int] | None = None,
        window_size: int = 11,
        size_average: bool = True,
        *,
        data_range: float | None = None,
        ssim_form: MsSsimForm = "shifted",
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, latent_dim, hidden_dims, **kwargs)
        if data_range is None and self.output_activation not in DATA_RANGE:
            raise ValueError(
                f"output_activation '{self.output_activation}' has no fixed range: set data_range"
            )
        self.data_range = data_range if data_range is not None else DATA_RANGE[self.output_activation]
        self.window_size = window_size
        self.size_average = size_average
        self.ssim_form = ssim_form

    def reconstruction_loss(self, recons: Tensor, input: Tensor) -> Tensor:
        dissimilarity = 1.0 - ms_ssim(recons, input, self.data_range, self.window_size, form=self.ssim_form)
        if self.recon_reduction == "sum":
            return dissimilarity * input[0].numel()
        return dissimilarity

    def reduce_over_batch(self, per_example: Tensor) -> Tensor:
        return per_example.mean() if self.size_average else per_example.sum()
