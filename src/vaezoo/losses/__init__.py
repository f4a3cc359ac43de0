"""Loss terms shared by the models; each returns one value per example, shape (B,)."""

from vaezoo.losses.kl import gaussian_kl
from vaezoo.losses.reconstruction import RECON_REDUCTIONS, check_recon_reduction, squared_error

__all__ = ["RECON_REDUCTIONS", "check_recon_reduction", "gaussian_kl", "squared_error"]
