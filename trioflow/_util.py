"""Small helpers shared by every module: parameter checks and public-name metadata."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .adaptive._checks import check_count as check_count
from .adaptive._checks import check_fraction as check_fraction
from .adaptive._checks import check_positive_number as check_positive_number
from .adaptive._checks import raise_type as raise_type


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


def check_optional_name(value: object, param: str = "name") -> str | None:
    if value is not None and not isinstance(value, str):
        raise_type(param, "a str or None", value)
    return value


def check_signal(value: object, param: str = "signal") -> None:
    """A signal number (an int, not a bool) or ``None``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise_type(param, "a signal number or None", value)
