"""vaezoo: a zoo of variational autoencoders behind one API.

>>> import vaezoo
>>> model = vaezoo.create_model("VanillaVAE", in_channels=3, latent_dim=128)
>>> vaezoo.list_models()  # doctest: +ELLIPSIS
[...'VanillaVAE'...]

A trained run exported as a folder to share (``vaezoo export``), and loaded back::

    vaezoo.export_model("runs/VanillaVAE/version_0", "exports/vae")
    model = vaezoo.from_pretrained("exports/vae")

and a model trained from Python on images at hand (a tensor, an array, a Dataset, a DataLoader)::

    result = vaezoo.fit("VanillaVAE", images, settings={"train.max_epochs": 5})
"""

from typing import Any

from vaezoo.export import export_model
from vaezoo.pretrained import from_pretrained
from vaezoo.registry import create_model, get_model_class, list_models, register_model

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_model",
    "export_model",
    "fit",
    "from_pretrained",
    "get_model_class",
    "list_models",
    "register_model",
]


def __getattr__(name: str) -> Any:
    """``vaezoo.fit``, imported on first use (it brings in Lightning, which ``import vaezoo`` does not)."""
    if name == "fit":
        from vaezoo.training.fit import fit

        return fit
    raise AttributeError(f"module 'vaezoo' has no attribute {name!r}")
