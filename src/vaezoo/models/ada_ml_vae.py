"""Ada-ML-VAE: Ada-GVAE's adaptive threshold with ML-VAE's precision-weighted averaging."""

from __future__ import annotations

from typing import ClassVar

from vaezoo.models.ada_gvae import AdaGVAE
from vaezoo.registry import register_model


@register_model
class AdaMLVAE(AdaGVAE):
    """Ada-ML-VAE, Locatello et al. (2020), Sec. 4: the shared dimensions (Eq. 7's threshold) take
    the ML-VAE aggregate of Bouchacourt, Tomioka & Nowozin (2018), "Multi-Level Variational
    Autoencoder" (AAAI): the precision-weighted mean, variance 2 / (1/var1 + 1/var2)."""

    averaging: ClassVar[str] = "mlvae"
