"""VQ-VAE of van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation Learning" (NeurIPS 2017)."""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor, nn

from vaezoo.losses import squared_error
from vaezoo.models.autoencoder import ConvAutoencoder
from vaezoo.models.base import Device
from vaezoo.nn.blocks import check_image_size, output_activation
from vaezoo.nn.distributions import PointMass
from vaezoo.nn.quantizers import VectorQuantizer, codebook_perplexity, codebook_usage
from vaezoo.registry import register_model

DEFAULT_VQ_HIDDEN_DIMS = (128, 256)  # two stride-2 layers: 64x64 images -> a 16x16 code map


class ResidualLayer(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), the paper's residual block (Sec. 4.1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def residual_stack(channels: int, num_layers: int) -> list[nn.Module]:
    """A 3x3 conv, ``num_layers`` residual layers and a ReLU, at constant size and width."""
    return [
        nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        *(ResidualLayer(channels) for _ in range(num_layers)),
        nn.ReLU(),
    ]


def vq_encoder(
    in_channels: int, hidden_dims: list[int], embedding_dim: int, num_residual: int
) -> nn.Sequential:
    """(B, C, H, W) -> (B, D, H / 2^L, W / 2^L): 4x4 stride-2 convs, residual layers, 1x1 conv to D.

    The strided convs carry BatchNorm, as the shared stacks do (the paper has none): without it,
    runs on mostly-black dSprites often stall with a saturated all-black decoder.
    """
    channels = [in_channels, *hidden_dims]
    downs = [
        layer
        for a, b in zip(channels[:-1], channels[1:])
        for layer in (nn.Conv2d(a, b, kernel_size=4, stride=2, padding=1), nn.BatchNorm2d(b), nn.LeakyReLU())
    ]
    head = nn.Conv2d(hidden_dims[-1], embedding_dim, kernel_size=1)
    return nn.Sequential(*downs, *residual_stack(hidden_dims[-1], num_residual), head)


