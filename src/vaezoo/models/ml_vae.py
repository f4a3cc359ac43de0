"""ML-VAE: precision-weighted averaging on the dimensions of the factors known to be shared."""

from __future__ import annotations

from typing import ClassVar

from vaezoo.models.group_vae import GroupVAE
from vaezoo.registry import register_model


@register_model
class MLVAE(GroupVAE):
    """Multi-Level VAE, Bouchacourt, Tomioka & Nowozin (2018), "Multi-Level Variational Autoencoder"
    (AAAI), as the known-factor baseline of Locatello et al. (2020): GroupVAE's shared dimensions,
    aggregated by the precision-weighted mean (variance 2 / (1/var1 + 1/var2))."""

    averaging: ClassVar[str] = "mlvae"
