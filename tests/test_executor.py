"""CancellableThreadPoolExecutor and CancellableFuture: tokens, cancellation, stdlib parity."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import (
    CancelledError,
    Executor,
    Future,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.thread import BrokenThreadPool

import pytest

from cancellable import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancellationToken,
    CancellationTokenSource,
    OperationCancelledError,
    current_token,
    use_token,
)
from cancellable._token import _token_stats
from conftest import occupy_workers


class TestDropIn:
    def test_is_a_thread_pool_executor(self, pool: CancellableThreadPoolExecutor) -> None:
        assert isinstance(pool, ThreadPoolExecutor)
        assert isinstance(pool, Executor)
        fut = pool.submit(pow, 2, 10)
        assert isinstance(fut, Future)
        assert isinstance(fut, CancellableFuture)
        assert fut.result(timeout=5) == 1024

    def test_future_is_generic(self) -> None:
        alias = CancellableFuture[int]
        assert alias.__origin__ is CancellableFuture  # type: ignore[attr-defined]

    def test_standalone_future_behaves_as_stdlib(self) -> None:
        fut: CancellableFuture[int] = CancellableFuture()
        seen: list[Future[int]] = []
        fut.add_done_callback(seen.append)
        assert fut.set_running_or_notify_cancel()
        fut.set_result(3)
        assert fut.result() == 3
        assert seen == [fut]
        other: CancellableFuture[int] = CancellableFuture()
        assert other.cancel()
        assert not other.set_running_or_notify_cancel()
        with pytest.raises(CancelledError):
            other.result()

    def test_validation_matches_stdlib(self) -> None:
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            CancellableThreadPoolExecutor(max_workers=0)
        with pytest.raises(TypeError, match="initializer must be a callable"):
            CancellableThreadPoolExecutor(initializer=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="token must be a CancellationToken"):
            CancellableThreadPoolExecutor(token=3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_pending must be greater than 0"):
            CancellableThreadPoolExecutor(max_pending=0)
        with pytest.raises(TypeError, match="max_pending must be an integer"):
            CancellableThreadPoolExecutor(max_pending=1.5)  # type: ignore[arg-type]

    def test_submit_type_errors(self, pool: CancellableThreadPoolExecutor) -> None:
        with pytest.raises(TypeError, match="fn must be callable"):
            pool.submit(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="token must be a CancellationToken"):
            pool.submit(print, token="x")  # type: ignore[arg-type]

    def test_submit_after_shutdown_raises_stdlib_text(self) -> None:
        ex = CancellableThreadPoolExecutor(1)
        ex.shutdown()
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            ex.submit(print)

    def test_broken_pool_after_initializer_failure(self) -> None:
        def fail() -> None:
            raise ValueError("no")

        ex = CancellableThreadPoolExecutor(1, initializer=fail)
        try:
            with pytest.raises(BrokenThreadPool):
                ex.submit(print).result(timeout=5)
            assert ex._broken
            with pytest.raises(BrokenThreadPool):
                ex.submit(print)
        finally:
            ex.shutdown()

    def test_thread_names_and_idle_reuse(self) -> None:
        with CancellableThreadPoolExecutor(4, thread_name_prefix="pfx") as ex:
            for _ in range(5):
                name = ex.submit(lambda: threading.current_thread().name).result(timeout=5)
                assert name == "pfx_0"
            assert len(ex._threads) == 1

    def test_context_variables_are_visible_and_copied_per_task(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
        var.set("submitter")

        def read_then_set() -> str:
            seen = var.get()
            var.set("task")
            return seen

        assert pool.submit(read_then_set).result(timeout=5) == "submitter"
        assert pool.submit(read_then_set).result(timeout=5) == "submitter"
        assert var.get() == "submitter"

    def test_shutdown_waiting_from_a_worker_raises_like_stdlib(self) -> None:
        ex = CancellableThreadPoolExecutor(1)
        fut = ex.submit(ex.shutdown, wait=True)
        with pytest.raises(RuntimeError, match="cannot join current thread"):
            fut.result(timeout=5)
        ex.shutdown()

    def test_repr_shows_state(self, pool: CancellableThreadPoolExecutor) -> None:
        fut = pool.submit(int, "7")
        fut.result(timeout=5)
        assert "state=finished returned int" in repr(fut)

    def test_asyncio_accepts_it_as_default_executor(self) -> None:
        ex = CancellableThreadPoolExecutor(2, thread_name_prefix="aio")

        async def main() -> tuple[str, str]:
            loop = asyncio.get_running_loop()
            loop.set_default_executor(ex)
            a = await loop.run_in_executor(None, lambda: threading.current_thread().name)
            b = await asyncio.to_thread(lambda: threading.current_thread().name)
            return a, b

        try:
            a, b = asyncio.run(main())
        finally:
            ex.shutdown()
        assert a.startswith("aio_")
        assert b.startswith("aio_")


class TestPendingCancellation:
    def test_token_cancel_ends_pending_tasks_at_once(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate, _ = occupy_workers(pool, 2)
        cts = CancellationTokenSource()
        ran: list[int] = []
        done: list[Future[None]] = []
        futures = [pool.submit(ran.append, i, token=cts.token) for i in range(100)]
        for fut in futures:
            fut.add_done_callback(done.append)
        cts.cancel("stop")
        assert all(f.cancelled() for f in futures)
        assert len(done) == 100
        with pytest.raises(OperationCancelledError) as raised:
            futures[0].result()
        assert raised.value.reason == "stop"
        assert futures[5].token.reason == "stop"  # made after the task ended
        gate.set()
        pool.shutdown(wait=True)
        assert ran == []

    def test_one_registration_per_submit_token(self, pool: CancellableThreadPoolExecutor) -> None:
        gate, _ = occupy_workers(pool, 2)
        try:
            cts = CancellationTokenSource()
            for _ in range(1000):
                pool.submit(print, token=cts.token)
            stats = _token_stats(cts.token)
            # Two hooks of the pool's for all of them (the first task's own,
            # one group for the rest), no user-visible registration.
            assert (stats.watchers, stats.registrations) == (2, 0)
            cts.cancel()
        finally:
            gate.set()

    def test_groups_of_finished_tokens_are_forgotten(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        long_lived = CancellationTokenSource()
        for _ in range(10):
            gate, _ = occupy_workers(pool, 2)
            tokens = [CancellationTokenSource().token for _ in range(30)] + [long_lived.token]
            # Two pending tasks per token: the first watches it alone, the
            # second makes a group.
            futures = [pool.submit(pow, 2, 2, token=token) for token in tokens for _ in (0, 1)]
            gate.set()
            assert not wait(futures, timeout=10).not_done
        groups = pool._core.gen.groups
        assert len(groups) < 100  # 310 were made; emptied ones are collected in batches
        assert _token_stats(long_lived.token).watchers <= 1

    def test_groups_forgotten_by_an_interrupted_submit_are_unwatched(self) -> None:
        pool = CancellableThreadPoolExecutor(1)
        gate, _ = occupy_workers(pool, 1)
        sources = [CancellationTokenSource() for _ in range(40)]
        futures = [pool.submit(int, token=s.token) for s in sources for _ in (0, 1)]
        gate.set()
        assert not wait(futures, timeout=10).not_done
        # Emptied, each group still watches its token until collected.
        assert [_token_stats(s.token).watchers for s in sources] == [1] * 40
        core = pool._core
        queue_put = core.put

        def interrupted(item: object) -> None:
            raise KeyboardInterrupt

        core.put = interrupted
        try:
            with pytest.raises(KeyboardInterrupt):
                # Collects the emptied groups, then is interrupted.
                pool.submit(int, token=CancellationTokenSource().token)
        finally:
            core.put = queue_put
        pool.shutdown()
        assert [_token_stats(s.token).watchers for s in sources] == [0] * 40

    def test_cancel_all_does_not_pile_up_groups_on_a_long_lived_token(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate, _ = occupy_workers(pool, 2)
        try:
            long_lived = CancellationTokenSource()
            for _ in range(200):
                pool.submit(int, token=long_lived.token)  # pending: its group watches the token
                pool.cancel_all()  # that generation's group is dead and lets go of the token
            assert _token_stats(long_lived.token).watchers <= 1
        finally:
            gate.set()

    def test_a_child_of_an_app_token_per_task_leaves_the_app_token_clean(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        app = CancellationTokenSource()
        for _ in range(500):
            with CancellationTokenSource(app.token) as request:
                pool.submit(pow, 2, 2, token=request.token).result(timeout=5)
        stats = _token_stats(app.token)
        assert (stats.registrations, stats.children, stats.watchers) == (0, 0, 0)
        app.cancel()  # nothing left to reach; the pool works on
        assert pool.submit(pow, 2, 3).result(timeout=5) == 8

    def test_already_cancelled_token_gives_cancelled_future(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        cts = CancellationTokenSource()
        cts.cancel("early")
        ran: list[int] = []
        fut = pool.submit(ran.append, 1, token=cts.token)
        assert fut.cancelled()
        assert fut.done()
        pool.shutdown(wait=True)
        assert ran == []

    def test_stdlib_cancel_keeps_its_meaning(self, pool: CancellableThreadPoolExecutor) -> None:
        gate, running = occupy_workers(pool, 2)
        pending = pool.submit(print)
        assert pending.cancel()
        assert pending.cancel()
        assert pending.cancelled()
        assert not running[0].cancel()
        with pytest.raises(CancelledError) as raised:
            pending.result()
        assert type(raised.value) is CancelledError
        gate.set()
        assert running[0].result(timeout=5) is None
        assert not running[0].cancel()

    def test_request_cancel_on_pending_task(self, pool: CancellableThreadPoolExecutor) -> None:
        gate, _ = occupy_workers(pool, 2)
        ran: list[int] = []
        fut = pool.submit(ran.append, 1)
        fut.request_cancel("one")
        assert fut.cancelled()
        assert fut.token.is_cancellation_requested
        assert fut.token.reason == "one"
        gate.set()
        pool.shutdown(wait=True)
        assert ran == []

    def test_cancel_all_drops_backlog_and_keeps_workers(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate, running = occupy_workers(pool, 2)
        backlog = [pool.submit(print) for _ in range(50)]
        tokens = [f.token for f in running]
        pool.cancel_all("reset")
        assert all(f.cancelled() for f in backlog)
        assert all(t.is_cancellation_requested for t in tokens)
        gate.set()
        assert pool.submit(pow, 3, 2).result(timeout=5) == 9

    def test_executor_token_cancels_everything_and_later_submits(self) -> None:
        cts = CancellationTokenSource()
        ex = CancellableThreadPoolExecutor(1, token=cts.token)
        gate, running = occupy_workers(ex, 1)
        pending = ex.submit(print)
        cts.cancel("closing")
        assert pending.cancelled()
        assert running[0].token.is_cancellation_requested
        assert ex.submit(print).cancelled()
        gate.set()
        ex.shutdown()

    def test_shutdown_cancel_futures_signals_running_tasks(self) -> None:
        ex = CancellableThreadPoolExecutor(1)
        started = threading.Event()

        def cooperative() -> None:
            started.set()
            current_token().wait()
            current_token().raise_if_cancellation_requested()

        running = ex.submit(cooperative)
        pending = ex.submit(print)
        assert started.wait(timeout=5)
        ex.shutdown(wait=True, cancel_futures=True)
        assert pending.cancelled()
        assert running.cancelled()


class TestTokenUsedByOneTask:
    """A submit token used by one task (a child token per request): the task
    watches it itself, without a group."""

    def test_its_cancel_and_its_parents_end_pending_tasks_at_once(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate, _ = occupy_workers(pool, 2)
        try:
            app = CancellationTokenSource()
            requests = [CancellationTokenSource(app.token) for _ in range(3)]
            futures = [pool.submit(int, token=request.token) for request in requests]
            assert [_token_stats(r.token).watchers for r in requests] == [1, 1, 1]
            requests[0].cancel("one")
            assert futures[0].cancelled()
            assert not futures[1].done()
            app.cancel("all")
            assert all(future.cancelled() for future in futures)
            with pytest.raises(OperationCancelledError) as raised:
                futures[2].result(timeout=0)
            assert raised.value.reason == "all"
            assert [_token_stats(r.token).watchers for r in requests] == [0, 0, 0]
        finally:
            gate.set()

    def test_the_task_lets_go_of_its_token_once_it_ends(self) -> None:
        with CancellableThreadPoolExecutor(1) as pool:
            request = CancellationTokenSource()
            token = weakref.ref(request.token)
            future = pool.submit(int, token=request.token)
            del request
            future.result(timeout=5)
            # The worker's next turn begins after its last one ended.
            pool.submit(int).result(timeout=5)
            assert token() is None
            assert future.done()

    def test_one_token_in_two_pools_reaches_both(self) -> None:
        first = CancellableThreadPoolExecutor(1)
        second = CancellableThreadPoolExecutor(1)
        gates = [occupy_workers(pool, 1)[0] for pool in (first, second)]
        try:
            shared = CancellationTokenSource()
            futures = [pool.submit(int, token=shared.token) for pool in (first, second)]
            # The first task watches the token alone, the second pool's
            # through a group.
            assert _token_stats(shared.token).watchers == 2
            shared.cancel()
            assert all(future.cancelled() for future in futures)
            assert _token_stats(shared.token).watchers == 0
        finally:
            for gate in gates:
                gate.set()
            first.shutdown()
            second.shutdown()

    def test_later_tasks_of_the_token_share_a_group(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate, _ = occupy_workers(pool, 2)
        try:
            job = CancellationTokenSource()
            futures = [pool.submit(int, token=job.token) for _ in range(50)]
            assert _token_stats(job.token).watchers == 2
            futures[0].cancel()  # the solo task: its watch goes
            assert _token_stats(job.token).watchers == 1
            job.cancel()
            assert all(future.cancelled() for future in futures)
        finally:
            gate.set()

    def test_its_own_token_made_while_pending_is_cancelled_with_it(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate, _ = occupy_workers(pool, 2)
        try:
            request = CancellationTokenSource()
            future = pool.submit(int, token=request.token)
            own = future.token
            request.cancel("stop")
            assert own.reason == "stop"
            assert future.cancelled()
        finally:
            gate.set()

    def test_slots_come_back_in_a_bounded_pool(self) -> None:
        with CancellableThreadPoolExecutor(1, max_pending=2) as pool:
            gate, _ = occupy_workers(pool, 1)
            try:
                for _ in range(20):
                    requests = [CancellationTokenSource() for _ in range(2)]
                    futures = [pool.submit(int, token=r.token) for r in requests]
                    for request in requests:
                        request.cancel()
                    assert all(future.cancelled() for future in futures)
                assert pool.statistics().pending == 0
            finally:
                gate.set()

    def test_callbacks_that_submit_per_request_tasks_while_the_app_is_cancelled(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate, _ = occupy_workers(pool, 2)
        try:
            app = CancellationTokenSource()
            late: list[CancellableFuture[int]] = []

            def submit_another(_: object = None) -> None:
                # Re-entrant: called back from inside the app's cancel.
                late.append(pool.submit(int, token=CancellationTokenSource(app.token).token))

            requests = [CancellationTokenSource(app.token) for _ in range(3)]
            futures = [pool.submit(int, token=r.token) for r in requests]
            futures[0].add_done_callback(submit_another)
            requests[1].token.register(submit_another)
            app.cancel()
            assert all(future.cancelled() for future in futures)
            assert len(late) == 2
            assert all(future.cancelled() for future in late)
            assert [_token_stats(r.token).watchers for r in requests] == [0, 0, 0]
        finally:
            gate.set()

    def test_request_tokens_with_edge_timeouts(self, pool: CancellableThreadPoolExecutor) -> None:
        gate, _ = occupy_workers(pool, 2)
        try:
            app = CancellationTokenSource()
            at_once = pool.submit(int, token=CancellationTokenSource(app.token, timeout=0).token)
            assert at_once.cancelled()
            far = CancellationTokenSource(app.token, timeout=1e10)
            waiting = pool.submit(int, token=far.token)
            with pytest.raises(ValueError, match="NaN"):
                CancellationTokenSource(app.token, timeout=float("nan"))
            assert not waiting.done()
            app.cancel("stop")
            assert waiting.cancelled()
            assert _token_stats(far.token).watchers == 0
        finally:
            gate.set()

    def test_many_thousand_requests_of_one_app_token(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        app = CancellationTokenSource()
        futures = [
            pool.submit(int, token=CancellationTokenSource(app.token).token) for _ in range(20_000)
        ]
        assert not wait(futures, timeout=60).not_done
        stats = _token_stats(app.token)
        assert (stats.registrations, stats.children, stats.watchers) == (0, 0, 0)
        assert len(app.token._family or ()) <= 16  # the children's locks, shared

    def test_tasks_from_a_thread_with_no_context_variables_start_clean(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

        def read_then_set() -> str:
            seen = var.get()
            var.set("task")
            return seen

        seen: list[str] = []

        def submitter() -> None:
            # A new thread's context holds no variable at all.
            seen.extend(pool.submit(read_then_set).result(timeout=5) for _ in range(2))

        thread = threading.Thread(target=submitter)
        thread.start()
        thread.join(timeout=10)
        assert seen == ["unset", "unset"]


class TestRunningTasks:
    def test_cooperative_task_ends_cancelled(self, pool: CancellableThreadPoolExecutor) -> None:
        started = threading.Event()

        def work() -> None:
            started.set()
            token = current_token()
            token.wait()
            token.raise_if_cancellation_requested()

        fut = pool.submit(work)
        assert started.wait(timeout=5)
        assert not fut.cancel()
        fut.request_cancel("enough")
        with pytest.raises(OperationCancelledError) as raised:
            fut.result(timeout=5)
        assert raised.value.reason == "enough"
        assert fut.cancelled()

    def test_error_with_any_token_counts_when_own_token_is_cancelled(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        cts = CancellationTokenSource()
        started = threading.Event()

        def work(outer: CancellationToken) -> None:
            started.set()
            outer.wait()
            outer.raise_if_cancellation_requested()

        fut = pool.submit(work, cts.token, token=cts.token)
        assert started.wait(timeout=5)
        cts.cancel()
        with pytest.raises(OperationCancelledError):
            fut.result(timeout=5)
        assert fut.cancelled()

    def test_unrelated_cancellation_is_an_ordinary_exception(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        other = CancellationTokenSource()
        other.cancel()
        fut = pool.submit(other.token.raise_if_cancellation_requested)
        assert isinstance(fut.exception(timeout=5), OperationCancelledError)
        assert not fut.cancelled()

    def test_task_token_is_created_only_when_touched(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        fut = pool.submit(pow, 2, 2)
        fut.result(timeout=5)
        assert fut._tok is None
        touched = pool.submit(current_token)
        token = touched.result(timeout=5)
        assert token is touched.token
        assert token.can_be_cancelled

    def test_task_token_is_child_of_submit_and_executor_tokens(self) -> None:
        outer = CancellationTokenSource()
        submit = CancellationTokenSource()
        with CancellableThreadPoolExecutor(1, token=outer.token) as ex:
            fut = ex.submit(current_token, token=submit.token)
            token = fut.result(timeout=5)
            assert not token.is_cancellation_requested
            submit.cancel("submit")
            assert token.reason == "submit"
        fut2 = CancellableThreadPoolExecutor(1, token=outer.token)
        try:
            token2 = fut2.submit(current_token).result(timeout=5)
            outer.cancel("outer")
            assert token2.reason == "outer"
        finally:
            fut2.shutdown()

    def test_ambient_token_is_the_default_submit_token(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        cts = CancellationTokenSource()
        with use_token(cts.token):
            fut = pool.submit(current_token)
        token = fut.result(timeout=5)
        cts.cancel("ambient")
        assert token.reason == "ambient"

    def test_initializer_sees_the_executor_token(self) -> None:
        cts = CancellationTokenSource()
        seen: list[CancellationToken] = []
        with CancellableThreadPoolExecutor(
            1, initializer=lambda: seen.append(current_token()), token=cts.token
        ) as ex:
            ex.submit(print).result(timeout=5)
        assert seen == [cts.token]

    def test_with_token_submit(self, pool: CancellableThreadPoolExecutor) -> None:
        cts = CancellationTokenSource()
        bound = pool.with_token(cts.token)
        assert bound.token is cts.token
        started = threading.Event()

        def task() -> CancellationToken:
            started.set()
            return current_token()

        fut = bound.submit(task)
        assert started.wait(timeout=5)  # running: the cancel reaches its token
        cts.cancel()
        assert fut.result(timeout=5).is_cancellation_requested
        with pytest.raises(TypeError):
            pool.with_token(None)  # type: ignore[arg-type]

    def test_callable_wanting_token_keyword_uses_partial(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        def wants(token: str) -> str:
            return token

        assert pool.submit(functools.partial(wants, token="mine")).result(timeout=5) == "mine"


class TestWithBlock:
    def test_exception_in_with_block_cancels_everything(self) -> None:
        started = threading.Event()
        stopped = threading.Event()

        def cooperative() -> None:
            started.set()
            current_token().wait()
            stopped.set()

        backlog: list[Future[None]] = []
        with pytest.raises(KeyboardInterrupt), CancellableThreadPoolExecutor(1) as ex:  # noqa: PT012
            ex.submit(cooperative)
            backlog.extend(ex.submit(print) for _ in range(10))
            assert started.wait(timeout=5)
            raise KeyboardInterrupt
        assert stopped.is_set()
        assert all(f.cancelled() for f in backlog)

    def test_normal_exit_runs_the_backlog(self) -> None:
        ran: list[int] = []
        with CancellableThreadPoolExecutor(1) as ex:
            for i in range(20):
                ex.submit(ran.append, i)
        assert ran == list(range(20))


def _wait_until_blocked(cond: threading.Condition) -> None:
    # No event marks a thread entering Condition.wait; poll its waiter list.
    for _ in range(5000):
        if cond._waiters:  # type: ignore[attr-defined]
            return
        time.sleep(0.001)
    raise AssertionError("the submitter never blocked")


class TestMaxPending:
    def test_submit_blocks_then_proceeds(self) -> None:
        ex = CancellableThreadPoolExecutor(1, max_pending=2)
        gate, _ = occupy_workers(ex, 1)
        ex.submit(print)
        ex.submit(print)
        results: list[Future[None]] = []
        t = threading.Thread(target=lambda: results.append(ex.submit(print)))
        t.start()
        _wait_until_blocked(ex._core.space)
        assert not results
        gate.set()
        t.join(timeout=5)
        assert results[0].result(timeout=5) is None
        ex.shutdown()

    def test_blocked_submit_raises_when_its_token_is_cancelled(self) -> None:
        ex = CancellableThreadPoolExecutor(1, max_pending=1)
        gate, _ = occupy_workers(ex, 1)
        ex.submit(print)
        cts = CancellationTokenSource()
        errors: list[BaseException] = []

        def submitter() -> None:
            try:
                ex.submit(print, token=cts.token)
            except OperationCancelledError as error:
                errors.append(error)

        t = threading.Thread(target=submitter)
        t.start()
        _wait_until_blocked(ex._core.space)
        cts.cancel("give up")
        t.join(timeout=5)
        assert len(errors) == 1
        gate.set()
        ex.shutdown()

    def test_event_loop_threads_are_admitted_over_the_bound(self) -> None:
        ex = CancellableThreadPoolExecutor(1, max_pending=1)
        gate, _ = occupy_workers(ex, 1)
        ex.submit(print)

        async def from_the_loop() -> CancellableFuture[int]:
            return ex.submit(pow, 2, 5)  # would block the loop if not admitted

        fut = asyncio.run(from_the_loop())
        gate.set()
        assert fut.result(timeout=5) == 32
        ex.shutdown()

    def test_workers_are_admitted_over_the_bound(self) -> None:
        ex = CancellableThreadPoolExecutor(1, max_pending=1)

        def fan_out() -> int:
            inner = [ex.submit(pow, 2, i) for i in range(5)]
            return len(inner)

        assert ex.submit(fan_out).result(timeout=5) == 5
        ex.shutdown()


class TestMap:
    def test_map_is_eager_without_buffersize(self, pool: CancellableThreadPoolExecutor) -> None:
        consumed: list[int] = []

        def items() -> Iterator[int]:
            for i in range(10):
                consumed.append(i)
                yield i

        it = pool.map(abs, items())
        assert len(consumed) == 10
        assert list(it) == list(range(10))

    def test_map_with_buffersize_is_lazy(self, pool: CancellableThreadPoolExecutor) -> None:
        consumed: list[int] = []

        def items() -> Iterator[int]:
            for i in range(100):
                consumed.append(i)
                yield i

        it = pool.map(abs, items(), buffersize=3)
        assert len(consumed) == 3
        assert next(it) == 0
        assert len(consumed) == 4
        assert list(it) == list(range(1, 100))

    def test_buffersize_validation(self, pool: CancellableThreadPoolExecutor) -> None:
        with pytest.raises(TypeError, match="buffersize must be an integer or None"):
            pool.map(abs, [1], buffersize=1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="buffersize must be None or > 0"):
            pool.map(abs, [1], buffersize=0)

    def test_closing_the_iterator_cancels_the_rest(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate = threading.Event()
        started = threading.Event()
        ran: list[int] = []

        def item(i: int) -> int:
            if i == 0:
                return 0
            started.set()
            current_token().wait()
            ran.append(i)
            gate.wait()
            return i

        it = pool.map(item, range(50))
        assert next(it) == 0
        assert started.wait(timeout=5)
        it.close()  # type: ignore[attr-defined]
        gate.set()
        pool.shutdown(wait=True)
        assert len(ran) <= 2

    def test_cancelled_token_raises_at_first_undeliverable_result(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        cts = CancellationTokenSource()
        gate = threading.Event()

        def item(i: int) -> int:
            if i > 0:
                gate.wait()  # uncooperative
            return i

        it = pool.map(item, range(10), token=cts.token)
        assert next(it) == 0
        cts.cancel("enough")
        with pytest.raises(OperationCancelledError):
            next(it)
        gate.set()

    def test_map_timeout(self, pool: CancellableThreadPoolExecutor) -> None:
        gate = threading.Event()
        it = pool.map(gate.wait, [None, None, None], timeout=0)
        with pytest.raises(TimeoutError):
            next(it)
        gate.set()