def vq_decoder(
    out_channels: int, hidden_dims: list[int], embedding_dim: int, num_residual: int, activation: str
) -> nn.Sequential:
    """The mirror image of :func:`vq_encoder`: (B, D, h, w) -> (B, C, h * 2^L, w * 2^L)."""
    dims = list(reversed(hidden_dims))
    ups = [
        layer
        for a, b in zip(dims[:-1], dims[1:])
        for layer in (
            nn.ConvTranspose2d(a, b, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(b),
            nn.LeakyReLU(),
        )
    ]
    return nn.Sequential(
        nn.Conv2d(embedding_dim, dims[0], kernel_size=3, padding=1),
        *residual_stack(dims[0], num_residual),
        *ups,
        nn.ConvTranspose2d(dims[-1], out_channels, kernel_size=4, stride=2, padding=1),
        output_activation(activation),
    )


class VQOutput(NamedTuple):
    recons: Tensor  # (B, C, H, W)
    input: Tensor  # (B, C, H, W)
    z_e: Tensor  # (B, D, h, w) encoder output
    z_q: Tensor  # (B, D, h, w) the codebook rows chosen (gradient to the codebook, not the encoder)
    codes: Tensor  # (B, h, w) int64


@register_model
class VQVAE(ConvAutoencoder):
    """VQ-VAE (van den Oord et al. 2017): a deterministic encoder, a codebook of K vectors, a decoder.

    ``latent_dim`` is the size D of a code vector (PyTorch-VAE's ``embedding_dim``, same position);
    ``num_embeddings`` is K. The encoder maps an image to a (B, D, h, w) map, each vector is
    replaced by its nearest codebook row (:class:`~vaezoo.nn.quantizers.VectorQuantizer`), and the
    decoder sees the quantised map with straight-through gradients. The loss is Eq. 3::

        loss = recon(x, x_hat) + ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2

    each term averaged over the batch, with the two codebook terms at the same ``recon_reduction``
    scale as the reconstruction (``"sum"``: summed over the code map, ``"mean"``: averaged). With
    ``ema=True`` the codebook follows moving averages of its assigned encoder outputs (Appendix
    A.1) and the codebook term is left out of the loss (it is still logged). The KL of Eq. 3's
    derivation is the constant log K, so ``M_N`` has nothing to weigh and is ignored.
    ``data_init=True`` starts the codebook from encoder outputs of the first training batch instead
    of U(-1/K, 1/K), against dead codes (not in the paper; see the quantiser). Under DDP the EMA
    statistics are summed over the processes (one codebook, as from the global batch) and
    ``data_init`` takes process 0's first batch.

    Loss keys: ``loss``, ``Reconstruction_Loss``, ``VQ_Loss`` (the two codebook terms as added to
    the loss), ``Codebook_Loss``, ``Commitment_Loss``, ``Perplexity`` (exp entropy of the batch's
    code frequencies, K at most) and ``Codebook_Usage`` (share of codes used in the batch).

    There is no prior over codes until one is fitted (the paper trains a PixelCNN on the codes: the
    ``pixelcnn`` sampler), so :meth:`sample` raises ``NotImplementedError``. ``embed`` is the
    quantised map (B, D, h, w); ``kl_per_dimension`` and ``log_importance_weights`` raise ``NotImplementedError`` (no posterior).
    ``likelihood`` (with ``likelihood_scale``, ``likelihood_std``) works as in :class:`VanillaVAE`;
    the codebook terms then use the sum, like the negative log-likelihood. Fixes to PyTorch-VAE: any image size and channel
    count, a clear error instead of ``Warning`` from ``sample``, EMA codebook, data-dependent
    codebook initialisation, usage metrics, BatchNorm in the strided layers (stable training).

    Arguments in PyTorch-VAE's order, ``(in_channels, latent_dim, num_embeddings, hidden_dims,
    beta, image_size)`` -- ``VQVAE(3, 64, 512)`` is 64-dimensional codes, 512 of them -- and the
    rest by keyword only. PyTorch-VAE's ``embedding_dim`` is ``latent_dim`` and its ``img_size``
    is ``image_size``.
    """

    loss_keys: tuple[str, ...] = (
        "loss", "Reconstruction_Loss", "VQ_Loss", "Codebook_Loss", "Commitment_Loss", "Perplexity",
        "Codebook_Usage",
    )  # fmt: skip
    samples_from_prior = False
    supports_vectors = False  # a spatial grid of codes from its own conv stacks
    output_cls = VQOutput
    argument_aliases = {"embedding_dim": "latent_dim"}
    head_name = "quantizer"
    quantizer: VectorQuantizer
    default_hidden_dims = DEFAULT_VQ_HIDDEN_DIMS

    def __init__(
        self,
        in_channels: int,
        latent_dim: int,
        num_embeddings: int = 512,
        hidden_dims: list[int] | None = None,
        beta: float = 0.25,
        image_size: int = 64,
        *,
        num_residual_layers: int = 2,
        ema: bool = False,
        ema_decay: float = 0.99,
        ema_epsilon: float = 1e-5,
        data_init: bool = False,
        **kwargs: Any,
    ) -> None:
        # read by the build hooks below, which ConvAutoencoder's constructor calls
        self.num_embeddings, self.beta, self.num_residual_layers = num_embeddings, beta, num_residual_layers
        self.quantizer_options = (ema, ema_decay, ema_epsilon, data_init)
        super().__init__(in_channels, latent_dim, hidden_dims, image_size=image_size, **kwargs)

    def build_encoder(self, in_channels: int, image_size: int) -> nn.Module:
        check_image_size(image_size, len(self.hidden_dims))
        return vq_encoder(in_channels, self.hidden_dims, self.latent_dim, self.num_residual_layers)

    def encoder_features(self) -> int:
        return self.latent_dim  # channels of the (B, D, h, w) map

    def build_head(self, in_features: int, latent_dim: int) -> nn.Module:
        """The codebook: K vectors of size D, each encoder vector replaced by its nearest one."""
        return VectorQuantizer(self.num_embeddings, latent_dim, *self.quantizer_options)

    def build_decoder(self, out_channels: int, image_size: int) -> nn.Module:
        return vq_decoder(
            out_channels, self.hidden_dims, self.latent_dim, self.num_residual_layers, self.decoder_activation
        )

    # forward is its own: the quantiser sits between the encoder's code and the decoder
    def encode(self, input: Tensor) -> PointMass:
        """The encoder's map z_e (B, D, h, w), before quantisation; unpacks as ``[z_e]``."""
        return PointMass(self.encoder(input))

    def forward(self, input: Tensor, **kwargs: Any) -> NamedTuple:  # VQOutput (+ recon_params)
        z_e = self.encode(input)[0]  # (B, D, h, w)
        quantized = self.quantizer(z_e)
        recons, params = self.decode_with_params(quantized.straight_through)
        return self.pack(
            recons=recons,
            recon_params=params,
            input=input,
            z_e=z_e,
            z_q=quantized.vectors,
            codes=quantized.codes,
        )

    def loss(self, output: Any, M_N: float = 1.0, **kwargs: Any) -> dict[str, Tensor]:
        reduction = self.recon_reduction
        recon = self.reconstruction_loss(self.recon_params(output), output.input).mean()
        codebook = squared_error(output.z_q, output.z_e.detach(), reduction).mean()  # moves e to z_e
        commitment = squared_error(output.z_e, output.z_q.detach(), reduction).mean()  # keeps z_e near e
        vq_loss = self.beta * commitment + (0.0 if self.quantizer.ema else codebook)
        return {
            "loss": recon + vq_loss,
            "Reconstruction_Loss": recon.detach(),
            "VQ_Loss": vq_loss.detach(),
            "Codebook_Loss": codebook.detach(),
            "Commitment_Loss": commitment.detach(),
            "Perplexity": codebook_perplexity(output.codes, self.num_embeddings),
            "Codebook_Usage": codebook_usage(output.codes, self.num_embeddings),
        }

    @property
    def codebook_size(self) -> int:  # type: ignore[override]
        return self.num_embeddings

    def codes(self, x: Tensor, **kwargs: Any) -> Tensor:
        """(B, h, w) indices of the codebook vectors nearest to the encoder's map of ``x`` (no
        codebook update, unlike a training-mode forward)."""
        z_e = self.encode(x)[0]  # (B, D, h, w)
        batch, dim, height, width = z_e.shape
        return self.quantizer.nearest(z_e.permute(0, 2, 3, 1).reshape(-1, dim)).view(batch, height, width)

    def latents_from_codes(self, codes: Tensor) -> Tensor:
        """The codebook rows (B, D, h, w) of a (B, h, w) index map: the quantised map ``decode`` takes."""
        return self.quantizer.lookup(codes)

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Images from a (B, h, w) map of code indices, e.g. drawn from a prior fitted over codes."""
        return self.decode(self.latents_from_codes(codes))

    def sample(self, num_samples: int, current_device: Device = None, **kwargs: Any) -> Tensor:
        raise NotImplementedError(
            "VQVAE has no prior over its codes: the codebook alone does not say which code maps are "
            "likely. Fit a prior over the codes of encoded training images (the paper uses a PixelCNN) "
            "and decode its samples with decode_codes(codes): `vaezoo sample --sampler pixelcnn` (or "
            "`--sampler gmm` on the quantised maps); use generate(x) for reconstructions."
        )

    # -- evaluation: the quantised map is the code; no posterior, no prior ------------------------
    def embed(self, x: Tensor, **kwargs: Any) -> Tensor:
        """The quantised map (B, D, h, w) of ``x``, without touching the codebook (no EMA update)."""
        return self.latents_from_codes(self.codes(x))

    def kl_per_dimension(self, x: Tensor, **kwargs: Any) -> Tensor:
        raise NotImplementedError(
            "VQVAE has a deterministic encoder (a one-hot q over codes, KL = log K per position): "
            "no per-dimension KL"
        )

    def sample_latents(self, x: Tensor, num_samples: int, **kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError(
            "VQVAE has a deterministic encoder and no prior over codes: no posterior, so no likelihood bound"
        )
