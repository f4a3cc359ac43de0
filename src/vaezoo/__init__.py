"""vaezoo: a zoo of variational autoencoders behind one API.

>>> import vaezoo
>>> model = vaezoo.create_model("VanillaVAE", in_channels=3, latent_dim=128)
>>> vaezoo.list_models()  # doctest: +ELLIPSIS
[...'VanillaVAE'...]
"""

from vaezoo.registry import create_model, get_model_class, list_models, register_model

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "get_model_class", "list_models", "register_model"]
