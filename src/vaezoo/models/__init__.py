"""The model zoo: one file per model. Importing this package imports every module in it, which
registers each model (see :mod:`vaezoo.registry`), so a new model file needs no edit here."""

import importlib
import pkgutil

from vaezoo.models.base import BaseVAE
from vaezoo.models.vanilla_vae import VanillaVAE

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BaseVAE", "VanillaVAE"]
