"""Constructor arguments: checked, and PyTorch-VAE's names translated to ours.

Every model's constructor goes through :func:`resolve_arguments` (applied by ``BaseVAE`` to the
outermost ``__init__`` call, and by the config loader to a YAML ``model`` section), so the same
rules hold from Python, YAML and the CLI:

- a keyword the model does not take is an error naming the nearest valid one (``bta`` -> ``beta``);
- a keyword another library uses for one of ours (``Capacity_max_iter`` for ``capacity_anneal_steps``,
  ``img_size`` for ``image_size``) is renamed, converted where the type differs, and recorded under
  our name -- models declare these in ``argument_aliases``;
- a keyword PyTorch-VAE accepts but never uses (``pseudo_input_size``) is dropped with one warning
  naming it -- models declare these in ``ignored_arguments``, with the reason.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Alias:
    """Another library's keyword for one of ours, with the conversion its values need."""

    target: str
    convert: Callable[[Any], Any] | None = None

    def __call__(self, value: Any) -> Any:
        return self.convert(value) if self.convert is not None else value


def as_int(value: Any) -> Any:
    """``1e5`` (PyTorch-VAE writes step counts as floats) -> ``100000``; other values unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def merged_class_table(cls: type, attribute: str) -> dict[str, Any]:
    """A dict class attribute merged along the MRO: a subclass's entries win over its parents'."""
    table: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        table.update(vars(klass).get(attribute, {}))
    return table


def resolve_arguments(cls: type, kwargs: dict[str, Any], where: str | None = None) -> dict[str, Any]:
    """``kwargs`` in ``cls``'s own names: aliases renamed, ignored keys dropped with a warning;
    an unknown key raises ``TypeError`` naming it (``where`` prefixes the messages, e.g. a file)."""
    from vaezoo.registry import aliases_of, model_parameters

    prefix = f"{where}: " if where else ""
    aliases: dict[str, str | Alias] = merged_class_table(cls, "argument_aliases")
    ignored: dict[str, str] = merged_class_table(cls, "ignored_arguments")
    params = model_parameters(cls)
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in kwargs.items():
        if key == "name" and "name" not in params:
            # PyTorch-VAE's run.py passes model_params, name included, to the constructor
            if value in (cls.__name__, *aliases_of(cls.__name__)):
                continue
            raise TypeError(f"{prefix}{cls.__name__} got name={value!r}, which names another model")
        if key in aliases and key not in params:
            entry = aliases[key]
            alias = entry if isinstance(entry, Alias) else Alias(entry)
            if alias.target in kwargs:
                raise TypeError(
                    f"{prefix}{cls.__name__} got both '{key}' and '{alias.target}', which mean the same; give one"
                )
            out[alias.target] = alias(value)
        elif key in ignored and key not in params:
            dropped.append(f"'{key}' ({ignored[key]})")
        elif key in params:
            out[key] = value
        else:
            close = difflib.get_close_matches(key, [*params, *aliases], n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise TypeError(
                f"{prefix}{cls.__name__} got an unexpected keyword argument '{key}'{hint}; "
                f"its arguments are {sorted(params)}"
            )
    if dropped:
        warnings.warn(
            f"{prefix}{cls.__name__} ignores {', '.join(dropped)}, as PyTorch-VAE does", stacklevel=3
        )
    return out


def require_positive(**values: Any) -> None:
    """A ValueError naming the first of ``values`` that is not a positive integer (or a list of
    them): ``latent_dim = 0`` would build a model that learns nothing, ``-3`` fail deep in torch."""
    for name, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        good = bool(items) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items)
        if not good:
            kind = (
                "a non-empty list of positive integers"
                if isinstance(value, (list, tuple))
                else "a positive integer"
            )
            raise ValueError(f"{name} = {value!r} must be {kind}")
