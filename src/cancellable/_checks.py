"""Argument checks shared by the public API, with messages that name the argument."""

from __future__ import annotations

import math

__all__ = ["check_callable", "check_seconds"]


def check_seconds(value: object, name: str) -> float | None:
    """Validate a timeout or delay in seconds.

    Returns ``None`` for ``None`` and for infinity (both mean "no limit"), else
    the value as a float. Raises `TypeError` for a non-number (bools included)
    and `ValueError` for a negative or NaN value.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(value).__name__!r}")
    seconds = float(value)
    if math.isnan(seconds):
        raise ValueError(f"{name} must not be NaN")
    if seconds < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    if math.isinf(seconds):
        return None
    return seconds


def check_callable(value: object, name: str) -> None:
    """Raise `TypeError` naming ``name`` unless ``value`` is callable."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__!r}")
