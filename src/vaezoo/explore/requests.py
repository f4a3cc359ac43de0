"""The explorer's requests: their errors, and the checks of a JSON body's fields (each error names the
field, what was expected and what came)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class ExploreError(ValueError):
    """A request the explorer refuses: ``status`` is the HTTP status to answer with (400 by default)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ModelCannot(ExploreError):
    """A well-formed request one of the models cannot answer (no prior, no label for a conditional
    model): that model's answer is this message, the others answer as usual."""


def field(body: Any, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """``body[key]``, checked to be a ``kind``; missing: ``default`` (an error if that is None)."""
    if not isinstance(body, dict):
        raise ExploreError(f"the request body must be a JSON object, got {type(body).__name__}")
    if key not in body:
        if default is None:
            raise ExploreError(f"the request has no '{key}'")
        return default
    value = body[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ExploreError(f"'{key}' must be {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ExploreError(f"'{key}' must be {_kind_name(kind)}, got {type(value).__name__} {value!r:.60}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    words = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return " or ".join(dict.fromkeys(words.get(k, k.__name__) for k in kinds))


def bounded_int(body: Any, key: str, low: int, high: int, default: int) -> int:
    value = field(body, key, int, default)
    if not low <= value <= high:
        raise ExploreError(f"'{key}' must be between {low} and {high}, got {value}")
    return value


def numbers(value: Any, what: str, length: int | None = None, limit: float | None = None) -> Tensor:
    """A JSON list of finite numbers as a float32 tensor, checked for ``length`` and ``|x| <= limit``."""
    if not isinstance(value, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
    ):
        raise ExploreError(f"{what} must be a list of numbers")
    if length is not None and len(value) != length:
        raise ExploreError(f"{what} has {len(value)} values; expected {length}")
    tensor = torch.tensor(value, dtype=torch.float64)
    if not torch.isfinite(tensor).all():
        raise ExploreError(f"{what} holds a value that is not finite")
    if limit is not None and len(value) and tensor.abs().max() > limit:
        worst = int(tensor.abs().argmax())
        raise ExploreError(
            f"{what}[{worst}] = {value[worst]} is out of range: sliders go from -{limit:g} to {limit:g}"
        )
    return tensor.float()


def timed(compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()``'s answer with ``ms``: the server's time for it, in milliseconds."""
    start = time.perf_counter()
    answer = compute()
    return {**answer, "ms": round((time.perf_counter() - start) * 1000.0, 2)}
