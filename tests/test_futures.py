"""Token-aware `wait`, `as_completed` and `result` on any `concurrent.futures.Future`."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Any

import pytest

import cancellable
from _helpers import WaiterLog, in_thread, waiters
from cancellable import (
    CancellationToken,
    CancellationTokenSource,
    OperationCancelledError,
    _futures,
    use_token,
)
from test_primitives import assert_cancelled, no_registrations


@pytest.fixture(autouse=True)
def _guard(no_leaked_threads: None) -> None:
    """Every test here runs under the leaked-thread guard."""


__all__ = ["waiters"]  # a fixture, used by name


class CountingFuture(cf.Future[Any]):
    """A foreign Future subclass that counts the done-callbacks it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.callbacks_added = 0

    def add_done_callback(self, fn: Any) -> None:
        self.callbacks_added += 1
        super().add_done_callback(fn)


CALLS = {
    "wait": lambda fs, tok, t: cancellable.wait(fs, t, token=tok),
    "wait-first": lambda fs, tok, t: cancellable.wait(fs, t, cf.FIRST_COMPLETED, token=tok),
    "as_completed": lambda fs, tok, t: list(cancellable.as_completed(fs, t, token=tok)),
    "result": lambda fs, tok, t: cancellable.result(fs[0], t, token=tok),
}


@pytest.mark.parametrize("name", list(CALLS))
class TestEveryWait:
    def test_blocked_then_cancelled(self, name: str, waiters: WaiterLog) -> None:
        futures = [CountingFuture(), CountingFuture()]
        cts = CancellationTokenSource()
        outcome = in_thread(lambda: CALLS[name](futures, cts.token, None))
        waiters.wait_blocked()
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)
        assert no_registrations(cts.token)
        for future in futures:
            assert not future.done()  # only the wait stopped
            watch = _futures._watches.get(future)
            assert watch is None or not watch.waiters  # unregistered from the watch

    def test_ambient_token(self, name: str, waiters: WaiterLog) -> None:
        futures = [CountingFuture()]
        cts = CancellationTokenSource()

        def run() -> Any:
            with use_token(cts.token):
                return CALLS[name](futures, None, None)

        outcome = in_thread(run)
        waiters.wait_blocked()
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)

    def test_cancelled_before_call_raises_even_if_done(self, name: str) -> None:
        future: cf.Future[int] = cf.Future()
        future.set_result(1)
        cts = CancellationTokenSource()
        cts.cancel("stop")
        with pytest.raises(OperationCancelledError):
            CALLS[name]([future], cts.token, 5)

    def test_completion_wakes_the_wait(self, name: str, waiters: WaiterLog) -> None:
        future: cf.Future[int] = cf.Future()
        cts = CancellationTokenSource()
        outcome = in_thread(lambda: CALLS[name]([future], cts.token, None))
        waiters.wait_blocked()
        future.set_result(42)
        outcome.join()
        assert outcome.error is None
        assert no_registrations(cts.token)

    def test_timeout_alongside_a_live_token(self, name: str) -> None:
        future: cf.Future[int] = cf.Future()
        cts = CancellationTokenSource()
        if name in ("wait", "wait-first"):
            done, pending = CALLS[name]([future], cts.token, 0.01)  # a real timeout
            assert (done, pending) == (set(), {future})
        else:
            with pytest.raises(TimeoutError):
                CALLS[name]([future], cts.token, 0.01)
        assert no_registrations(cts.token)

    def test_one_blocking_acquire_with_the_callers_timeout(
        self, name: str, waiters: WaiterLog
    ) -> None:
        futures = [CountingFuture()]
        cts = CancellationTokenSource()
        before = threading.active_count()
        outcome = in_thread(lambda: CALLS[name](futures, cts.token, 20))
        waiters.wait_blocked()
        assert threading.active_count() == before + 1
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)
        assert len(waiters.timeouts) == 1
        assert 19 < waiters.timeouts[0] <= 20


def test_repeated_waits_share_one_done_callback(waiters: WaiterLog) -> None:
    future = CountingFuture()
    for round_ in range(1, 51):
        cts = CancellationTokenSource()
        outcome = in_thread(lambda cts=cts: cancellable.result(future, token=cts.token))
        waiters.wait_blocked(round_)
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)
    assert future.callbacks_added == 1
    assert len(future._done_callbacks) == 1  # type: ignore[attr-defined]


def test_concurrent_waits_share_one_done_callback(waiters: WaiterLog) -> None:
    future = CountingFuture()
    cts = CancellationTokenSource()
    outcomes = [in_thread(lambda: cancellable.result(future, token=cts.token)) for _ in range(5)]
    waiters.wait_blocked(5)
    future.set_result("done")
    for outcome in outcomes:
        outcome.join()
        assert outcome.value == "done"
    assert future.callbacks_added == 1


