"""3.13's Queue.shutdown() in the cancellable queues, with and without tokens.

Each behaviour is the stdlib's (compared side by side where it can be), plus
the one rule tokens add: a call blocked with a token that finds the queue
shut down raises `OperationCancelledError` if its token is cancelled by then.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from cancellable import (
    CancellationToken,
    CancellationTokenSource,
    OperationCancelledError,
    use_token,
)
from test_primitives import WaiterLog, assert_cancelled, in_thread, no_registrations
from test_queues import KINDS, STDLIB, _full


@pytest.fixture(autouse=True)
def _guard(no_leaked_threads: None) -> None:
    """Every test here runs under the leaked-thread guard."""


@pytest.fixture
def waiters(monkeypatch: pytest.MonkeyPatch) -> WaiterLog:
    from test_primitives import install_waiter_log

    return install_waiter_log(monkeypatch)


if sys.version_info < (3, 13):
    pytest.skip("Queue.shutdown() is new in 3.13", allow_module_level=True)

ShutDown: type[Exception] = queue.ShutDown


def _blocked(kind: Any, call: str, token: CancellationToken | None, timeout: float | None) -> Any:
    """A queue and the thread blocked on it in ``call`` (get, put or join)."""
    if call == "get":
        q = kind()
        return q, in_thread(lambda: q.get(timeout=timeout, token=token))
    if call == "put":
        q = _full(kind)
        return q, in_thread(lambda: q.put(8, timeout=timeout, token=token))
    q = kind()
    q.put(7)
    return q, in_thread(lambda: q.join(token=token))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
class TestShutdown:
    def test_is_shutdown_as_the_stdlib(self, kind: Any) -> None:
        ours, theirs = kind(), STDLIB[kind]()
        assert ours.is_shutdown is theirs.is_shutdown is False
        ours.shutdown()
        theirs.shutdown()
        assert ours.is_shutdown is theirs.is_shutdown is True
        ours.shutdown(immediate=True)  # a second call is allowed, as in the stdlib
        assert ours.is_shutdown

    @pytest.mark.parametrize("immediate", [False, True])
    @pytest.mark.parametrize("timeout", [None, 30])
    @pytest.mark.parametrize(
        ("call", "with_token"),
        [("get", True), ("put", True), ("get", False), ("put", False)],
        ids=["get-token", "put-token", "get-no-token", "put-no-token"],
    )
    def test_blocked_call_wakes_with_shutdown(
        self,
        kind: Any,
        call: str,
        with_token: bool,
        timeout: float | None,
        immediate: bool,
        *,
        waiters: WaiterLog,
    ) -> None:
        cts = CancellationTokenSource()
        if with_token:
            q, outcome = _blocked(kind, call, cts.token, timeout)
            waiters.wait_blocked()
        else:
            q, outcome = _blocked(kind, call, None, timeout)
            # The stdlib path does not go through our waiter locks: wait until
            # the thread sits in the condition.
            cond = q.not_empty if call == "get" else q.not_full
            while True:
                with q.mutex:
                    if cond._waiters:
                        break
        q.shutdown(immediate=immediate)
        outcome.join()
        assert isinstance(outcome.error, ShutDown), outcome.error
        assert no_registrations(cts.token)
        assert not q.not_empty._waiters
        assert not q.not_full._waiters
        if call == "put":
            # The blocked item was not added; immediate also discarded the old one.
            assert q.qsize() == (0 if immediate else 1)

    @pytest.mark.parametrize("immediate", [False, True])
    def test_get_drains_then_raises_shutdown(self, kind: Any, immediate: bool) -> None:
        cts = CancellationTokenSource()
        q, theirs = kind(), STDLIB[kind]()
        for each in (q, theirs):
            each.put(2)
            each.put(1)
            each.shutdown(immediate=immediate)
        left = [] if immediate else sorted([q.get(token=cts.token), q.get()])
        assert left == ([] if immediate else [1, 2])
        for get in (
            q.get,
            lambda: q.get(token=cts.token),
            lambda: q.get(timeout=5, token=cts.token),  # ShutDown, not Empty
            lambda: q.get(block=False),
            q.get_nowait,
        ):
            with pytest.raises(ShutDown):
                get()
        assert q.unfinished_tasks == theirs.unfinished_tasks == (0 if immediate else 2)

    @pytest.mark.parametrize("immediate", [False, True])
    def test_put_raises_shutdown(self, kind: Any, immediate: bool) -> None:
        cts = CancellationTokenSource()
        q = kind(1)
        q.shutdown(immediate=immediate)
        for put in (
            lambda: q.put(1),
            lambda: q.put(1, token=cts.token),
            lambda: q.put(1, timeout=5, token=cts.token),
            lambda: q.put(1, block=False),
            lambda: q.put_nowait(1),
        ):
            with pytest.raises(ShutDown):
                put()
        assert q.qsize() == 0
        assert q.unfinished_tasks == 0

    def test_immediate_shutdown_releases_join(self, kind: Any, waiters: WaiterLog) -> None:
        cts = CancellationTokenSource()
        q, outcome = _blocked(kind, "join", cts.token, None)
        waiters.wait_blocked()
        q.shutdown(immediate=True)  # discards the one item: nothing unfinished
        outcome.join()
        assert outcome.error is None
        assert q.unfinished_tasks == 0
        assert no_registrations(cts.token)

    def test_join_waits_for_items_taken_before_an_immediate_shutdown(
        self, kind: Any, waiters: WaiterLog
    ) -> None:
        # As the stdlib: only discarded items count as done; an item a consumer
        # holds keeps join() waiting until its task_done().
        cts = CancellationTokenSource()
        q, theirs = kind(), STDLIB[kind]()
        for each in (q, theirs):
            each.put(1)
            each.put(2)
            each.get()
        outcome = in_thread(lambda: q.join(token=cts.token))
        waiters.wait_blocked()
        q.shutdown(immediate=True)
        theirs.shutdown(immediate=True)
        assert q.unfinished_tasks == theirs.unfinished_tasks == 1
        waiters.wait_blocked(2)  # woken by the shutdown, and waiting again
        q.task_done()
        outcome.join()
        assert outcome.error is None

    def test_cancel_still_stops_a_join_after_shutdown(self, kind: Any, waiters: WaiterLog) -> None:
        cts = CancellationTokenSource()
        q, outcome = _blocked(kind, "join", cts.token, None)
        waiters.wait_blocked()
        q.shutdown()  # join is not released: the item is still unfinished
        assert q.unfinished_tasks == 1
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)
        assert q.unfinished_tasks == 1

    @pytest.mark.parametrize("call", ["get", "put"])
    def test_cancel_then_shutdown_raises_cancelled(
        self, kind: Any, call: str, waiters: WaiterLog
    ) -> None:
        cts = CancellationTokenSource()
        q, outcome = _blocked(kind, call, cts.token, None)
        waiters.wait_blocked()
        cts.cancel("stop")
        q.shutdown()
        outcome.join()
        assert_cancelled(outcome, cts.token)

    @pytest.mark.parametrize("immediate", [False, True])
    @pytest.mark.parametrize("call", ["get", "put"])
    def test_cancel_wins_over_a_shutdown_that_woke_the_call_first(
        self, kind: Any, call: str, immediate: bool, waiters: WaiterLog
    ) -> None:
        cts = CancellationTokenSource()
        q, outcome = _blocked(kind, call, cts.token, None)
        waiters.wait_blocked()
        # Registered after the waiter's own callback, so it runs first (latest
        # first): shutdown() wakes the waiter, then the cancel finds it awake.
        cts.token.register(q.shutdown, immediate)
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)
        assert q.is_shutdown
        if call == "put":
            assert q.qsize() == (0 if immediate else 1)

    def test_explicit_cancelled_token_wins_at_entry(self, kind: Any) -> None:
        cts = CancellationTokenSource()
        cts.cancel("stop")
        q = kind(1)
        q.shutdown()
        with pytest.raises(OperationCancelledError):
            q.get(token=cts.token)
        with pytest.raises(OperationCancelledError):
            q.put(1, token=cts.token)
        # Non-blocking forms ignore the token.
        with pytest.raises(ShutDown):
            q.get(block=False, token=cts.token)
        with pytest.raises(ShutDown):
            q.put(1, timeout=0, token=cts.token)

    def test_ambient_cancelled_token_is_not_read_by_a_call_that_does_not_block(
        self, kind: Any
    ) -> None:
        cts = CancellationTokenSource()
        cts.cancel("stop")
        q = kind()
        q.shutdown()
        with use_token(cts.token):
            with pytest.raises(ShutDown):
                q.get()
            with pytest.raises(ShutDown):
                q.put(1)

    def test_item_handed_before_shutdown_is_received(self, kind: Any, waiters: WaiterLog) -> None:
        cts = CancellationTokenSource()
        q, outcome = _blocked(kind, "get", cts.token, None)
        waiters.wait_blocked()
        q.put(5)
        q.shutdown()  # not immediate: the item stays for the woken getter
        cts.cancel("stop")
        outcome.join()
        assert outcome.value == 5

    @pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
    def test_a_failing_storage_hook_still_wakes_blocked_calls(
        self, kind: Any, error: type[BaseException], waiters: WaiterLog
    ) -> None:
        # Also Ctrl-C landing in the drain: it propagates as itself, and no
        # blocked call sleeps through the shutdown.
        class Failing(kind):  # type: ignore[misc]
            def _get(self) -> Any:
                raise error("storage failed")

        cts = CancellationTokenSource()
        q, outcome = _blocked(Failing, "put", cts.token, None)
        waiters.wait_blocked()
        with pytest.raises(error, match="storage failed"):
            q.shutdown(immediate=True)
        outcome.join()
        assert isinstance(outcome.error, ShutDown)
        assert q.is_shutdown

    def test_same_results_as_the_stdlib(self, kind: Any) -> None:
        def script(q: Any) -> list[Any]:
            seen: list[Any] = []

            def step(fn: Callable[[], Any]) -> None:
                try:
                    seen.append(fn())
                except Exception as error:
                    seen.append(type(error))

            for item in (3, 1, 2):
                step(lambda item=item: q.put(item))
            step(q.get)
            step(q.shutdown)
            step(lambda: q.put(9))
            step(q.get)
            step(q.task_done)
            step(lambda: q.shutdown(immediate=True))
            step(lambda: q.get(timeout=1))
            step(q.get_nowait)
            step(q.task_done)
            step(q.task_done)
            step(q.join)
            step(q.qsize)
            step(lambda: q.unfinished_tasks)
            return seen

        assert script(kind()) == script(STDLIB[kind]())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("immediate", [False, True])
def test_nothing_lost_when_a_shutdown_meets_random_cancels(immediate: bool) -> None:
    from cancellable import Queue
    from test_primitives import churn

    removed: list[int] = []  # every item taken out of storage: by get, or by the drain

    class Recording(Queue[int]):
        def _get(self) -> int:
            item = super()._get()
            removed.append(item)  # under the queue's mutex
            return item

    q = Recording(4)
    counter = iter(range(10**9))
    lock = threading.Lock()
    produced: list[int] = []
    received: list[int] = []
    refused = [0]
    saw_shutdown: set[int] = set()
    all_saw_it = threading.Event()
    roles: dict[int, bool] = {}

    def op(token: CancellationToken) -> None:
        me = threading.get_ident()
        with lock:
            producer = roles.setdefault(me, len(roles) % 2 == 0)
        try:
            if producer:
                with lock:
                    item = next(counter)
                q.put(item, token=token)
                with lock:
                    produced.append(item)
            else:
                item = q.get(token=token)
                with lock:
                    received.append(item)
        except ShutDown:
            with lock:
                refused[0] += 1
                saw_shutdown.add(me)
                if len(saw_shutdown) == 6:
                    all_saw_it.set()

    def settle() -> None:
        q.shutdown(immediate=immediate)
        # Every worker, blocked or not, and however its token fares, must meet it.
        assert all_saw_it.wait(timeout=20)

    cancelled = churn(6, op, cancels=3000, settle=settle)
    assert sum(cancelled) > 0
    left: list[int] = []
    while True:
        try:
            left.append(q.get_nowait())
        except ShutDown:
            break
    assert len(received) == len(set(received))  # nothing delivered twice
    assert sorted(removed) == sorted(produced)  # every item added was taken out once
    delivered = received + left
    if not immediate:
        assert sorted(delivered) == sorted(produced)  # get drained every item
    assert q.is_shutdown
    assert q.qsize() == 0
    with pytest.raises(ShutDown):
        q.put(1)
