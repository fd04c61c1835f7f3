"""Small helpers shared by every module: parameter checks and public-name metadata."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NoReturn


def fixup_module_metadata(module_name: str, namespace: Mapping[str, Any]) -> None:
    """Make public names report the public module (``trioflow.X``, not ``trioflow._x._y.X``).

    Reprs, tracebacks and the API reference then show where a user imports a
    name from, as trio does for its own re-exports.
    """
    seen: set[int] = set()

    def fix_one(qualname: str, name: str, obj: object) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        mod = getattr(obj, "__module__", None)
        if mod is not None and mod.startswith("trioflow."):
            try:
                obj.__module__ = module_name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):  # pragma: no cover - builtins
                return
            if isinstance(obj, type):
                obj.__name__ = name
                obj.__qualname__ = qualname
                for attr_name, attr_value in obj.__dict__.items():
                    fix_one(f"{qualname}.{attr_name}", attr_name, attr_value)

    for name, obj in namespace.items():
        if not name.startswith("_"):
            fix_one(name, name, obj)


def _type_name(value: object) -> str:
    return type(value).__name__


def raise_type(param: str, expected: str, value: object) -> NoReturn:
    raise TypeError(f"{param} must be {expected}, got {value!r} ({_type_name(value)})")


def check_total_tokens(value: object, param: str = "total_tokens") -> int | float:
    """``total_tokens`` is a non-negative int, or ``math.inf`` (0 pauses admission)."""
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, float) and value == math.inf)
    ):
        raise_type(param, "an int or math.inf", value)
    if value < 0:
        raise ValueError(f"{param} must be >= 0, got {value!r}")
    return value


def check_weight(value: object, param: str = "weight") -> int:
    """A weight is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise_type(param, "an int", value)
    if value < 1:
        raise ValueError(f"{param} must be >= 1, got {value!r}")
    return value


def check_positive_number(value: object, param: str, *, allow_zero: bool = False) -> float:
    """A finite positive real number (``int`` or ``float``, not ``bool``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise_type(param, "a number", value)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{param} must be finite, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{param} must be {bound}, got {value!r}")
    return float(value)


def check_optional_name(value: object, param: str = "name") -> str | None:
    if value is not None and not isinstance(value, str):
        raise_type(param, "a str or None", value)
    return value


def check_fraction(value: object, param: str) -> float:
    """A number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise_type(param, "a number between 0 and 1", value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{param} must be between 0 and 1, got {value!r}")
    return float(value)
