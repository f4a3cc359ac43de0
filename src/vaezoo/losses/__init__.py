"""Loss terms shared by the models; each returns one value per example, shape (B,)."""

from vaezoo.losses.kl import gaussian_kl
from vaezoo.losses.reconstruction import RECON_REDUCTIONS, squared_error

__all__ = ["RECON_REDUCTIONS", "gaussian_kl", "squared_error"]
