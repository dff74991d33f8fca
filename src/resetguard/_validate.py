"""Argument checks shared by the policies: every error names the bad value."""

from __future__ import annotations

import math

__all__ = ["check_non_negative", "check_positive", "check_positive_int", "check_ratio"]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    return float(value)


def check_non_negative(name: str, value: object, *, allow_inf: bool = False) -> float:
    """``value`` as a float ≥ 0 (finite unless ``allow_inf``), else a clear error."""
    number = _number(name, value)
    if number < 0 or (math.isinf(number) and not allow_inf):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def check_positive(name: str, value: object, *, allow_inf: bool = False) -> float:
    """``value`` as a float > 0 (finite unless ``allow_inf``), else a clear error."""
    number = _number(name, value)
    if number <= 0 or (math.isinf(number) and not allow_inf):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an int ≥ 1, else a clear error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return value


def check_ratio(name: str, value: object) -> float:
    """``value`` as a float in (0, 1], else a clear error."""
    number = _number(name, value)
    if not 0 < number <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return number
