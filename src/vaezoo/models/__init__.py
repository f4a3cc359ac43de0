"""The model zoo. Importing this package registers every model (see :mod:`vaezoo.registry`)."""

from vaezoo.models.base import BaseVAE
from vaezoo.models.vanilla_vae import VanillaVAE

__all__ = ["BaseVAE", "VanillaVAE"]
