"""The model registry: every model is reachable by name (or alias) from YAML, the CLI and Python."""

from __future__ import annotations

import difflib
import inspect
import typing
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from vaezoo.models.base import BaseVAE

_MODELS: dict[str, type[BaseVAE]] = {}
_ALIASES: dict[str, str] = {}


class UnknownModelError(KeyError):
    """A model name that is neither registered nor an alias."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def register_model(cls: type[BaseVAE] | None = None, *, aliases: tuple[str, ...] = ()) -> Any:
    """Class decorator: ``@register_model`` or ``@register_model(aliases=("VAE",))``."""

    def add(model_cls: type[BaseVAE]) -> type[BaseVAE]:
        for name in (model_cls.__name__, *aliases):
            if name in _MODELS or name in _ALIASES:
                raise ValueError(f"model name '{name}' is registered twice")
        _MODELS[model_cls.__name__] = model_cls
        for alias in aliases:
            _ALIASES[alias] = model_cls.__name__
        return model_cls

    return add(cls) if cls is not None else add


def list_models(include_aliases: bool = False) -> list[str]:
    """Registered model names, sorted; with ``include_aliases`` the aliases too."""
    _import_models()
    names = list(_MODELS) + (list(_ALIASES) if include_aliases else [])
    return sorted(names)


def aliases_of(name: str) -> list[str]:
    return sorted(alias for alias, target in _ALIASES.items() if target == name)


def get_model_class(name: str) -> type[BaseVAE]:
    """The class registered under ``name`` or one of its aliases; unknown names list close ones."""
    _import_models()
    name = _ALIASES.get(name, name)
    if name not in _MODELS:
        known = list(_MODELS) + list(_ALIASES)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(f"unknown model '{name}'.{hint} Known models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def create_model(name: str, /, *args: Any, **kwargs: Any) -> BaseVAE:
    """Build a registered model: ``create_model("VanillaVAE", in_channels=3, latent_dim=128)``."""
    return get_model_class(name)(*args, **kwargs)


def model_parameters(cls: type) -> dict[str, Any]:
    """The constructor arguments of ``cls`` (name -> type hint), following ``**kwargs`` up the MRO.

    A subclass that passes ``**kwargs`` on to its parent accepts the parent's arguments too; the
    ``**kwargs`` kept for PyTorch-VAE compatibility on the base class is not an argument.
    """
    params: dict[str, Any] = {}
    for klass in cls.__mro__:
        if klass is nn.Module or "__init__" not in vars(klass):
            continue
        init = vars(klass)["__init__"]
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # unresolved forward references: accept any value
            hints = {}
        signature = inspect.signature(init)
        has_var_kw = False
        for pname, param in list(signature.parameters.items())[1:]:
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                has_var_kw = True
            elif param.kind is not inspect.Parameter.VAR_POSITIONAL:
                params.setdefault(pname, hints.get(pname, Any))
        if not has_var_kw:
            break
    return params


def _import_models() -> None:
    # Importing the package registers every model file (each applies @register_model).
    import vaezoo.models  # noqa: F401
