"""Bad input to every public function and constructor, as one table.

Each row calls one public API wrongly (a wrong type, a NaN or negative
timeout, use after close or shutdown) and names the error it must raise,
whose message must name the argument. Then the same object must still work
(or be clearly closed), which the row's ``after`` check proves. Rows for the
executor that fail today are marked xfail with the precise failure.

Re-entrant calls from callbacks and tasks follow the table.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

import cancellable
from cancellable import (
    Barrier,
    BoundedSemaphore,
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancellationToken,
    CancellationTokenRegistration,
    CancellationTokenSource,
    CancelScope,
    Condition,
    Event,
    LifoQueue,
    Lock,
    OperationCancelledError,
    PriorityQueue,
    Queue,
    RLock,
    Semaphore,
    TaskGroup,
    TokenBoundExecutor,
    as_completed,
    cancel_on,
    current_token,
    fail_after,
    join,
    move_on_after,
    result,
    sleep,
    to_thread,
    use_token,
    wait,
)

NAN, INF = math.nan, math.inf
WAIT = 10


def _nothing() -> None:
    return None


def _done_future() -> Future[int]:
    future: Future[int] = Future()
    future.set_result(1)
    return future


def _pool() -> CancellableThreadPoolExecutor:
    return CancellableThreadPoolExecutor(1)


def _closed_pool() -> CancellableThreadPoolExecutor:
    pool = CancellableThreadPoolExecutor(1)
    pool.shutdown()
    return pool


def _held_condition() -> Condition:
    cond = Condition()
    cond.acquire()
    return cond


def _entered_group() -> TaskGroup:
    group = TaskGroup(CancellableThreadPoolExecutor(1))
    group.__enter__()
    return group


def _group_works(group: TaskGroup) -> None:
    assert group.submit(pow, 2, 3).result(timeout=WAIT) == 8
    group.__exit__(None, None, None)
    with pytest.raises(RuntimeError, match="exited"):
        group.submit(int)


def _scope_works(scope: CancelScope) -> None:
    with scope:
        assert current_token() == scope.token
        scope.cancel("still works")
        current_token().raise_if_cancellation_requested()
    assert scope.cancelled_caught


def _closed_source() -> CancellationTokenSource:
    source = CancellationTokenSource()
    source.close()
    return source


def _pool_works(pool: CancellableThreadPoolExecutor) -> None:
    try:
        assert pool.submit(pow, 2, 3).result(timeout=WAIT) == 8
    finally:
        pool.shutdown()


def _pool_is_closed(pool: CancellableThreadPoolExecutor) -> None:
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(int)
    pool.shutdown()  # idempotent


def _source_works(source: CancellationTokenSource) -> None:
    ran: list[int] = []
    source.token.register(ran.append, 1)
    source.cancel("still works")
    assert ran == [1]
    assert source.token.reason == "still works"


def _lock_works(lock: Lock | RLock) -> None:
    assert lock.acquire(timeout=1)
    lock.release()


def _sem_works(sem: Semaphore) -> None:
    sem.release()
    assert sem.acquire(timeout=1)


def _event_works(event: Event) -> None:
    event.set()
    assert event.wait(0.5)


def _cond_works(cond: Condition) -> None:
    cond.notify()  # still held
    cond.release()
    with cond:
        assert not cond.wait(0)


def _queue_works(queue: Queue[Any]) -> None:
    queue.put(1)
    assert queue.get(timeout=1) == 1


def _barrier_works(barrier: Barrier) -> None:
    assert barrier.wait(timeout=1) == 0  # one party


@dataclass(frozen=True)
class Row:
    """One wrong call: ``call(make())`` raises ``error`` matching ``match``; then ``after``."""

    name: str  # the public name under test (from cancellable.__all__)
    case: str
    make: Callable[[], Any]
    call: Callable[[Any], object]
    error: type[BaseException]
    match: str
    after: Callable[[Any], object] | None = None
    xfail: str | None = None


ROWS = [
    # -- tokens ------------------------------------------------------------------
    Row("CancellationTokenSource", "int parent", _nothing,
        lambda _: CancellationTokenSource(5), TypeError, "parents must be CancellationToken"),
    Row("CancellationTokenSource", "source as parent", _nothing,
        lambda _: CancellationTokenSource(CancellationTokenSource()), TypeError, "source.token"),
    # The constructor's messages name its own argument, not cancel_after's.
    Row("CancellationTokenSource", "str timeout", _nothing,
        lambda _: CancellationTokenSource(timeout="1"), TypeError, "^timeout must be a number"),
    Row("CancellationTokenSource", "negative timeout", _nothing,
        lambda _: CancellationTokenSource(timeout=-1), ValueError, "^timeout must be non-negative"),
    Row("CancellationTokenSource", "NaN timeout", _nothing,
        lambda _: CancellationTokenSource(timeout=NAN), ValueError, "^timeout must not be NaN"),
    Row("CancellationTokenSource", "cancel_after NaN", CancellationTokenSource,
        lambda s: s.cancel_after(NAN), ValueError, "delay must not be NaN", _source_works),
    Row("CancellationTokenSource", "cancel_after negative", CancellationTokenSource,
        lambda s: s.cancel_after(-0.5), ValueError, "delay must be non-negative", _source_works),
    Row("CancellationTokenSource", "cancel_after str", CancellationTokenSource,
        lambda s: s.cancel_after("1"), TypeError, "delay must be a number", _source_works),
    Row("CancellationTokenSource", "cancel_after after close", _closed_source,
        lambda s: s.cancel_after(1), ValueError, "closed", _source_works),
    Row("CancellationToken", "direct construction", _nothing,
        lambda _: CancellationToken(), TypeError, "CancellationTokenSource"),
    Row("CancellationToken", "register non-callable", CancellationTokenSource,
        lambda s: s.token.register(5), TypeError, "callback must be callable", _source_works),
    Row("CancellationToken", "register on NONE, non-callable", _nothing,
        lambda _: CancellationToken.NONE.register(None), TypeError, "callback must be callable"),
    Row("CancellationToken", "wait NaN", CancellationTokenSource,
        lambda s: s.token.wait(NAN), ValueError, "timeout must not be NaN", _source_works),
    Row("CancellationToken", "wait negative", CancellationTokenSource,
        lambda s: s.token.wait(-1), ValueError, "timeout must be non-negative", _source_works),
    Row("CancellationToken", "wait str", CancellationTokenSource,
        lambda s: s.token.wait("1"), TypeError, "timeout must be a number", _source_works),
    Row("CancellationTokenRegistration", "direct construction", _nothing,
        lambda _: CancellationTokenRegistration(), TypeError, "register"),
    Row("use_token", "None", _nothing,
        lambda _: use_token(None).__enter__(), TypeError, "token must be a CancellationToken"),
    Row("use_token", "a source", _nothing,
        lambda _: use_token(CancellationTokenSource()).__enter__(),  # type: ignore[arg-type]
        TypeError, "token must be a CancellationToken"),
    Row("current_token", "an argument", _nothing,
        lambda _: current_token(5), TypeError, "current_token"),  # type: ignore[call-arg]
    Row("OperationCancelledError", "unknown keyword", _nothing,
        lambda _: OperationCancelledError("x", bogus=1), TypeError, "bogus"),
    # -- primitives ----------------------------------------------------------------
    Row("Lock", "NaN timeout", Lock,
        lambda lock: lock.acquire(timeout=NAN), ValueError, "timeout must not be NaN", _lock_works),
    Row("Lock", "str timeout", Lock,
        lambda lock: lock.acquire(timeout="1"), TypeError, "timeout must be a number", _lock_works),
    Row("Lock", "negative timeout", Lock,
        lambda lock: lock.acquire(timeout=-2), ValueError, "timeout", _lock_works),
    Row("Lock", "int token", Lock,
        lambda lock: lock.acquire(token=5), TypeError, "token must be a Cancel", _lock_works),
    Row("Lock", "release unlocked", Lock,
        lambda lock: lock.release(), RuntimeError, "unlocked", _lock_works),
    Row("RLock", "source as token", RLock,
        lambda lock: lock.acquire(token=CancellationTokenSource()), TypeError, "source.token",
        _lock_works),
    Row("RLock", "NaN timeout", RLock,
        lambda lock: lock.acquire(timeout=NAN), ValueError, "timeout must not be NaN", _lock_works),
    Row("RLock", "release unowned", RLock,
        lambda lock: lock.release(), RuntimeError, "un-acquired", _lock_works),
    Row("Event", "NaN timeout", Event,
        lambda e: e.wait(NAN), ValueError, "timeout must not be NaN", _event_works),
    Row("Event", "str timeout", Event,
        lambda e: e.wait("1"), TypeError, "timeout must be a number", _event_works),
    Row("Event", "str token", Event,
        lambda e: e.wait(token="x"), TypeError, "token must be a CancellationToken", _event_works),
    Row("Condition", "int lock", _nothing,
        lambda _: Condition(5), TypeError, "lock must have acquire"),  # type: ignore[arg-type]
    Row("Condition", "NaN timeout", _held_condition,
        lambda c: c.wait(NAN), ValueError, "timeout must not be NaN", _cond_works),
    Row("Condition", "int token", _held_condition,
        lambda c: c.wait(1, token=5), TypeError, "token must be a CancellationToken", _cond_works),
    Row("Condition", "wait_for str timeout", _held_condition,
        lambda c: c.wait_for(bool, "1"), TypeError, "timeout must be a number", _cond_works),
    Row("Condition", "wait without the lock", Condition,
        lambda c: c.wait(0.1), RuntimeError, "un-acquired lock",
        lambda c: (c.acquire(), _cond_works(c))),
    Row("Semaphore", "str value", _nothing,
        lambda _: Semaphore("1"), TypeError, "value must be an integer"),  # type: ignore[arg-type]
    Row("Semaphore", "negative value", _nothing,
        lambda _: Semaphore(-1), ValueError, ">= 0"),
    Row("Semaphore", "NaN timeout", lambda: Semaphore(0),
        lambda s: s.acquire(timeout=NAN), ValueError, "timeout must not be NaN", _sem_works),
    Row("Semaphore", "str timeout", lambda: Semaphore(0),
        lambda s: s.acquire(timeout="1"), TypeError, "timeout must be a number", _sem_works),
    Row("Semaphore", "int token", lambda: Semaphore(0),
        lambda s: s.acquire(timeout=0.01, token=5), TypeError, "token must be", _sem_works),
    Row("BoundedSemaphore", "release over the bound", BoundedSemaphore,
        lambda s: s.release(), ValueError, "released too many times",
        lambda s: (s.acquire(), _sem_works(s))),
    Row("BoundedSemaphore", "NaN timeout", lambda: BoundedSemaphore(0),
        lambda s: s.acquire(timeout=NAN), ValueError, "timeout must not be NaN"),
    Row("Barrier", "zero parties", _nothing,
        lambda _: Barrier(0), ValueError, "parties must be at least 1"),
    Row("Barrier", "str parties", _nothing,
        lambda _: Barrier("2"), TypeError, "parties must be an integer"),  # type: ignore[arg-type]
    Row("Barrier", "non-callable action", _nothing,
        lambda _: Barrier(2, action=5), TypeError, "action must be callable"),  # type: ignore[arg-type]
    Row("Barrier", "NaN default timeout", _nothing,
        lambda _: Barrier(2, timeout=NAN), ValueError, "timeout must not be NaN"),
    Row("Barrier", "NaN timeout", lambda: Barrier(1),
        lambda b: b.wait(NAN), ValueError, "timeout must not be NaN", _barrier_works),
    Row("Barrier", "int token", lambda: Barrier(1),
        lambda b: b.wait(token=5), TypeError, "token must be", _barrier_works),
    Row("Queue", "str maxsize", _nothing,
        lambda _: Queue("1"), TypeError, "maxsize must be an integer"),  # type: ignore[arg-type]
    Row("Queue", "NaN get timeout", Queue,
        lambda q: q.get(timeout=NAN), ValueError, "timeout must not be NaN", _queue_works),
    Row("Queue", "negative get timeout", Queue,
        lambda q: q.get(timeout=-1), ValueError, "'timeout' must be a non-negative", _queue_works),
    Row("Queue", "str put timeout", Queue,
        lambda q: q.put(1, timeout="1"), TypeError, "timeout must be a number",
        _queue_works),
    Row("Queue", "int join token", Queue,
        lambda q: q.join(token=5), TypeError, "token must be", _queue_works),
    Row("LifoQueue", "NaN get timeout", LifoQueue,
        lambda q: q.get(timeout=NAN), ValueError, "timeout must not be NaN", _queue_works),
    Row("PriorityQueue", "int get token", PriorityQueue,
        lambda q: q.get(token=5), TypeError, "token must be", _queue_works),
    Row("sleep", "NaN", _nothing, lambda _: sleep(NAN), ValueError, "seconds must not be NaN"),
    Row("sleep", "negative", _nothing, lambda _: sleep(-1), ValueError, "seconds must be non-neg"),
    Row("sleep", "str", _nothing, lambda _: sleep("1"), TypeError, "seconds must be a number"),
    Row("sleep", "int token", _nothing,
        lambda _: sleep(0.01, token=5), TypeError, "token must be"),  # type: ignore[arg-type]
    Row("join", "not a thread", _nothing,
        lambda _: join(5), TypeError, "thread must be a threading.Thread"),  # type: ignore[arg-type]
    Row("join", "NaN timeout", _nothing,
        lambda _: join(threading.current_thread(), NAN), ValueError, "timeout must not be NaN"),
    Row("join", "unstarted thread", _nothing,
        lambda _: join(threading.Thread(target=int)), RuntimeError, "before it is started"),
    Row("wait", "NaN timeout", _nothing,
        lambda _: wait([Future()], NAN), ValueError, "timeout must not be NaN"),
    Row("wait", "bad return_when", _nothing,
        lambda _: wait([], return_when="SOON"), ValueError, "return_when must be"),
    Row("wait", "int token", _nothing,
        lambda _: wait([Future()], 0.01, token=5), TypeError, "token must be"),  # type: ignore[arg-type]
    Row("as_completed", "str timeout", _nothing,
        lambda _: list(as_completed([Future()], "1")), TypeError, "timeout must be a number"),
    Row("as_completed", "int token", _nothing,
        lambda _: list(as_completed([Future()], token=5)), TypeError, "token must be"),  # type: ignore[arg-type]
    Row("result", "not a future", _nothing,
        lambda _: result(5), TypeError, "future must be a concurrent.futures.Future"),  # type: ignore[arg-type]
    Row("result", "NaN timeout", _nothing,
        lambda _: result(Future(), NAN), ValueError, "timeout must not be NaN"),
    Row("result", "int token", _done_future,
        lambda f: result(f, token=5), TypeError, "token must be",  # type: ignore[arg-type]
        lambda f: result(f) == 1),
    # -- executor --------------------------------------------------------------------
    Row("CancellableThreadPoolExecutor", "zero workers", _nothing,
        lambda _: CancellableThreadPoolExecutor(0), ValueError, "max_workers"),
    Row("CancellableThreadPoolExecutor", "str workers", _nothing,
        lambda _: CancellableThreadPoolExecutor("2"), TypeError, "max_workers"),  # type: ignore[arg-type]
    Row("CancellableThreadPoolExecutor", "non-callable initializer", _nothing,
        lambda _: CancellableThreadPoolExecutor(initializer=5), TypeError, "initializer"),  # type: ignore[arg-type]
    Row("CancellableThreadPoolExecutor", "int token", _nothing,
        lambda _: CancellableThreadPoolExecutor(token=5), TypeError, "token must be"),  # type: ignore[arg-type]
    Row("CancellableThreadPoolExecutor", "zero max_pending", _nothing,
        lambda _: CancellableThreadPoolExecutor(max_pending=0), ValueError, "max_pending"),
    Row("CancellableThreadPoolExecutor", "negative laggard_grace", _nothing,
        lambda _: CancellableThreadPoolExecutor(laggard_grace=-1), ValueError, "laggard_grace"),
    Row("CancellableThreadPoolExecutor", "NaN laggard_grace", _nothing,
        lambda _: CancellableThreadPoolExecutor(laggard_grace=NAN), ValueError, "laggard_grace"),
    Row("CancellableThreadPoolExecutor", "str laggard_grace", _nothing,
        lambda _: CancellableThreadPoolExecutor(laggard_grace="5"), TypeError, "laggard_grace"),  # type: ignore[arg-type]
    Row("Laggard", "laggards NaN grace", _pool,
        lambda p: p.laggards(NAN), ValueError, "grace", _pool_works),
    Row("ExecutorStatistics", "laggards str grace", _pool,
        lambda p: p.laggards("1"), TypeError, "grace", _pool_works),  # type: ignore[arg-type]
    Row("CancellableThreadPoolExecutor", "submit non-callable", _pool,
        lambda p: p.submit(5), TypeError, "fn must be callable", _pool_works),
    Row("CancellableThreadPoolExecutor", "submit int token", _pool,
        lambda p: p.submit(int, token=5), TypeError, "token must be", _pool_works),
    Row("CancellableThreadPoolExecutor", "with_token source", _pool,
        lambda p: p.with_token(CancellationTokenSource()), TypeError, "token must be",
        _pool_works),
    Row("CancellableThreadPoolExecutor", "map zero buffersize", _pool,
        lambda p: p.map(int, [1], buffersize=0), ValueError, "buffersize", _pool_works),
    Row("CancellableThreadPoolExecutor", "map int token", _pool,
        lambda p: p.map(int, [1], token=5), TypeError, "token must be", _pool_works),
    Row("CancellableThreadPoolExecutor", "map str timeout", _pool,
        lambda p: list(p.map(int, [1], timeout="1")), TypeError, "timeout", _pool_works),
    Row("CancellableThreadPoolExecutor", "map NaN timeout", _pool,
        lambda p: list(p.map(int, [1], timeout=NAN)), ValueError, "timeout", _pool_works),
    Row("CancellableThreadPoolExecutor", "submit after shutdown", _closed_pool,
        lambda p: p.submit(int), RuntimeError, "cannot schedule new futures after shutdown",
        _pool_is_closed),
    Row("CancellableThreadPoolExecutor", "map after shutdown", _closed_pool,
        lambda p: p.map(int, [1]), RuntimeError, "cannot schedule new futures after shutdown",
        _pool_is_closed),
    Row("TokenBoundExecutor", "submit after shutdown", _closed_pool,
        lambda p: p.with_token(CancellationTokenSource().token).submit(int), RuntimeError,
        "after shutdown", _pool_is_closed),
    Row("TokenBoundExecutor", "direct construction with wrong types", _nothing,
        lambda _: TokenBoundExecutor(5, 5), TypeError, "executor"),  # type: ignore[arg-type]
    Row("CancellableFuture", "set_result twice", CancellableFuture,
        lambda f: (f.set_result(1), f.set_result(2)), InvalidStateError, "FINISHED",
        lambda f: f.result(0) == 1),
    Row("CancellableFuture", "result str timeout", CancellableFuture,
        lambda f: f.result(timeout="1"), TypeError, "timeout"),
    # The process pool's own rows (more in tests/test_process.py::TestArguments).
    Row("CancellableProcessPoolExecutor", "zero workers", _nothing,
        lambda _: cancellable.CancellableProcessPoolExecutor(0), ValueError, "max_workers"),
    Row("CancellableProcessFuture", "request_cancel NaN kill_after",
        cancellable.CancellableProcessFuture,
        lambda f: f.request_cancel(kill_after=NAN), ValueError, "kill_after",
        lambda f: not f.done()),
    # -- structured concurrency and asyncio -------------------------------------------
    Row("TaskGroup", "stdlib executor", _nothing,
        lambda _: TaskGroup(ThreadPoolExecutor(1)), TypeError, "executor must be"),  # type: ignore[arg-type]
    Row("TaskGroup", "source as token", _nothing,
        lambda _: TaskGroup(token=CancellationTokenSource()), TypeError, "token must be"),  # type: ignore[arg-type]
    Row("TaskGroup", "zero limit", _nothing,
        lambda _: TaskGroup(limit=0), ValueError, "limit must be at least 1"),
    Row("TaskGroup", "float limit", _nothing,
        lambda _: TaskGroup(limit=1.5), TypeError, "limit must be an int"),  # type: ignore[arg-type]
    Row("TaskGroup", "str fail_fast", _nothing,
        lambda _: TaskGroup(fail_fast="yes"), TypeError, "fail_fast must be a bool"),  # type: ignore[arg-type]
    Row("TaskGroup", "submit before entering", TaskGroup,
        lambda g: g.submit(int), RuntimeError, "not entered"),
    Row("TaskGroup", "submit non-callable", _entered_group,
        lambda g: g.submit(5), TypeError, "fn must be callable", _group_works),
    Row("CancelScope", "NaN timeout", _nothing,
        lambda _: CancelScope(NAN), ValueError, "timeout must not be NaN"),
    Row("CancelScope", "str timeout", _nothing,
        lambda _: CancelScope("1"), TypeError, "timeout must be a number"),  # type: ignore[arg-type]
    Row("CancelScope", "int shield", _nothing,
        lambda _: CancelScope(shield=1), TypeError, "shield must be a bool"),  # type: ignore[arg-type]
    Row("CancelScope", "cancel_after NaN", CancelScope,
        lambda s: s.cancel_after(NAN), ValueError, "must not be NaN", _scope_works),
    Row("move_on_after", "None", _nothing,
        lambda _: move_on_after(None), TypeError, "seconds must be a number"),  # type: ignore[arg-type]
    Row("move_on_after", "negative", _nothing,
        lambda _: move_on_after(-1), ValueError, "seconds must be non-negative"),
    Row("fail_after", "NaN", _nothing,
        lambda _: fail_after(NAN), ValueError, "seconds must not be NaN"),
    Row("to_thread", "stdlib executor", _nothing,
        lambda _: asyncio.run(to_thread(int, executor=ThreadPoolExecutor(1))),  # type: ignore[arg-type]
        TypeError, "executor must be"),
    Row("to_thread", "int token", _nothing,
        lambda _: asyncio.run(to_thread(int, token=5)), TypeError, "token must be"),  # type: ignore[arg-type]
    Row("cancel_on", "None token", _nothing,
        lambda _: cancel_on(None), TypeError, "token must be a CancellationToken"),  # type: ignore[arg-type]
]  # fmt: skip


def _param(row: Row) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=row.xfail)] if row.xfail else []
    return pytest.param(row, id=f"{row.name}: {row.case}", marks=marks)


@pytest.mark.parametrize("row", [_param(row) for row in ROWS])
def test_bad_input_gives_a_clear_error_and_leaves_the_object_usable(row: Row) -> None:
    target = row.make()
    with pytest.raises(row.error, match=row.match):
        row.call(target)
    if row.after is not None:
        row.after(target)


def test_every_public_name_has_a_row() -> None:
    covered = {row.name for row in ROWS}
    assert set(cancellable.__all__) <= covered, set(cancellable.__all__) - covered


class TestReentrantCalls:
    def test_cancel_and_wait_from_the_tokens_own_callback(self) -> None:
        source = CancellationTokenSource()
        seen: list[bool] = []
        source.token.register(lambda: (source.cancel("again"), seen.append(source.token.wait())))
        source.cancel("first")
        assert seen == [True]
        assert source.token.reason == "first"

    def test_close_and_cancel_after_from_a_callback(self) -> None:
        source = CancellationTokenSource()
        errors: list[BaseException] = []

        def late() -> None:
            source.close()
            try:
                source.cancel_after(1)
            except ValueError as error:
                errors.append(error)

        source.token.register(late)
        source.cancel()
        assert [str(e) for e in errors] == [
            "cancel_after() called on a closed CancellationTokenSource"
        ]

    def test_primitive_with_the_cancelling_token_inside_its_callback(self) -> None:
        source = CancellationTokenSource()
        raised: list[type[BaseException]] = []

        def wait_inside() -> None:
            try:
                Event().wait(token=source.token)
            except OperationCancelledError as error:
                raised.append(type(error))

        source.token.register(wait_inside)
        source.cancel()
        assert raised == [OperationCancelledError]

    def test_pool_calls_from_inside_a_task(self) -> None:
        with CancellableThreadPoolExecutor(2) as pool:

            def task() -> str:
                me = current_token()
                pool.cancel_all("from a task")
                assert me.is_cancellation_requested
                # The ambient token (this task's) is cancelled: so is a task
                # submitted with it; one submitted without it runs.
                assert pool.submit(pow, 2, 2).cancelled()
                inner = pool.submit(pow, 2, 2, token=CancellationToken.NONE)
                assert inner.result(timeout=WAIT) == 4
                pool.shutdown(wait=False)
                return "done"

            assert pool.submit(task).result(timeout=WAIT) == "done"

    def test_future_cancel_and_request_cancel_from_its_own_done_callback(self) -> None:
        with CancellableThreadPoolExecutor(1) as pool:
            future = pool.submit(pow, 3, 3)
            answers: list[object] = []
            future.add_done_callback(
                lambda f: answers.extend([f.cancel(), f.request_cancel(), f.result()])  # type: ignore[attr-defined]
            )
            assert future.result(timeout=WAIT) == 27
        assert answers == [False, None, 27]

    def test_shutdown_wait_from_inside_a_task_raises_as_the_stdlib(self) -> None:
        pool = CancellableThreadPoolExecutor(1)

        def task() -> str:
            try:
                pool.shutdown(wait=True)
            except RuntimeError as error:
                return str(error)
            return "returned"

        future = pool.submit(task)
        assert future.result(timeout=WAIT) == "cannot join current thread"
        pool.shutdown()
        assert not any(thread.is_alive() for thread in pool._threads)
