"""Token-aware Queue, LifoQueue and PriorityQueue: get, put and join."""

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
    LifoQueue,
    OperationCancelledError,
    PriorityQueue,
    Queue,
    use_token,
)
from test_primitives import (
    WaiterLog,
    assert_cancelled,
    churn,
    in_thread,
    install_waiter_log,
    no_registrations,
)

KINDS = [Queue, LifoQueue, PriorityQueue]
STDLIB = {Queue: queue.Queue, LifoQueue: queue.LifoQueue, PriorityQueue: queue.PriorityQueue}


@pytest.fixture(autouse=True)
def _guard(no_leaked_threads: None) -> None:
    """Every test here runs under the leaked-thread guard."""


@pytest.fixture
def waiters(monkeypatch: pytest.MonkeyPatch) -> WaiterLog:
    return install_waiter_log(monkeypatch)


def _full(kind: type[Queue[int]]) -> Queue[int]:
    q = kind(1)
    q.put(7)
    return q


def _unfinished(kind: type[Queue[int]]) -> Queue[int]:
    q = kind()
    q.put(7)
    q.get()
    return q


# (name, make the queue, the blocking call, what must hold after a cancel)
CALLS: list[tuple[str, Callable[[type[Any]], Any], Callable[..., Any], Callable[[Any], None]]] = [
    (
        "get",
        lambda kind: kind(),
        lambda q, tok, t: q.get(timeout=t, token=tok),
        lambda q: (q.put(1), q.get_nowait() == 1 or pytest.fail("item lost")),
    ),
    (
        "put",
        _full,
        lambda q, tok, t: q.put(8, timeout=t, token=tok),
        lambda q: (q.qsize() == 1 and q.get_nowait() == 7) or pytest.fail("bad queue state"),
    ),
    (
        "join",
        _unfinished,
        lambda q, tok, t: q.join(token=tok),
        lambda q: q.unfinished_tasks == 1 or pytest.fail("bad task count"),
    ),
]


