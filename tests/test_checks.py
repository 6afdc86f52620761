"""The argument checks every public call shares: types first, then values, naming the argument."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from cancellable import CancellationToken, CancellationTokenSource
from cancellable._checks import (
    check_callable,
    check_positive_int,
    check_seconds,
    check_timeout,
    check_token,
)


class TestSeconds:
    @pytest.mark.parametrize("value", [0, 1, 2.5, 1e10, 1e300])
    def test_any_non_negative_finite_number_is_kept(self, value: float) -> None:
        assert check_seconds(value, "delay") == float(value)

    @pytest.mark.parametrize("value", [None, math.inf])
    def test_none_and_infinity_mean_no_limit(self, value: float | None) -> None:
        assert check_seconds(value, "delay") is None

    @pytest.mark.parametrize(
        ("value", "error", "text"),
        [
            ("1", TypeError, "^timeout must be a number of seconds or None, got 'str'$"),
            (True, TypeError, "^timeout must be a number"),
            (-1, ValueError, "^timeout must be non-negative, got -1$"),
            (-math.inf, ValueError, "^timeout must be non-negative"),
            (math.nan, ValueError, "^timeout must not be NaN$"),
        ],
    )
    def test_bad_values_name_the_argument(
        self, value: object, error: type[Exception], text: str
    ) -> None:
        with pytest.raises(error, match=text):
            check_seconds(value, "timeout")


class TestTimeout:
    @pytest.mark.parametrize("value", [-1, -0.5, 0, 3, 2.5, Fraction(1, 3)])
    def test_real_numbers_pass_negative_ones_included(self, value: object) -> None:
        check_timeout(value)

    def test_nan_and_non_numbers_are_rejected(self) -> None:
        with pytest.raises(ValueError, match=r"^timeout must not be NaN$"):
            check_timeout(math.nan)
        with pytest.raises(TypeError, match=r"^wait must be a number of seconds"):
            check_timeout("1", "wait")


class TestToken:
    def test_tokens_and_none_pass(self) -> None:
        check_token(None)
        check_token(CancellationToken.NONE)
        check_token(CancellationTokenSource().token, "parent")

    def test_a_source_is_told_to_pass_its_token(self) -> None:
        with pytest.raises(TypeError, match=r"^token must be a CancellationToken or None; pass"):
            check_token(CancellationTokenSource())

    def test_none_can_be_refused(self) -> None:
        with pytest.raises(TypeError, match=r"^token must be a CancellationToken, got 'NoneType'$"):
            check_token(None, allow_none=False)

    def test_the_name_given_is_the_one_in_the_message(self) -> None:
        with pytest.raises(
            TypeError, match=r"^parent must be a CancellationToken or None, got 'int'"
        ):
            check_token(3, "parent")


def test_callable() -> None:
    check_callable(print, "callback")
    with pytest.raises(TypeError, match=r"^callback must be callable, got 'int'$"):
        check_callable(3, "callback")


class TestPositiveInt:
    def test_positive_ints_pass(self) -> None:
        assert check_positive_int(3, "max_workers") == 3

    @pytest.mark.parametrize(
        ("value", "error"), [(0, ValueError), (-2, ValueError), (True, TypeError), (2.0, TypeError)]
    )
    def test_others_are_rejected_by_name(self, value: object, error: type[Exception]) -> None:
        with pytest.raises(error, match=r"^max_workers must be"):
            check_positive_int(value, "max_workers")
