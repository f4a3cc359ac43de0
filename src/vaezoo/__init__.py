"""vaezoo: a zoo of variational autoencoders behind one API.

>>> import vaezoo
>>> model = vaezoo.create_model("VanillaVAE", in_channels=3, latent_dim=128)
>>> vaezoo.list_models()  # doctest: +ELLIPSIS
[...'VanillaVAE'...]

A trained run exported as a folder to share (``vaezoo export``), and loaded back::

    vaezoo.export_model("runs/VanillaVAE/version_0", "exports/vae")
    model = vaezoo.from_pretrained("exports/vae")
"""

from vaezoo.export import export_model
from vaezoo.pretrained import from_pretrained
from vaezoo.registry import create_model, get_model_class, list_models, register_model

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_model",
    "export_model",
    "from_pretrained",
    "get_model_class",
    "list_models",
    "register_model",
]