@pytest.fixture(params=CALLS, ids=[c[0] for c in CALLS])
def spec(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
class TestBlockingCalls:
    def test_blocked_then_cancelled(self, kind: Any, spec: Any, waiters: WaiterLog) -> None:
        _name, make, call, after = spec
        q = make(kind)
        cts = CancellationTokenSource()
        outcome = in_thread(lambda: call(q, cts.token, None))
        waiters.wait_blocked()
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)
        assert no_registrations(cts.token)
        assert not q.not_empty._waiters
        assert not q.not_full._waiters
        assert not q.all_tasks_done._waiters
        after(q)

    def test_ambient_token(self, kind: Any, spec: Any, waiters: WaiterLog) -> None:
        _name, make, call, after = spec
        q = make(kind)
        cts = CancellationTokenSource()

        def run() -> Any:
            with use_token(cts.token):
                return call(q, None, None)

        outcome = in_thread(run)
        waiters.wait_blocked()
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)
        after(q)

    def test_cancelled_before_call(self, kind: Any, spec: Any) -> None:
        _name, make, call, after = spec
        q = make(kind)
        cts = CancellationTokenSource()
        cts.cancel("stop")
        with pytest.raises(OperationCancelledError):
            call(q, cts.token, 5)
        after(q)

    def test_one_blocking_acquire_with_the_callers_timeout(
        self, kind: Any, spec: Any, waiters: WaiterLog
    ) -> None:
        name, make, call, _after = spec
        if name == "join":
            return  # Queue.join has no timeout
        q = make(kind)
        cts = CancellationTokenSource()
        before = threading.active_count()
        outcome = in_thread(lambda: call(q, cts.token, 20))
        waiters.wait_blocked()
        assert threading.active_count() == before + 1
        cts.cancel("stop")
        outcome.join()
        assert len(waiters.timeouts) == 1
        assert 19 < waiters.timeouts[0] <= 20


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
class TestQueue:
    def test_subclasses_the_stdlib_queue(self, kind: Any) -> None:
        assert issubclass(kind, STDLIB[kind])
        assert kind[int] is not None  # generic, as the stdlib queues are

    def test_timeouts_with_a_live_token(self, kind: Any) -> None:
        cts = CancellationTokenSource()
        with pytest.raises(queue.Empty):
            kind().get(timeout=0.01, token=cts.token)  # a real timeout is the point
        with pytest.raises(queue.Full):
            _full(kind).put(1, timeout=0.01, token=cts.token)
        assert no_registrations(cts.token)

    def test_non_blocking_forms_ignore_a_cancelled_token(self, kind: Any) -> None:
        cts = CancellationTokenSource()
        cts.cancel()
        q = kind(1)
        q.put(1, block=False, token=cts.token)
        with pytest.raises(queue.Full):
            q.put(2, timeout=0, token=cts.token)
        assert q.get(block=False, token=cts.token) == 1
        with pytest.raises(queue.Empty):
            q.get(timeout=0, token=cts.token)

    def test_ambient_cancelled_token_does_not_stop_a_get_that_can_complete(self, kind: Any) -> None:
        cts = CancellationTokenSource()
        cts.cancel()
        q = kind()
        q.put(1)
        with use_token(cts.token):
            assert q.get() == 1
            q.task_done()
            q.join()
            with pytest.raises(OperationCancelledError):
                q.get()

    def test_none_token_opts_out(self, kind: Any) -> None:
        cts = CancellationTokenSource()
        cts.cancel()
        with use_token(cts.token), pytest.raises(queue.Empty):
            kind().get(timeout=0.01, token=CancellationToken.NONE)

    def test_order_matches_the_stdlib(self, kind: Any) -> None:
        ours, theirs = kind(), STDLIB[kind]()
        for item in (3, 1, 2):
            ours.put(item)
            theirs.put(item)
        assert [ours.get() for _ in range(3)] == [theirs.get() for _ in range(3)]

    def test_negative_timeout_message_matches(self, kind: Any) -> None:
        with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
            kind().get(timeout=-1)

    def test_put_handed_before_cancel_is_received(self, kind: Any, waiters: WaiterLog) -> None:
        q = kind()
        cts = CancellationTokenSource()
        outcome = in_thread(lambda: q.get(token=cts.token))
        waiters.wait_blocked()
        with q.mutex:
            q._put(5)
            q.unfinished_tasks += 1
            q.not_empty.notify()
            cts.cancel("stop")  # seen only after the item was handed over
        outcome.join()
        assert outcome.value == 5
        assert q.qsize() == 0


def test_no_item_lost_under_random_cancels() -> None:
    q: Queue[int] = Queue(4)
    counter = iter(range(10**9))
    lock = threading.Lock()
    produced: list[int] = []
    received: list[int] = []
    pending: dict[int, int] = {}  # a producer's item that a cancelled put did not add

    roles: dict[int, bool] = {}

    def op(token: CancellationToken) -> None:
        me = threading.get_ident()
        with lock:
            producer = roles.setdefault(me, len(roles) % 2 == 0)  # half produce, half consume
        if producer:
            with lock:
                item = pending.pop(me, None)
                if item is None:
                    item = next(counter)
            try:
                q.put(item, token=token)
            except OperationCancelledError:
                with lock:
                    pending[me] = item  # not added: retry it
                raise
            with lock:
                produced.append(item)
        else:
            item = q.get(token=token)
            with lock:
                received.append(item)

    cancelled = churn(6, op)
    assert sum(cancelled) > 0
    left = []
    while True:
        try:
            left.append(q.get_nowait())
        except queue.Empty:
            break
    everything = received + left
    assert len(everything) == len(set(everything))  # nothing delivered twice
    assert sorted(everything) == sorted(produced)  # nothing lost
    assert len(produced) > 0


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="3.13 and later have Queue.shutdown()")
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_no_shutdown_before_3_13_as_the_stdlib(kind: Any) -> None:
    # The shutdown tests are in test_queue_shutdown.py.
    ours, theirs = kind(), STDLIB[kind]()
    for name in ("shutdown", "is_shutdown"):
        assert hasattr(ours, name) == hasattr(theirs, name) == False  # noqa: E712
    assert not hasattr(queue, "ShutDown")
