"""Parameter checks that need nothing but numbers.

They live here, inside :mod:`trioflow.adaptive`, because the adaptive
algorithms may import nothing from the rest of trioflow (nor trio);
``trioflow._util`` re-exports them for everyone else, so there is one copy.
"""

from __future__ import annotations

import math
from typing import NoReturn


def _type_name(value: object) -> str:
    return type(value).__name__


def raise_type(param: str, expected: str, value: object) -> NoReturn:
    raise TypeError(f"{param} must be {expected}, got {value!r} ({_type_name(value)})")


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


def check_count(value: object, param: str, *, minimum: int = 1) -> int:
    """An int ``>= minimum`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise_type(param, "an int", value)
    if value < minimum:
        raise ValueError(f"{param} must be >= {minimum}, got {value!r}")
    return value


def check_fraction(value: object, param: str) -> float:
    """A number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise_type(param, "a number between 0 and 1", value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{param} must be between 0 and 1, got {value!r}")
    return float(value)
