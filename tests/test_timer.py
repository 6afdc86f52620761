"""The one deadline thread: it serves every deadline, whatever the values and errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from cancellable import CancellationTokenSource, _timer
from conftest import FakeClock

WAIT = 10.0  # seconds; an upper bound for a deadline of a few milliseconds to fire


@pytest.fixture
def timer_thread() -> Iterator[threading.Thread]:
    """The running timer thread (started by a first deadline if need be)."""
    CancellationTokenSource(timeout=3600).close()
    thread = _timer.TIMER._thread
    assert thread is not None
    assert thread.is_alive()
    yield thread
    assert thread.is_alive(), "the timer thread died"
    assert _timer.TIMER._thread is thread


def _a_short_deadline_fires() -> bool:
    return CancellationTokenSource(timeout=0.001).token.wait(WAIT)


@pytest.mark.parametrize("seconds", [1e10, 1e300, threading.TIMEOUT_MAX * 2, 2**70])
def test_a_huge_timeout_leaves_the_timer_serving(
    seconds: float, timer_thread: threading.Thread
) -> None:
    far = CancellationTokenSource(timeout=seconds)
    assert _a_short_deadline_fires()
    assert not far.token.is_cancellation_requested
    far.close()


@pytest.mark.parametrize("kind", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_a_deadline_callback_error_is_logged_and_later_deadlines_fire(
    kind: type[BaseException],
    timer_thread: threading.Thread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = CancellationTokenSource()

    def fail() -> None:
        raise kind("from a callback")

    failing.token.register(fail)
    failing.cancel_after(0.001)
    assert failing.token.wait(WAIT)
    assert _a_short_deadline_fires()
    logged = [r.exc_info[0] for r in caplog.records if r.exc_info and r.name == "cancellable"]
    assert kind in logged


def test_an_error_in_the_timer_loop_is_logged_and_it_keeps_serving(
    monkeypatch: pytest.MonkeyPatch,
    timer_thread: threading.Thread,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_timer, "_PAUSE_AFTER_ERROR", 0.0)
    original = _timer._Timer._pop_due
    failed = threading.Event()

    def pop_due_once_failing(self: _timer._Timer) -> object:
        if not failed.is_set():
            failed.set()
            raise OSError("the clock broke")
        return original(self)

    monkeypatch.setattr(_timer._Timer, "_pop_due", pop_due_once_failing)
    assert _a_short_deadline_fires()
    assert failed.is_set()
    assert any(
        r.exc_info and r.exc_info[0] is OSError for r in caplog.records if r.name == "cancellable"
    )


def test_disarmed_entries_do_not_fire(clock: FakeClock) -> None:
    cts = CancellationTokenSource(timeout=5)
    cts.close()
    clock.advance(10)
    assert not cts.token.is_cancellation_requested


def test_run_due_fires_in_due_order(clock: FakeClock) -> None:
    fired: list[int] = []
    late = CancellationTokenSource(timeout=2)
    early = CancellationTokenSource(timeout=1)
    late.token.register(fired.append, 2)
    early.token.register(fired.append, 1)
    assert clock.advance(3) == 2
    assert fired == [1, 2]