def test_no_token_is_the_stdlib() -> None:
    done: cf.Future[int] = cf.Future()
    done.set_result(1)
    pending: cf.Future[int] = cf.Future()
    result = cancellable.wait([done, pending], 0)
    assert result == cf.wait([done, pending], 0)
    assert type(result) is type(cf.wait([done, pending], 0))
    assert list(cancellable.as_completed([done])) == [done]
    assert cancellable.result(done) == 1
    with pytest.raises(TimeoutError):
        list(cancellable.as_completed([pending], 0.01))
    with pytest.raises(TimeoutError):
        cancellable.result(pending, 0.01)


@pytest.mark.parametrize("name", list(CALLS))
def test_every_wait_accepts_a_huge_timeout(name: str, waiters: WaiterLog) -> None:
    futures = [CountingFuture()]
    cts = CancellationTokenSource()
    outcome = in_thread(lambda: CALLS[name](futures, cts.token, 1e10))
    waiters.wait_blocked()
    cts.cancel("stop")
    outcome.join()
    assert_cancelled(outcome, cts.token)  # not OverflowError
    assert waiters.timeouts[0] <= threading.TIMEOUT_MAX


def test_first_exception_does_not_count_a_cancelled_future(waiters: WaiterLog) -> None:
    # As concurrent.futures.wait: a cancelled future is done, not an exception.
    cancelled: cf.Future[int] = cf.Future()
    assert cancelled.cancel()
    running: cf.Future[int] = cf.Future()
    cts = CancellationTokenSource()
    outcome = in_thread(
        lambda: cancellable.wait(
            [cancelled, running], return_when=cf.FIRST_EXCEPTION, token=cts.token
        )
    )
    waiters.wait_blocked()  # it blocks: the cancelled future did not end the wait
    running.set_exception(KeyError("x"))
    outcome.join()
    assert outcome.value == ({cancelled, running}, set())


def test_return_when_is_checked() -> None:
    with pytest.raises(ValueError, match="return_when must be"):
        cancellable.wait([], return_when="SOMETIMES")


def test_first_exception_returns_on_an_error() -> None:
    ok: cf.Future[int] = cf.Future()
    bad: cf.Future[int] = cf.Future()
    bad.set_exception(KeyError("x"))
    cts = CancellationTokenSource()
    done, pending = cancellable.wait([ok, bad], return_when=cf.FIRST_EXCEPTION, token=cts.token)
    assert (done, pending) == ({bad}, {ok})


def test_as_completed_yields_in_completion_order(waiters: WaiterLog) -> None:
    futures: list[cf.Future[int]] = [cf.Future() for _ in range(3)]
    futures[1].set_result(1)
    cts = CancellationTokenSource()
    seen: list[cf.Future[int]] = []
    got_first = threading.Event()

    def consume() -> None:
        for future in cancellable.as_completed([*futures, futures[0]], token=cts.token):
            seen.append(future)
            got_first.set()

    outcome = in_thread(consume)
    assert got_first.wait(10)
    waiters.wait_blocked(1)
    futures[2].set_result(2)
    waiters.wait_blocked(2)
    futures[0].set_result(0)
    outcome.join()
    assert outcome.error is None
    assert seen == [futures[1], futures[2], futures[0]]


def test_result_of_a_failed_future_raises_its_error() -> None:
    future: cf.Future[int] = cf.Future()
    future.set_exception(KeyError("x"))
    with pytest.raises(KeyError):
        cancellable.result(future, token=CancellationTokenSource().token)


def test_works_with_executor_futures() -> None:
    cts = CancellationTokenSource()
    gate = threading.Event()
    with cf.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(gate.wait, 10), pool.submit(lambda: 3)]
        assert cancellable.result(futures[1], token=cts.token) == 3
        gate.set()
        _, pending = cancellable.wait(futures, token=cts.token)
        assert not pending
        assert [f.result() for f in futures] == [True, 3]


def test_ambient_cancelled_token_does_not_stop_a_wait_that_can_complete() -> None:
    future: cf.Future[int] = cf.Future()
    future.set_result(1)
    cts = CancellationTokenSource()
    cts.cancel()
    with use_token(cts.token):
        assert cancellable.result(future) == 1
        assert cancellable.wait([future]).done == {future}
        with pytest.raises(OperationCancelledError):
            cancellable.result(cf.Future())


def test_none_token_opts_out() -> None:
    cts = CancellationTokenSource()
    cts.cancel()
    with use_token(cts.token), pytest.raises(TimeoutError):
        cancellable.result(cf.Future(), 0.01, token=CancellationToken.NONE)


def test_map_with_a_huge_timeout_and_a_token_does_not_overflow() -> None:
    gate = threading.Event()
    with cancellable.CancellableThreadPoolExecutor(max_workers=1) as pool:
        cts = CancellationTokenSource()
        results = pool.map(lambda _: gate.wait(), [0], timeout=1e10, token=cts.token)
        # The wait returns when the gate opens (the delay only has to let
        # the wait start, its size is moot).
        opener = threading.Timer(0.2, gate.set)
        opener.start()
        try:
            assert list(results) == [True]
        finally:
            gate.set()
            opener.join()
