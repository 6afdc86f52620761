"""Every argument check of the package, with messages that name the argument.

Callers keep the cheap test inline (``if token is not None and token.__class__
is not CancellationToken: check_token(token, "token")``) so a valid argument
costs no call; these functions raise with the right type and text.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import NoReturn

__all__ = [
    "check_callable",
    "check_positive_int",
    "check_seconds",
    "check_timeout",
    "check_token",
]


def check_seconds(value: object, name: str) -> float | None:
    """Validate a timeout or delay in seconds that must not be negative.

    Returns ``None`` for ``None`` and for infinity (both mean "no limit"), else
    the value as a float (any finite size: callers cap what they hand to a C
    lock at `threading.TIMEOUT_MAX`).

    Raises:
        TypeError: ``value`` is not a number (bools included).
        ValueError: ``value`` is negative or NaN.
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


def check_timeout(value: object, name: str = "timeout") -> None:
    """Validate a stdlib-style timeout: a real number that is not NaN.

    Negative values keep whatever meaning the stdlib call gives them; the
    stdlib would spin or fail with an unrelated message on NaN or a string.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is NaN.
    """
    cls = value.__class__
    if cls is float:
        if value != value:  # noqa: PLR0124 (NaN is the one value unequal to itself)
            raise ValueError(f"{name} must not be NaN")
    elif cls is not int:
        if not isinstance(value, Real):
            raise TypeError(
                f"{name} must be a number of seconds or None, got {type(value).__name__!r}"
            )
        if value != value:  # noqa: PLR0124
            raise ValueError(f"{name} must not be NaN")


def check_token(value: object, name: str = "token", *, allow_none: bool = True) -> None:
    """Raise `TypeError` naming ``name`` unless ``value`` is a `CancellationToken` (or None).

    A source passed where its token belongs gets a message saying so.
    """
    from ._token import CancellationToken, CancellationTokenSource  # noqa: PLC0415 (a cycle)

    if value.__class__ is CancellationToken or (allow_none and value is None):
        return
    what = "a CancellationToken or None" if allow_none else "a CancellationToken"
    if isinstance(value, CancellationTokenSource):
        _fail(f"{name} must be {what}; pass source.token")
    _fail(f"{name} must be {what}, got {type(value).__name__!r}")


def _fail(message: str) -> NoReturn:
    raise TypeError(message)


def check_callable(value: object, name: str) -> None:
    """Raise `TypeError` naming ``name`` unless ``value`` is callable."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__!r}")


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is an int greater than 0.

    Raises:
        TypeError: ``value`` is not an int (bools included).
        ValueError: ``value`` is 0 or negative.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__!r}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than 0, got {value!r}")
    return value
