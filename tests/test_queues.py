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


# -- 3.13's Queue.shutdown() ---------------------------------------------------------

HAS_SHUTDOWN = sys.version_info >= (3, 13)
needs_shutdown = pytest.mark.skipif(not HAS_SHUTDOWN, reason="Queue.shutdown() is new in 3.13")
# The stdlib exception; only looked up where it exists.
ShutDown: type[Exception] = getattr(queue, "ShutDown", Exception)


@pytest.mark.skipif(HAS_SHUTDOWN, reason="3.13 and later have Queue.shutdown()")
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_no_shutdown_before_3_13_as_the_stdlib(kind: Any) -> None:
    ours, theirs = kind(), STDLIB[kind]()
    for name in ("shutdown", "is_shutdown"):
        assert hasattr(ours, name) == hasattr(theirs, name) == False  # noqa: E712
    assert not hasattr(queue, "ShutDown")


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


@needs_shutdown
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

    def test_a_failing_storage_hook_still_wakes_blocked_calls(
        self, kind: Any, waiters: WaiterLog
    ) -> None:
        class Failing(kind):  # type: ignore[misc]
            def _get(self) -> Any:
                raise RuntimeError("storage failed")

        cts = CancellationTokenSource()
        q, outcome = _blocked(Failing, "put", cts.token, None)
        waiters.wait_blocked()
        with pytest.raises(RuntimeError, match="storage failed"):
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
