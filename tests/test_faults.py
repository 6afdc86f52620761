"""Faults injected into callbacks, initializers and tasks.

Whatever user code does inside a token callback, a done-callback, an
initializer or a task, nothing deadlocks, every other callback still runs,
every future still ends, and each error surfaces where the docs say:
`cancel()`'s ExceptionGroup, the ``cancellable`` logger (cancels the library
makes itself), the ``concurrent.futures`` logger (done-callbacks, as in the
stdlib), the future's exception, or `BrokenThreadPool`.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, wait
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

import pytest

from cancellable import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancellationTokenSource,
    OperationCancelledError,
    current_token,
)
from conftest import occupy_workers

WAIT = 10  # seconds; only a deadlock would need it


class Boom(Exception):
    """A callback's ordinary failure."""


class Fatal(BaseException):
    """A callback's or task's failure that is not an Exception."""


def _errors_in(caplog: pytest.LogCaptureFixture, logger: str) -> list[BaseException]:
    return [
        record.exc_info[1]
        for record in caplog.records
        if record.name == logger and record.exc_info and record.exc_info[1] is not None
    ]


class TestTokenCallbacksThatRaise:
    def test_cancel_raises_every_error_and_still_ends_every_pending_task(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate = occupy_workers(pool, 2)[0]
        cts = CancellationTokenSource()
        fs = [pool.submit(int, token=cts.token) for _ in range(50)]
        cts.token.register(self._raise, Boom("first"))
        child = CancellationTokenSource(cts.token)
        child.token.register(self._raise, Fatal("in a child"))
        cts.token.register(self._raise, Boom("last"))
        # A BaseException that is not an Exception comes out as itself once
        # every callback ran; the ordinary errors are then logged.
        with pytest.raises(Fatal, match="in a child"):
            cts.cancel("stop")
        assert all(f.cancelled() for f in fs)
        gate.set()

    def test_library_cancels_log_callback_errors_and_finish_their_work(
        self, pool: CancellableThreadPoolExecutor, caplog: pytest.LogCaptureFixture
    ) -> None:
        gate = occupy_workers(pool, 2)[0]
        fs = [pool.submit(int) for _ in range(20)]
        fs[3].token.register(self._raise, Boom("task token callback"))
        pool.cancel_all("stop")  # does not raise: the library made this cancel
        assert all(f.cancelled() for f in fs)
        assert [str(e) for e in _errors_in(caplog, "cancellable")] == ["task token callback"]
        gate.set()
        assert pool.submit(pow, 2, 5).result(timeout=WAIT) == 32

    def test_request_cancel_logs_callback_errors(
        self, pool: CancellableThreadPoolExecutor, caplog: pytest.LogCaptureFixture
    ) -> None:
        gate = occupy_workers(pool, 2)[0]
        future = pool.submit(int)
        future.token.register(self._raise, Boom("request_cancel"))
        future.request_cancel()
        assert future.cancelled()
        assert [str(e) for e in _errors_in(caplog, "cancellable")] == ["request_cancel"]
        gate.set()

    def test_deadline_callback_error_is_logged_and_the_timer_keeps_working(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        first = CancellationTokenSource()
        first.token.register(self._raise, Boom("on the timer thread"))
        logged = threading.Event()
        handler = _SetOnRecord(logged)
        logging.getLogger("cancellable").addHandler(handler)
        try:
            first.cancel_after(0.001)  # the delay is the behaviour under test
            assert logged.wait(WAIT)
            second = CancellationTokenSource(timeout=0.001)
            assert second.token.wait(WAIT)
        finally:
            logging.getLogger("cancellable").removeHandler(handler)
        assert [str(e) for e in _errors_in(caplog, "cancellable")] == ["on the timer thread"]

    @staticmethod
    def _raise(error: BaseException) -> None:
        raise error


class _SetOnRecord(logging.Handler):
    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()


class TestTokenCallbacksThatCancel:
    def test_callbacks_cancelling_each_other_end_without_deadlock(self) -> None:
        a, b = CancellationTokenSource(), CancellationTokenSource()
        ran: list[str] = []
        a.token.register(lambda: (ran.append("a"), b.cancel("from a")))
        b.token.register(lambda: (ran.append("b"), a.cancel("from b")))
        a.cancel("first")
        assert ran == ["a", "b"]
        assert a.token.reason == "first"
        assert b.token.reason == "from a"

    def test_concurrent_cross_cancels_from_two_threads_do_not_deadlock(self) -> None:
        for _ in range(200):
            a, b = CancellationTokenSource(), CancellationTokenSource()
            counts = {"a": 0, "b": 0}
            both = threading.Barrier(2)

            def bump(
                name: str, other: CancellationTokenSource, counts: dict[str, int] = counts
            ) -> None:
                counts[name] += 1
                other.cancel(name)

            a.token.register(bump, "a", b)
            b.token.register(bump, "b", a)

            def cancel(source: CancellationTokenSource, both: threading.Barrier = both) -> None:
                both.wait()
                source.cancel()

            threads = [threading.Thread(target=cancel, args=(s,)) for s in (a, b)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT)
                assert not thread.is_alive(), "cross-cancelling callbacks deadlocked"
            assert counts == {"a": 1, "b": 1}

    def test_child_callback_cancelling_its_parent(self) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token)
        child.token.register(parent.cancel, "from the child")
        child.cancel("child first")
        assert parent.token.reason == "from the child"
        assert child.token.reason == "child first"

    def test_callback_cancelling_its_own_source_returns_at_once(self) -> None:
        cts = CancellationTokenSource()
        ran: list[int] = []
        cts.token.register(lambda: (ran.append(1), cts.cancel("again")))
        cts.cancel("once")
        assert ran == [1]
        assert cts.token.reason == "once"

    def test_done_callback_cancelling_the_pool_during_a_drain(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate = occupy_workers(pool, 2)[0]
        cts = CancellationTokenSource()
        first = pool.submit(int, token=cts.token)
        others = [pool.submit(int) for _ in range(10)]
        first.add_done_callback(lambda _: pool.cancel_all("from a done-callback"))
        cts.cancel()
        assert first.cancelled()
        assert all(f.cancelled() for f in others)
        gate.set()
        assert pool.submit(pow, 3, 2).result(timeout=WAIT) == 9


class TestTokenCallbacksThatRegister:
    def test_registering_on_the_cancelling_token_runs_at_once(self) -> None:
        cts = CancellationTokenSource()
        ran: list[str] = []
        cts.token.register(lambda: cts.token.register(ran.append, "late"))
        cts.cancel()
        assert ran == ["late"]

    def test_registering_on_a_live_token_from_a_callback(self) -> None:
        cts, other = CancellationTokenSource(), CancellationTokenSource()
        ran: list[str] = []
        cts.token.register(lambda: other.token.register(ran.append, "other"))
        cts.cancel()
        assert ran == []
        other.cancel()
        assert ran == ["other"]

    def test_done_callback_submitting_during_cancel_all_lands_in_the_new_generation(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate = occupy_workers(pool, 2)[0]
        resubmitted: list[CancellableFuture[int]] = []
        first = pool.submit(int)
        first.add_done_callback(lambda _: resubmitted.append(pool.submit(pow, 2, 3)))
        pool.cancel_all()
        assert first.cancelled()
        gate.set()
        assert resubmitted[0].result(timeout=WAIT) == 8

    def test_linking_a_child_from_a_parent_callback(self) -> None:
        parent = CancellationTokenSource()
        made: list[CancellationTokenSource] = []
        parent.token.register(lambda: made.append(CancellationTokenSource(parent.token)))
        parent.cancel("p")
        assert made[0].token.is_cancellation_requested
        assert made[0].token.reason == "p"


class TestTokenCallbacksThatBlock:
    def test_second_cancel_and_unregister_while_a_callback_blocks(self) -> None:
        cts = CancellationTokenSource()
        inside, release = threading.Event(), threading.Event()
        reg = cts.token.register(lambda: (inside.set(), release.wait(WAIT)))
        quick = cts.token.register(lambda: None)
        canceller = threading.Thread(target=cts.cancel)
        canceller.start()
        assert inside.wait(WAIT)
        cts.cancel("second")  # returns at once while the first still runs callbacks
        assert not quick.unregister()  # it already ran (latest first)
        unregistered = threading.Event()

        def unregister() -> None:
            reg.unregister()  # waits for the blocked callback
            unregistered.set()

        waiter = threading.Thread(target=unregister)
        waiter.start()
        assert not unregistered.is_set()
        release.set()
        canceller.join(WAIT)
        waiter.join(WAIT)
        assert unregistered.is_set()

    def test_blocking_token_callback_delays_but_does_not_stop_the_pool(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        cts = CancellationTokenSource()
        inside, release = threading.Event(), threading.Event()
        cts.token.register(lambda: (inside.set(), release.wait(WAIT)))
        canceller = threading.Thread(target=cts.cancel)
        canceller.start()
        assert inside.wait(WAIT)
        # Another thread's cancel holds no lock the pool needs.
        assert pool.submit(pow, 2, 2).result(timeout=WAIT) == 4
        assert pool.submit(int, token=cts.token).cancelled()
        release.set()
        canceller.join(WAIT)


class TestInitializerFailure:
    def test_failing_initializer_breaks_the_pool_and_ends_everything(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        entered = threading.Event()
        go = threading.Event()

        def init() -> None:
            entered.set()
            go.wait(WAIT)
            raise Boom("initializer")

        cts = CancellationTokenSource()
        ex = CancellableThreadPoolExecutor(1, initializer=init, max_pending=3)
        try:
            fs = [ex.submit(int, token=cts.token if i % 2 else None) for i in range(3)]
            assert entered.wait(WAIT)
            blocked_result: list[BaseException] = []

            def submit_over_the_bound() -> None:
                try:
                    ex.submit(int)
                except BaseException as error:
                    blocked_result.append(error)

            blocked = threading.Thread(target=submit_over_the_bound)
            blocked.start()
            go.set()
            blocked.join(WAIT)
            assert not blocked.is_alive(), "a submitter blocked on max_pending was never woken"
            assert len(blocked_result) == 1
            assert type(blocked_result[0]) is BrokenThreadPool
            _, not_done = wait(fs, timeout=WAIT)
            assert not not_done
            assert all(isinstance(f.exception(), BrokenThreadPool) for f in fs)
            with pytest.raises(BrokenThreadPool):
                ex.submit(int)
            cts.cancel()  # nothing left to cancel; must not raise or hang
        finally:
            ex.shutdown(wait=True)
        assert any(
            r.name == "concurrent.futures" and "initializer" in r.getMessage()
            for r in caplog.records
        )


class TestTasksRaisingBaseExceptions:
    @pytest.mark.parametrize(
        "error", [KeyboardInterrupt(), SystemExit(3), GeneratorExit(), Fatal("task")]
    )
    def test_base_exception_ends_the_future_and_keeps_the_worker(
        self, error: BaseException
    ) -> None:
        def task() -> None:
            raise error

        with CancellableThreadPoolExecutor(1) as ex:
            failed = ex.submit(task)
            assert failed.exception(timeout=WAIT) is error
            assert ex.submit(pow, 2, 4).result(timeout=WAIT) == 16
            assert len(ex._threads) == 1

    def test_group_holding_a_cancel_is_an_ordinary_failure(self) -> None:
        def task() -> None:
            token = current_token()
            future_token[0].set()
            token.wait(WAIT)
            try:
                token.raise_if_cancellation_requested()
            except OperationCancelledError as error:
                raise BaseExceptionGroup("wrapped", [error, Fatal("x")]) from None

        future_token = [threading.Event()]
        with CancellableThreadPoolExecutor(1) as ex:
            future = ex.submit(task)
            assert future_token[0].wait(WAIT)
            future.request_cancel()
            error = future.exception(timeout=WAIT)
        # Only an OperationCancelledError itself escaping ends a task cancelled.
        assert isinstance(error, BaseExceptionGroup)
        assert not future.cancelled()


class TestDoneCallbackFailures:
    def test_memory_error_in_a_done_callback_is_logged_and_the_rest_run(
        self, pool: CancellableThreadPoolExecutor, caplog: pytest.LogCaptureFixture
    ) -> None:
        ran: list[str] = []

        def oom(_: Future[Any]) -> None:
            raise MemoryError("simulated")

        gate = threading.Event()
        future = pool.submit(gate.wait, WAIT)
        future.add_done_callback(oom)
        future.add_done_callback(lambda _: ran.append("after"))
        gate.set()
        assert future.result(timeout=WAIT) is True
        pool.shutdown(wait=True)  # the worker ran both callbacks before exiting
        assert ran == ["after"]
        assert [type(e) for e in _errors_in(caplog, "concurrent.futures")] == [MemoryError]

    def test_memory_error_in_done_callbacks_during_a_token_drain(
        self, pool: CancellableThreadPoolExecutor, caplog: pytest.LogCaptureFixture
    ) -> None:
        gate = occupy_workers(pool, 2)[0]
        cts = CancellationTokenSource()
        fs = [pool.submit(int, token=cts.token) for _ in range(10)]
        calls: list[CancellableFuture[int]] = []

        def oom(future: Future[Any]) -> None:
            calls.append(future)  # type: ignore[arg-type]
            raise MemoryError("simulated")

        for f in fs:
            f.add_done_callback(oom)
        cts.cancel()  # done-callback errors are logged, never raised from cancel()
        assert all(f.cancelled() for f in fs)
        assert sorted(map(id, calls)) == sorted(map(id, fs))
        assert len(_errors_in(caplog, "concurrent.futures")) == 10
        gate.set()

    def test_base_exception_in_a_done_callback_during_a_drain_loses_no_future(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate = occupy_workers(pool, 2)[0]
        cts = CancellationTokenSource()
        fs = [pool.submit(int, token=cts.token) for _ in range(5)]

        def interrupted(_: Future[Any]) -> None:
            raise KeyboardInterrupt  # a Ctrl-C arriving while the callback runs

        for f in fs:
            f.add_done_callback(interrupted)
        try:
            # The first one propagates as itself, once every task has ended.
            with pytest.raises(KeyboardInterrupt):
                cts.cancel()
        finally:
            gate.set()
        assert all(f.done() for f in fs), [f for f in fs if not f.done()]


class TestInterruptedSubmit:
    def test_ctrl_c_inside_thread_start_leaves_shutdown_working(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        launch = threading.Thread.start
        launched: list[threading.Thread] = []

        me = threading.get_ident()

        def start_then_interrupt(thread: threading.Thread) -> None:
            launch(thread)  # the thread runs...
            if threading.get_ident() != me:
                return  # another test's leftover thread: leave it alone
            launched.append(thread)
            raise KeyboardInterrupt  # ...and Ctrl-C lands before start() returns

        ex = CancellableThreadPoolExecutor(2)
        gate = threading.Event()
        monkeypatch.setattr(threading.Thread, "start", start_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            ex.submit(gate.wait, WAIT)
        monkeypatch.undo()
        # Start the closing thread while the worker lives, so that it cannot
        # reuse the worker's thread id (the pool treats its workers' ids alike).
        go = threading.Event()
        closer = threading.Thread(target=lambda: (go.wait(), ex.shutdown()), daemon=True)
        closer.start()
        ex.shutdown(wait=False)
        gate.set()
        launched[0].join(WAIT)  # the worker ran the task and exited
        assert not launched[0].is_alive()
        go.set()
        closer.join(2)  # nothing is left to wait for: a correct shutdown returns at once
        try:
            assert not closer.is_alive(), "shutdown(wait=True) hung"
        finally:
            # Let the interpreter's exit hook finish if it did hang.
            core = ex._core
            with core.exited:
                core.alive.clear()
                core.exited.notify_all()
