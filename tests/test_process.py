"""CancellableProcessPoolExecutor: tokens that reach tasks in worker processes."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.managers import SyncManager
from typing import Any

import pytest
from tests import _process_tasks as tasks

from cancellable import (
    CancellableProcessFuture,
    CancellableProcessPoolExecutor,
    CancellationToken,
    CancellationTokenSource,
    OperationCancelledError,
)
from cancellable import _process as process_module

# On 3.12+ os.fork() warns when the parent has threads (the shared timer, the
# pool's dispatcher); the fork tests accept that, as users of fork must.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

METHODS = ["spawn", "forkserver", "fork"]
WAIT = 20  # seconds any gate may take on a loaded 2-core machine


@pytest.fixture(scope="module")
def manager() -> Iterator[SyncManager]:
    """Cross-process Events and lists for gating tasks (no polling)."""
    with multiprocessing.get_context("spawn").Manager() as m:
        yield m


def make_pool(method: str = "forkserver", **kwargs: Any) -> CancellableProcessPoolExecutor:
    return CancellableProcessPoolExecutor(
        kwargs.pop("max_workers", 2), mp_context=multiprocessing.get_context(method), **kwargs
    )


@pytest.fixture(params=METHODS)
def method_pool(request: pytest.FixtureRequest) -> Iterator[CancellableProcessPoolExecutor]:
    ex = make_pool(request.param)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def pool() -> Iterator[CancellableProcessPoolExecutor]:
    ex = make_pool()
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def occupy(
    ex: CancellableProcessPoolExecutor, manager: SyncManager, n: int = 2
) -> tuple[Any, list[cf.Future[Any]]]:
    """Block every worker on a gate; return the gate and the blocking futures."""
    gate = manager.Event()
    fs = []
    for _ in range(n):
        started = manager.Event()
        fs.append(ex.submit(tasks.gated, started, gate))
        assert started.wait(WAIT)
    return gate, fs


class TestBasics:
    def test_submit_and_map_return_results(
        self, method_pool: CancellableProcessPoolExecutor
    ) -> None:
        assert method_pool.submit(tasks.add, 1, 2).result(WAIT) == 3
        assert list(method_pool.map(tasks.add, range(5), range(5))) == [0, 2, 4, 6, 8]
        assert list(method_pool.map(tasks.identity, range(7), chunksize=3)) == list(range(7))

    def test_is_a_process_pool_executor_with_its_future(
        self, pool: CancellableProcessPoolExecutor
    ) -> None:
        assert isinstance(pool, cf.ProcessPoolExecutor)
        f = pool.submit(tasks.add, 2, 2)
        assert isinstance(f, CancellableProcessFuture)
        assert isinstance(f, cf.Future)
        assert f.result(WAIT) == 4
        assert pool._max_workers == 2
        assert not pool._broken

    def test_current_token_in_worker_is_a_real_local_token(
        self, method_pool: CancellableProcessPoolExecutor
    ) -> None:
        assert method_pool.submit(tasks.token_state).result(WAIT) == (
            True,
            False,
            "CancellationToken",
        )

    def test_tasks_run_in_other_processes(self, pool: CancellableProcessPoolExecutor) -> None:
        assert pool.submit(tasks.pid).result(WAIT) != os.getpid()

    def test_exception_comes_back_with_remote_traceback(
        self, pool: CancellableProcessPoolExecutor
    ) -> None:
        f = pool.submit(tasks.fail, "boom")
        with pytest.raises(ValueError, match="boom") as info:
            f.result(WAIT)
        assert "tasks.py" in str(info.value.__cause__)

    def test_base_exception_in_task_is_the_future_exception(
        self, pool: CancellableProcessPoolExecutor
    ) -> None:
        f = pool.submit(tasks.raise_keyboard_interrupt)
        assert isinstance(f.exception(WAIT), KeyboardInterrupt)
        assert pool.submit(tasks.add, 1, 1).result(WAIT) == 2

    def test_unpicklable_argument_becomes_the_future_exception(
        self, pool: CancellableProcessPoolExecutor
    ) -> None:
        f = pool.submit(tasks.identity, threading.Lock())
        assert isinstance(f.exception(WAIT), TypeError)
        assert pool.submit(tasks.add, 1, 1).result(WAIT) == 2

    def test_unpicklable_result_becomes_the_future_exception(
        self, pool: CancellableProcessPoolExecutor
    ) -> None:
        f = pool.submit(eval, "__import__('threading').Lock()")
        assert isinstance(f.exception(WAIT), TypeError)

    def test_done_callbacks_run(self, pool: CancellableProcessPoolExecutor) -> None:
        done = threading.Event()
        f = pool.submit(tasks.add, 1, 1)
        f.add_done_callback(lambda _: done.set())
        assert done.wait(WAIT)

    def test_initializer_runs_in_each_worker(self) -> None:
        with make_pool(initializer=tasks.init_mark, initargs=("x",)) as ex:
            assert ex.submit(tasks.initialized).result(WAIT) == ["x"]

    def test_asyncio_run_in_executor(self, pool: CancellableProcessPoolExecutor) -> None:
        async def main() -> int:
            return await asyncio.get_running_loop().run_in_executor(pool, tasks.add, 3, 4)

        assert asyncio.run(main()) == 7

    def test_max_tasks_per_child_replaces_workers(self) -> None:
        with make_pool(max_workers=1, max_tasks_per_child=2) as ex:
            pids = [ex.submit(tasks.pid).result(WAIT) for _ in range(4)]
        assert pids[0] == pids[1] != pids[2] == pids[3]

    def test_shutdown_is_idempotent_and_submit_after_raises(self) -> None:
        ex = make_pool()
        assert ex.submit(tasks.add, 1, 1).result(WAIT) == 2
        ex.shutdown()
        ex.shutdown()
        assert ex._processes == {}
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            ex.submit(tasks.add, 1, 1)

    def test_shutdown_without_workers_returns(self) -> None:
        make_pool().shutdown()

    def test_shutdown_waits_for_the_backlog(self) -> None:
        ex = make_pool(max_workers=1)
        fs = [ex.submit(tasks.add, i, 0) for i in range(5)]
        ex.shutdown(wait=True)
        assert [f.result(0) for f in fs] == list(range(5))


class TestCancellation:
    def test_cancel_reaches_running_task_with_its_reason(
        self, method_pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        cts = CancellationTokenSource()
        started = manager.Event()
        f = method_pool.submit(tasks.wait_for_cancel, started, token=cts.token)
        assert started.wait(WAIT)
        assert f.running()
        cts.cancel(reason="stop now")
        assert f.result(WAIT) == "stop now"

    def test_cooperative_task_ends_cancelled(
        self, method_pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        started = manager.Event()
        f = method_pool.submit(tasks.cooperative, started)
        assert started.wait(WAIT)
        f.request_cancel("enough")
        with pytest.raises(cf.CancelledError):
            f.result(WAIT)
        assert f.cancelled()
        assert f.token.is_cancellation_requested
        assert f.token.reason == "enough"

    def test_unrelated_operation_cancelled_error_is_an_ordinary_exception(
        self, pool: CancellableProcessPoolExecutor
    ) -> None:
        f = pool.submit(tasks.cancel_own_raise)
        assert isinstance(f.exception(WAIT), OperationCancelledError)
        assert not f.cancelled()

    def test_deadline_reason_travels_as_timeout_error(
        self, pool: CancellableProcessPoolExecutor, clock: Any, manager: SyncManager
    ) -> None:
        cts = CancellationTokenSource()
        started = manager.Event()
        f = pool.submit(tasks.reason_type, started, token=cts.token)
        assert started.wait(WAIT)
        cts.cancel_after(5)
        clock.advance(5)
        assert f.result(WAIT).startswith("TimeoutError")

    def test_unpicklable_reason_travels_as_repr(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        lock = threading.Lock()
        cts = CancellationTokenSource()
        started = manager.Event()
        f = pool.submit(tasks.reason_type, started, token=cts.token)
        assert started.wait(WAIT)
        cts.cancel(lock)
        assert f.result(WAIT) == "str:" + repr(lock)

    def test_pending_tasks_end_cancelled_at_once_and_never_start(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        gate, blockers = occupy(pool, manager)
        log = manager.list()
        cts = CancellationTokenSource()
        fs = [pool.submit(tasks.record, log, i, token=cts.token) for i in range(20)]
        called = []
        fs[5].add_done_callback(called.append)
        cts.cancel("drop")
        assert all(f.cancelled() for f in fs)
        assert called == [fs[5]]
        with pytest.raises(OperationCancelledError) as info:
            fs[0].result()
        assert info.value.reason == "drop"
        with pytest.raises(cf.CancelledError):
            fs[1].exception()
        gate.set()
        assert [b.result(WAIT) for b in blockers] == ["gated", "gated"]
        assert pool.submit(tasks.add, 1, 1).result(WAIT) == 2
        assert list(log) == []

    def test_wait_sees_a_token_cancelled_pending_future(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        gate, _ = occupy(pool, manager)
        cts = CancellationTokenSource()
        f = pool.submit(tasks.add, 1, 1, token=cts.token)
        threading.Timer(0.05, cts.cancel).start()
        done, _ = cf.wait([f], timeout=WAIT, return_when=cf.FIRST_COMPLETED)
        assert done == {f}
        gate.set()

    def test_already_cancelled_token_returns_a_cancelled_future(
        self, pool: CancellableProcessPoolExecutor
    ) -> None:
        cts = CancellationTokenSource()
        cts.cancel()
        f = pool.submit(tasks.add, 1, 1, token=cts.token)
        assert f.cancelled()

    def test_ambient_token_is_the_default_submit_token(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        from cancellable import use_token

        cts = CancellationTokenSource()
        started = manager.Event()
        with use_token(cts.token):
            f = pool.submit(tasks.reason_type, started)
        assert started.wait(WAIT)
        cts.cancel("ambient")
        assert f.result(WAIT) == "str:ambient"

    def test_executor_token_cancels_tasks_and_later_submits(self, manager: SyncManager) -> None:
        cts = CancellationTokenSource()
        with CancellableProcessPoolExecutor(
            2, mp_context=multiprocessing.get_context("forkserver"), token=cts.token
        ) as ex:
            assert ex.token == cts.token
            started = manager.Event()
            f = ex.submit(tasks.wait_for_cancel, started)
            assert started.wait(WAIT)
            cts.cancel("closing")
            assert f.result(WAIT) == "closing"
            assert ex.submit(tasks.add, 1, 1).cancelled()

    def test_future_cancel_keeps_the_stdlib_meaning(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        gate, blockers = occupy(pool, manager)
        pending = pool.submit(tasks.add, 1, 1)
        assert pending.cancel()
        assert pending.cancelled()
        assert pending.cancel()
        assert not blockers[0].cancel()
        assert blockers[0].running()
        gate.set()
        assert blockers[0].result(WAIT) == "gated"

    def test_cancel_all_drops_the_backlog_and_keeps_the_workers(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        started = [manager.Event(), manager.Event()]
        running = [pool.submit(tasks.wait_for_cancel, s) for s in started]
        assert all(s.wait(WAIT) for s in started)
        backlog = [pool.submit(tasks.add, i, 0) for i in range(50)]
        pids = set(pool._processes)
        pool.cancel_all("all")
        assert all(f.cancelled() for f in backlog)
        assert [f.result(WAIT) for f in running] == ["all", "all"]
        assert pool.submit(tasks.add, 1, 1).result(WAIT) == 2
        assert set(pool._processes) == pids

    def test_shutdown_cancel_futures_reaches_running_tasks(self, manager: SyncManager) -> None:
        ex = make_pool()
        started = manager.Event()
        running = ex.submit(tasks.cooperative, started)
        assert started.wait(WAIT)
        backlog = [ex.submit(tasks.add, i, 0) for i in range(10)]
        ex.shutdown(wait=True, cancel_futures=True)
        assert running.cancelled()
        assert all(f.cancelled() for f in backlog)

    def test_exit_by_exception_cancels_running_tasks(self, manager: SyncManager) -> None:
        started = manager.Event()
        ex = make_pool()
        f = ex.submit(tasks.cooperative, started)
        assert started.wait(WAIT)
        assert ex.__exit__(KeyError, KeyError("leave"), None) is False
        assert f.cancelled()
        # A text, not the exception: its traceback would keep the block alive.
        assert f.token.reason == "the executor's with block was left by KeyError('leave')"

    def test_request_cancel_on_a_done_future_is_a_no_op(
        self, pool: CancellableProcessPoolExecutor
    ) -> None:
        f = pool.submit(tasks.add, 1, 1)
        assert f.result(WAIT) == 2
        f.request_cancel("late", kill_after=0)
        assert f.result() == 2

    def test_map_token_cancel_raises_operation_cancelled(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        gate, _ = occupy(pool, manager)
        cts = CancellationTokenSource()
        it = pool.map(tasks.add, range(10), range(10), token=cts.token)
        cts.cancel()
        with pytest.raises(OperationCancelledError):
            next(it)
        gate.set()

    def test_closing_map_cancels_what_was_not_yielded(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        started = manager.Event()
        it = pool.map(tasks.wait_for_cancel, [started] + [None] * 5)
        assert started.wait(WAIT)
        it.close()
        # The first call was running: its token is cancelled, so it returns.
        assert pool.submit(tasks.add, 1, 1).result(WAIT) == 2


class TestStartCheck:
    """A task already handed to a worker never starts once its slot names it."""

    def test_worker_skips_a_task_whose_slot_is_flagged(self) -> None:
        flags = multiprocessing.get_context("spawn").RawArray("q", 1)
        parent, child = multiprocessing.Pipe()
        state = process_module._WorkerState()
        data = process_module._SEQ.pack(7) + pickle.dumps((tasks.fail, ("ran",), {}))
        flags[0] = 7
        process_module._run_one(0, 7, data, child, flags, state)
        assert pickle.loads(parent.recv_bytes()) == (7, process_module._SKIPPED, None)
        flags[0] = 6  # another task's cancel: this one runs
        process_module._run_one(0, 7, data, child, flags, state)
        seq, kind, _ = pickle.loads(parent.recv_bytes())
        assert (seq, kind) == (7, process_module._ERROR)
        parent.close()
        child.close()

    def test_watcher_cancels_only_the_task_it_names(self) -> None:
        reader, writer = multiprocessing.Pipe(duplex=False)
        state = process_module._WorkerState()
        source = CancellationTokenSource()
        state.current = (5, source)
        watcher = threading.Thread(target=process_module._watch, args=(reader, state))
        watcher.start()
        writer.send_bytes(process_module._SEQ.pack(4) + pickle.dumps("other"))
        writer.send_bytes(process_module._SEQ.pack(5) + pickle.dumps("mine"))
        assert source.token.wait(WAIT)
        assert source.token.reason == "mine"
        writer.close()
        watcher.join(WAIT)
        assert not watcher.is_alive()


class TestKillAfter:
    @pytest.mark.timeout(60)
    def test_kill_after_terminates_only_the_ignoring_worker(
        self, method_pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        s1, s2, gate = manager.Event(), manager.Event(), manager.Event()
        stubborn = method_pool.submit(tasks.ignore_cancel, s1)
        other = method_pool.submit(tasks.gated, s2, gate)
        assert s1.wait(WAIT)
        assert s2.wait(WAIT)
        before = time.monotonic()
        stubborn.request_cancel("go", kill_after=0.3)
        with pytest.raises(cf.CancelledError):
            stubborn.result(WAIT)
        assert time.monotonic() - before >= 0.3
        assert stubborn.cancelled()
        assert not other.done()
        gate.set()
        assert other.result(WAIT) == "gated"
        # The pool replaced the killed worker and stays usable.
        assert method_pool.submit(tasks.add, 2, 3).result(WAIT) == 5
        assert not method_pool._broken

    @pytest.mark.timeout(60)
    def test_cancel_all_kill_after_kills_laggards_only(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        s1, s2 = manager.Event(), manager.Event()
        stubborn = pool.submit(tasks.ignore_cancel, s1)
        polite = pool.submit(tasks.wait_for_cancel, s2)
        assert s1.wait(WAIT)
        assert s2.wait(WAIT)
        pool.cancel_all("bye", kill_after=0.2)
        assert polite.result(WAIT) == "bye"
        with pytest.raises(cf.CancelledError):
            stubborn.result(WAIT)
        assert pool.submit(tasks.add, 1, 1).result(WAIT) == 2
        assert not pool._broken

    def test_cooperative_task_is_not_killed(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        started = manager.Event()
        first_pid = pool.submit(tasks.pid).result(WAIT)
        f = pool.submit(tasks.wait_for_cancel, started)
        assert started.wait(WAIT)
        f.request_cancel("polite", kill_after=0.2)
        assert f.result(WAIT) == "polite"
        assert first_pid in pool._processes

    def test_kill_after_is_checked(self, pool: CancellableProcessPoolExecutor) -> None:
        f = pool.submit(tasks.add, 1, 1)
        with pytest.raises(ValueError, match="kill_after"):
            f.request_cancel(kill_after=-1)
        with pytest.raises(ValueError, match="kill_after"):
            pool.cancel_all(kill_after=float("nan"))
        with pytest.raises(TypeError, match="kill_after"):
            f.request_cancel(kill_after="1")  # type: ignore[arg-type]
        assert f.result(WAIT) == 2


class TestBroken:
    @pytest.mark.parametrize("method", METHODS)
    def test_worker_crash_breaks_the_pool(self, method: str) -> None:
        ex = make_pool(method)
        try:
            f = ex.submit(tasks.crash)
            with pytest.raises(BrokenProcessPool):
                f.result(WAIT)
            with pytest.raises(BrokenProcessPool):
                ex.submit(tasks.add, 1, 1)
        finally:
            ex.shutdown()

    def test_initializer_failure_breaks_the_pool(self, caplog: pytest.LogCaptureFixture) -> None:
        ex = make_pool(initializer=tasks.init_fail)
        try:
            f = ex.submit(tasks.add, 1, 1)
            with pytest.raises(BrokenProcessPool):
                f.result(WAIT)
        finally:
            ex.shutdown()


class TestArguments:
    def test_bad_constructor_arguments(self) -> None:
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            CancellableProcessPoolExecutor(0)
        with pytest.raises(TypeError, match="max_workers"):
            CancellableProcessPoolExecutor("2")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="initializer must be a callable"):
            CancellableProcessPoolExecutor(1, initializer=3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_tasks_per_child must be >= 1"):
            CancellableProcessPoolExecutor(1, max_tasks_per_child=0)
        with pytest.raises(ValueError, match="incompatible with the 'fork'"):
            CancellableProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("fork"), max_tasks_per_child=1
            )
        with pytest.raises(TypeError, match="token must be a CancellationToken"):
            CancellableProcessPoolExecutor(1, token=object())  # type: ignore[arg-type]

    def test_bad_submit_and_map_arguments(self, pool: CancellableProcessPoolExecutor) -> None:
        with pytest.raises(TypeError, match="fn must be callable"):
            pool.submit(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="token must be a CancellationToken"):
            pool.submit(tasks.add, 1, 2, token="x")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="chunksize"):
            pool.map(tasks.add, [1], [2], chunksize=0)
        with pytest.raises(ValueError, match="timeout"):
            pool.map(tasks.add, [1], [2], timeout=float("nan"))
        assert pool.submit(tasks.add, 1, 2, token=CancellationToken.NONE).result(WAIT) == 3


_LEAK_CHILD = textwrap.dedent(
    """
    import concurrent.futures as cf, multiprocessing, sys
    sys.path.insert(0, {root!r})
    from cancellable import CancellableProcessPoolExecutor, CancellationTokenSource
    from tests import _process_tasks as tasks

    def main():
        for method in ("spawn", "forkserver", "fork"):
            ctx = multiprocessing.get_context(method)
            with ctx.Manager() as m, CancellableProcessPoolExecutor(2, mp_context=ctx) as ex:
                started = m.Event()
                stubborn = ex.submit(tasks.ignore_cancel, started)
                assert started.wait(20)
                cts = CancellationTokenSource()
                fs = [ex.submit(tasks.add, i, i, token=cts.token) for i in range(100)]
                cts.cancel()
                stubborn.request_cancel(kill_after=0.1)
                cf.wait([stubborn], 20)
                assert stubborn.cancelled()
                assert ex.submit(tasks.add, 1, 1).result(20) == 2
            broken = CancellableProcessPoolExecutor(1, mp_context=ctx)
            broken.submit(tasks.crash).exception(20)
            broken.shutdown()

    if __name__ == "__main__":
        main()
        # A pool nobody shut down: its backlog still runs and the exit waits for it.
        leftover = CancellableProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("forkserver")
        )
        last = leftover.submit(tasks.add, 1, 1)
        last.add_done_callback(lambda f: print("ok"))
    """
)


@pytest.mark.timeout(120)
def test_no_leaked_shared_memory_or_semaphores(tmp_path: Any) -> None:
    """A child using every start method, kills, a crash and a pool left open: quiet exit."""
    script = tmp_path / "leak_child.py"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script.write_text(_LEAK_CHILD.format(root=root))
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-W",
            "ignore:This process:DeprecationWarning",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert proc.stderr == ""


class TestTryingToBreakIt:
    @pytest.mark.timeout(120)
    def test_cancelled_means_never_ran_under_racing_cancels(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        """A future that ends cancelled never ran: record() ignores its token, so a
        task that started returns normally; a cancelled one must be absent."""
        import random

        log = manager.list()
        sources = [CancellationTokenSource() for _ in range(300)]
        fs = [pool.submit(tasks.record, log, i, token=s.token) for i, s in enumerate(sources)]
        order = list(range(300))
        random.Random(14).shuffle(order)

        def canceller() -> None:
            for i in order[:150]:
                sources[i].cancel()

        thread = threading.Thread(target=canceller)
        thread.start()
        thread.join(WAIT)
        cf.wait(fs, timeout=60)
        assert all(f.done() for f in fs)
        ran = set(log)
        for i, f in enumerate(fs):
            if f.cancelled():
                assert i not in ran, i
            else:
                assert f.result() == i
                assert i in ran
        assert sum(f.cancelled() for f in fs) >= 1

    def test_one_token_for_many_tasks_leaves_nothing_behind(
        self, pool: CancellableProcessPoolExecutor
    ) -> None:
        import gc

        cts = CancellationTokenSource()
        assert all(f.result(WAIT) == 2 for f in [pool.submit(tasks.add, 1, 1, token=cts.token)] * 1)
        gc.collect()
        before = sum(1 for o in gc.get_objects() if type(o) is CancellationTokenSource)
        fs = [pool.submit(tasks.add, i, 1, token=cts.token) for i in range(2000)]
        assert [f.result(WAIT) for f in fs] == [i + 1 for i in range(2000)]
        del fs
        gc.collect()
        after = sum(1 for o in gc.get_objects() if type(o) is CancellationTokenSource)
        assert after - before < 10
        cts.cancel()  # nothing left registered on it: a no-op

    def test_done_callbacks_may_call_back_into_the_pool(self, manager: SyncManager) -> None:
        ex = make_pool()
        seen: list[object] = []
        done = threading.Event()

        def callback(f: cf.Future[Any]) -> None:
            # On the pool's dispatcher thread: submit, cancel_all and shutdown.
            seen.append(ex.submit(tasks.add, 2, 2))
            ex.cancel_all("from a callback")
            ex.shutdown(wait=True)  # must not join its own thread
            done.set()

        ex.submit(tasks.add, 1, 1).add_done_callback(callback)
        assert done.wait(WAIT)
        second = seen[0]
        assert isinstance(second, CancellableProcessFuture)
        cf.wait([second], timeout=WAIT)
        assert second.done()
        ex.shutdown(wait=True)

    def test_kill_after_zero_kills_at_once(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        started = manager.Event()
        f = pool.submit(tasks.ignore_cancel, started)
        assert started.wait(WAIT)
        f.request_cancel(kill_after=0)
        with pytest.raises(OperationCancelledError):
            f.result(WAIT)
        assert pool.submit(tasks.add, 1, 1).result(WAIT) == 2

    def test_huge_kill_after_never_fires_for_a_cooperative_task(
        self, pool: CancellableProcessPoolExecutor, manager: SyncManager
    ) -> None:
        started = manager.Event()
        f = pool.submit(tasks.wait_for_cancel, started)
        assert started.wait(WAIT)
        f.request_cancel("r", kill_after=1e10)
        assert f.result(WAIT) == "r"
        f.request_cancel("again", kill_after=float("inf"))

    def test_payloads_larger_than_a_pipe_buffer(self, pool: CancellableProcessPoolExecutor) -> None:
        big = b"y" * (8 * 1024 * 1024)
        assert pool.submit(tasks.size_of, big).result(WAIT) == len(big)
        assert len(pool.submit(tasks.make_bytes, 5_000_000).result(WAIT)) == 5_000_000

    def test_many_threads_submitting_at_once(self, pool: CancellableProcessPoolExecutor) -> None:
        barrier = threading.Barrier(8)
        results: list[list[int]] = [[] for _ in range(8)]

        def run(k: int) -> None:
            barrier.wait()
            results[k] = [pool.submit(tasks.add, k, i).result(WAIT) for i in range(25)]

        threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert results == [[k + i for i in range(25)] for k in range(8)]

    def test_map_timeout_cancels_the_calls_not_yielded(
        self, pool: CancellableProcessPoolExecutor
    ) -> None:
        it = pool.map(tasks.cooperative, [None] * 4, timeout=0.3)
        with pytest.raises(TimeoutError):
            list(it)
        # The two running naps were cancelled too: both workers are free again.
        assert [pool.submit(tasks.add, i, 0).result(WAIT) for i in range(2)] == [0, 1]
