"""What users hit with the executor (issue 10), one test per item, from the user's side.

Each test reproduces its item the way a program meets it and asserts what a
user expects instead; the items are named in the class docstrings. Whatever
could hang (a spin, a deadlock, a child process that never exits) runs under
a bound (`run_bounded`, ``result(timeout=...)``, a child's hang guard), so a
regression fails the test instead of stalling the run. Where the stdlib pool
sets the expectation, the same test also runs against it as a control.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import io
import queue
import subprocess
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

import pytest
from benchmarks._childproc import interrupt_when_blocked

from _faults import WAIT, PausedThread, run_bounded
from cancellable import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancellationTokenSource,
)
from conftest import occupy_workers
from test_executor_process import HANG_GUARD, _rest, _spawn, _wait_for_line

Pool = CancellableThreadPoolExecutor

# The three ways a user cancels a token's pending tasks in bulk.
BULK_CANCELS: dict[str, Callable[[Pool, CancellationTokenSource], None]] = {
    "token.cancel": lambda pool, cts: cts.cancel("job cancelled"),
    "cancel_all": lambda pool, cts: pool.cancel_all("everything"),
    "shutdown(cancel_futures=True)": lambda pool, cts: pool.shutdown(
        wait=False, cancel_futures=True
    ),
}

# The three ways a user cancels one pending task.
TASK_CANCELS: dict[str, Callable[[CancellableFuture[Any], CancellationTokenSource], object]] = {
    "future.cancel": lambda future, cts: future.cancel(),
    "request_cancel": lambda future, cts: future.request_cancel("this one"),
    "token.cancel": lambda future, cts: cts.cancel("its token"),
}


@pytest.fixture
def pools() -> Iterator[list[Pool]]:
    """Pools a test creates; each is shut down (cancelling what is left) afterwards."""
    created: list[Pool] = []
    yield created
    for pool in created:
        pool.shutdown(wait=False, cancel_futures=True)


class TestLongLivedSubmitToken:
    """Item 1: a job token reused for many submits still reaches its pending tasks."""

    @pytest.mark.timeout(120)
    @pytest.mark.parametrize("how", list(BULK_CANCELS))
    def test_pending_task_of_a_reused_token_is_cancelled(self, how: str) -> None:
        # The pool used to forget the group of a submit token every 32
        # emptied groups, at the very submit attaching a task to it. Trying
        # every count of earlier submits up to 100 covers that period three
        # times over, whatever its phase.
        for earlier in range(100):
            pool = Pool(1)
            cts = CancellationTokenSource()
            ran: list[int] = []
            gate = threading.Event()
            try:
                for i in range(earlier):
                    # One after another: each done before the next submit.
                    assert pool.submit(pow, 2, i, token=cts.token).result(timeout=WAIT) == 2**i
                gate = occupy_workers(pool, 1)[0]
                probe = pool.submit(ran.append, earlier, token=cts.token)
                BULK_CANCELS[how](pool, cts)
                cancelled_at_once = probe.cancelled()
                gate.set()
                wait([probe], timeout=WAIT)
            finally:
                gate.set()
                pool.shutdown(wait=True, cancel_futures=True)
            assert cancelled_at_once, (
                f"after {earlier} earlier submits with the same token, {how} "
                f"left its pending task {probe!r}"
            )
            assert not ran, f"after {earlier} earlier submits the cancelled task ran"

    @pytest.mark.timeout(120)
    def test_one_job_token_for_thousands_of_submits_stays_cancellable(self, pool: Pool) -> None:
        job = CancellationTokenSource()
        ran: list[int] = []
        for round_ in range(1500):
            # A varying number of finished tasks between probes, so that the
            # pool's housekeeping meets the probe's submit at every phase.
            for _ in range(1 + round_ % 3):
                assert pool.submit(pow, 3, 2, token=job.token).result(timeout=WAIT) == 9
            gate, _ = occupy_workers(pool, 2)
            probe = pool.submit(ran.append, round_, token=job.token)
            pool.cancel_all("next round")
            cancelled_at_once = probe.cancelled()
            gate.set()
            wait([probe], timeout=WAIT)
            assert cancelled_at_once, f"round {round_}: cancel_all left {probe!r} pending"
            assert not ran, f"round {round_}: a task pending at cancel_all ran"
        pending = [pool.submit(ran.append, -1, token=job.token) for _ in range(3)]
        gate, _ = occupy_workers(pool, 2)
        late = pool.submit(ran.append, -2, token=job.token)
        job.cancel("the job is over")
        assert late.cancelled()
        gate.set()
        wait([*pending, late], timeout=WAIT)
        assert -2 not in ran


class TestDoneCallbackCancellingSiblings:
    """Item 2: "cancel the rest" done-callbacks during a bulk cancel do not spin."""

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("observed", ["all", "every other"])
    @pytest.mark.parametrize("how", list(BULK_CANCELS))
    def test_bulk_cancel_ends_with_sibling_cancelling_callbacks(
        self, pools: list[Pool], how: str, observed: str
    ) -> None:
        pool = Pool(2)
        pools.append(pool)
        cts = CancellationTokenSource()
        gate, _ = occupy_workers(pool, 2)
        fs = [pool.submit(int, token=cts.token) for _ in range(20)]
        seen: list[Future[Any]] = []

        def cancel_the_rest(done: Future[Any]) -> None:
            seen.append(done)
            for future in fs:
                future.cancel()

        for future in fs if observed == "all" else fs[::2]:
            future.add_done_callback(cancel_the_rest)
        outcome = run_bounded(lambda: BULK_CANCELS[how](pool, cts))
        gate.set()
        assert outcome.finished, f"{how} with sibling-cancelling done-callbacks did not return"
        assert outcome.error is None, outcome.error
        assert all(future.cancelled() for future in fs)
        assert len(seen) == len(fs if observed == "all" else fs[::2])

    @pytest.mark.timeout(60)
    def test_stdlib_pool_handles_the_same_callbacks(self) -> None:
        # The control: the code of the test above, on the stdlib pool.
        pool = ThreadPoolExecutor(2)
        gate, _ = occupy_workers(pool, 2)  # type: ignore[arg-type]
        fs = [pool.submit(int) for _ in range(20)]
        for future in fs:
            future.add_done_callback(lambda _: [f.cancel() for f in fs])
        outcome = run_bounded(lambda: pool.shutdown(wait=False, cancel_futures=True))
        gate.set()
        assert outcome.finished
        assert all(future.cancelled() for future in fs)


class TestMaxPendingFollowUp:
    """Item 3: with ``max_pending``, a done-callback of a cancelled task may submit."""

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize(
        ("count", "how"),
        [
            *((1, how) for how in TASK_CANCELS),
            *((3, how) for how in ("token.cancel", "cancel_all")),
        ],
        ids=lambda value: {1: "one", 3: "bulk"}.get(value, value),
    )
    def test_done_callbacks_submit_follow_ups_when_their_tasks_are_cancelled(
        self, count: int, how: str
    ) -> None:
        # Every pending slot is taken by the tasks cancelled, so each
        # follow-up fits only in the slot its cancelled task handed back.
        pool = Pool(1, max_pending=count)
        cts = CancellationTokenSource()
        gate, _ = occupy_workers(pool, 1)
        tasks = [pool.submit(int, token=cts.token) for _ in range(count)]
        follow_ups: list[Future[int]] = []

        def follow_up(done: Future[Any]) -> None:
            if done.cancelled():
                follow_ups.append(pool.submit(pow, 2, 10))

        def cancel() -> object:
            if count == 1:
                return TASK_CANCELS[how](tasks[0], cts)
            return BULK_CANCELS[how](pool, cts)

        for task in tasks:
            task.add_done_callback(follow_up)
        try:
            outcome = run_bounded(cancel)
            if not outcome.finished:
                # Let the blocked submit fail out before reporting.
                pool.shutdown(wait=False, cancel_futures=True)
                pytest.fail(f"{how}: a done-callback's submit waited for a slot forever")
            assert outcome.error is None, outcome.error
            assert all(task.cancelled() for task in tasks)
            gate.set()
            assert [f.result(timeout=WAIT) for f in follow_ups] == [1024] * count
        finally:
            gate.set()
            pool.shutdown(wait=False, cancel_futures=True)


class TestPoolWithLongLivedTokenIsFreed:
    """Item 4: a pool created with a long-lived ``token=`` is freed after shutdown."""

    @staticmethod
    def _use_and_shut(app: CancellationTokenSource, submit_token: bool) -> list[weakref.ref[Any]]:
        pool = Pool(2, token=app.token)
        token = app.token if submit_token else None
        assert pool.submit(pow, 2, 3, token=token).result(timeout=WAIT) == 8
        assert list(pool.map(abs, [-1, -2], token=token)) == [1, 2]
        pending = pool.submit(int, token=token)
        pending.result(timeout=WAIT)
        pool.shutdown(wait=True)
        refs: list[weakref.ref[Any]] = [weakref.ref(pool), weakref.ref(pending)]
        for name, value in vars(pool).items():
            if value is app.token or name == "_token":
                continue
            try:
                refs.append(weakref.ref(value))
            except TypeError:
                continue  # not weak-referenceable (ints, tuples, sets...)
        refs.extend(weakref.ref(thread) for thread in list(pool._threads))
        return refs

    @pytest.mark.parametrize("submit_token", [False, True])
    def test_pool_and_its_internals_are_freed(self, submit_token: bool) -> None:
        app = CancellationTokenSource()
        refs = self._use_and_shut(app, submit_token)
        gc.collect()
        alive = [ref() for ref in refs if ref() is not None]
        assert not alive, f"still reachable after shutdown: {alive!r}"
        assert not app.token.is_cancellation_requested


class TestKeyboardInterruptDuringABacklogCancel:
    """Item 5: Ctrl-C in a done-callback during a big cancel ends every future and propagates."""

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("how", list(BULK_CANCELS))
    def test_keyboard_interrupt_propagates_as_itself_and_no_future_stays_pending(
        self, pools: list[Pool], how: str
    ) -> None:
        pool = Pool(2)
        pools.append(pool)
        cts = CancellationTokenSource()
        gate, _ = occupy_workers(pool, 2)
        backlog = [pool.submit(int, token=cts.token) for _ in range(5000)]
        calls: list[Future[Any]] = []

        def interrupt(future: Future[Any]) -> None:
            calls.append(future)
            raise KeyboardInterrupt("pressed in a done-callback")

        observed = backlog[::250]
        for future in observed:
            future.add_done_callback(calls.append)
        backlog[2500].add_done_callback(interrupt)
        caught: BaseException | None = None
        outcome = run_bounded(lambda: BULK_CANCELS[how](pool, cts))
        caught = outcome.error
        gate.set()
        assert outcome.finished, f"{how} did not return"
        still_pending = [i for i, future in enumerate(backlog) if not future.done()]
        assert not still_pending, f"{len(still_pending)} futures left pending by {how}"
        assert all(future.cancelled() for future in backlog)
        assert len(calls) == len(observed) + 1, "some done-callbacks never ran"
        assert type(caught) is KeyboardInterrupt, (
            f"{how} surfaced {caught!r} instead of the KeyboardInterrupt itself"
        )
        if not how.startswith("shutdown"):
            assert pool.submit(pow, 2, 4).result(timeout=WAIT) == 16  # still usable

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("how", ["future.cancel", "request_cancel"])
    def test_keyboard_interrupt_from_one_tasks_callback_propagates(
        self, pools: list[Pool], how: str
    ) -> None:
        pool = Pool(1, max_pending=2)
        pools.append(pool)
        gate, _ = occupy_workers(pool, 1)
        task = pool.submit(int)

        def interrupt(_: Future[Any]) -> None:
            raise KeyboardInterrupt("pressed in a done-callback")

        task.add_done_callback(interrupt)
        outcome = run_bounded(lambda: TASK_CANCELS[how](task, CancellationTokenSource()))
        gate.set()
        assert outcome.finished
        assert task.cancelled()
        assert type(outcome.error) is KeyboardInterrupt, outcome.error
        # The cancelled task's slot was handed back: two submits fit again.
        more = [pool.submit(pow, 2, i) for i in range(2)]
        assert [f.result(timeout=WAIT) for f in more] == [1, 2]


class TestCtrlCWhileWithExitWaits:
    """Item 6: one Ctrl-C while a ``with`` exit waits for a backlog cancels every task."""

    @pytest.mark.timeout(60)
    def test_ctrl_c_at_with_exit_cancels_every_tasks_token(self) -> None:
        proc = _spawn(
            r"""
            import os
            from cancellable import CancellableThreadPoolExecutor, current_token
            def cooperative():
                os.write(1, b"started\n")
                current_token().wait()
                os.write(1, b"stopped\n")
                current_token().raise_if_cancellation_requested()
            fs = []
            try:
                with CancellableThreadPoolExecutor(2) as ex:
                    fs = [ex.submit(cooperative) for _ in range(102)]
                    os.write(1, b"body done\n")
            except KeyboardInterrupt:
                os.write(1, b"interrupted\n")
            os.write(1, f"cancelled {sum(f.cancelled() for f in fs)}\n".encode())
            """
        )
        _wait_for_line(proc, "started", "started", "body done")
        interrupt_when_blocked(proc)
        try:
            out, err = _rest(proc)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the child was still waiting for its backlog {HANG_GUARD} s after Ctrl-C")
        lines = out.split("\n")
        assert lines.count("stopped") == 2, (out, err)
        assert "started" not in lines, "a backlog task started after the Ctrl-C"
        assert "interrupted" in lines, (out, err)
        assert "cancelled 102" in lines, (out, err)
        assert proc.returncode == 0, err


class TestRequestCancelRacingTheWorker:
    """Item 7: once ``request_cancel()`` returned on a pending task, it never starts."""

    @pytest.mark.timeout(180)
    @pytest.mark.parametrize("token_first", [False, True], ids=["lazy-token", "token-made"])
    def test_request_cancel_at_every_point_of_the_workers_take(self, token_first: bool) -> None:
        # The worker stops at its n-th line inside the package after the task
        # before the probe returned, for n = 1, 2, ...; request_cancel() runs
        # while it is stopped. That walks every point of the worker taking
        # the probe, which a loop of Barriers hits only by luck.
        violations = []
        n = 0
        while True:
            n += 1
            assert n < 1000, "the worker never reached the probe"
            stop = threading.Event()
            pause = PausedThread(n, paused=stop)
            gate = threading.Event()
            ran = threading.Event()

            def hold(pause: PausedThread = pause, gate: threading.Event = gate) -> None:
                gate.wait(WAIT)
                pause.arm()

            def probe(
                pause: PausedThread = pause,
                ran: threading.Event = ran,
                stop: threading.Event = stop,
            ) -> None:
                pause.disarm()
                ran.set()
                stop.set()

            pause.install()
            try:
                pool = Pool(1)
                pool.submit(hold)  # starts the (traced) worker
            finally:
                pause.uninstall()
            try:
                task = pool.submit(probe)
                if token_first:
                    assert not task.token.is_cancellation_requested
                gate.set()
                assert stop.wait(WAIT)
                if pause.where is None:
                    break  # the probe started before the n-th line: every point was tried
                seen: dict[str, bool] = {}

                def cancel(
                    task: CancellableFuture[Any] = task, seen: dict[str, bool] = seen
                ) -> None:
                    task.request_cancel("racing the worker")
                    seen["pending"] = not task.running() and not task.done()

                canceller = threading.Thread(target=cancel, daemon=True)
                canceller.start()
                # The stopped worker may hold a lock request_cancel needs; then
                # request_cancel returns once the worker is resumed, and what it
                # saw is still checked (only coverage depends on this bound).
                canceller.join(0.1)
                pause.resume.set()
                canceller.join(WAIT)
                assert not canceller.is_alive(), (
                    f"request_cancel hung (worker stopped at {pause.where})"
                )
                wait([task], timeout=WAIT)
                if seen.get("pending") and ran.is_set():
                    violations.append(pause.where)
                if not ran.is_set():
                    assert task.cancelled(), (pause.where, task)
            finally:
                pause.resume.set()
                gate.set()
                pool.shutdown(wait=True)
        assert not violations, (
            "request_cancel() returned while the task was pending, and the task then started, "
            f"with the worker stopped at: {violations}"
        )


class TestWithBlockLeftByAnException:
    """Item 8: leaving ``with pool:`` by an exception frees the frame's locals at once."""

    @pytest.mark.parametrize("pool_class", [ThreadPoolExecutor, Pool], ids=["stdlib", "ours"])
    def test_locals_are_freed_without_the_garbage_collector(self, pool_class: type[Any]) -> None:
        class Local:
            pass

        def body() -> weakref.ref[Local]:
            obj = Local()
            ref = weakref.ref(obj)
            try:
                with pool_class(1) as pool:
                    assert pool.submit(pow, 2, 2).result(timeout=WAIT) == 4
                    raise ValueError("leaves the block")
            except ValueError:
                pass
            return ref

        gc.collect()
        gc.disable()
        try:
            ref = body()
            alive = ref() is not None
        finally:
            gc.enable()
        assert not alive, "a local of the frame outlived it (kept by a reference cycle)"


def _traceback_length(error: BaseException) -> int:
    length, tb = 0, error.__traceback__
    while tb is not None:
        length, tb = length + 1, tb.tb_next
    return length


class TestInitializerFailure:
    """Item 9: each pending future of a broken pool has its own `BrokenThreadPool`."""

    @pytest.mark.parametrize("pool_class", [ThreadPoolExecutor, Pool], ids=["stdlib", "ours"])
    def test_each_pending_future_gets_its_own_error(
        self, pool_class: type[Any], caplog: pytest.LogCaptureFixture
    ) -> None:
        release = threading.Event()

        def initializer() -> None:
            release.wait(WAIT)
            raise ValueError("no database")

        pool = pool_class(1, initializer=initializer)
        try:
            fs = [pool.submit(int) for _ in range(4)]
            release.set()
            errors = [f.exception(timeout=WAIT) for f in fs]
        finally:
            pool.shutdown(wait=True)
        assert all(type(error) is BrokenThreadPool for error in errors), errors
        assert len({id(error) for error in errors}) == len(errors), "one error shared by futures"
        others = [_traceback_length(error) for error in errors[1:]]  # type: ignore[arg-type]
        for _ in range(5):
            with pytest.raises(BrokenThreadPool):
                fs[0].result(timeout=0)
        # result() on one future leaves the others' tracebacks alone. (Each
        # future's own traceback grows by the re-raising frames, as in the
        # stdlib, whose Future.result re-raises the one stored exception.)
        assert [_traceback_length(error) for error in errors[1:]] == others  # type: ignore[arg-type]


class _Counting(Pool):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.submits = 0
        self.shutdowns: list[tuple[bool, bool]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.submits += 1
        return super().submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.shutdowns.append((wait, cancel_futures))
        super().shutdown(wait, cancel_futures=cancel_futures)


class TestExtensionPoints:
    """Item 10: ``map`` goes through ``self.submit``, ``__exit__`` through ``self.shutdown``."""

    @pytest.mark.parametrize("buffersize", [None, 2])
    @pytest.mark.parametrize("with_token", [False, True])
    def test_subclass_sees_map_through_submit(
        self, buffersize: int | None, with_token: bool
    ) -> None:
        cts = CancellationTokenSource()
        token = cts.token if with_token else None
        with _Counting(2) as pool:
            results = pool.map(pow, [2, 3, 4, 5], [2] * 4, buffersize=buffersize, token=token)
            assert list(results) == [4, 9, 16, 25]
            assert pool.submits == 4
        assert pool.shutdowns == [(True, False)]

    def test_with_exit_by_an_exception_goes_through_shutdown(self) -> None:
        pool = _Counting(2)
        with contextlib.suppress(ValueError), pool:
            pool.submit(int).result(timeout=WAIT)
            raise ValueError("body")
        assert pool.shutdowns, "__exit__ bypassed the subclass's shutdown"
        assert all(wait for wait, _ in pool.shutdowns)

    def test_instance_patched_submit_sees_every_map_call(self) -> None:
        # What tqdm's thread_map does to show progress.
        done: list[Future[Any]] = []
        with Pool(2) as pool:
            original = pool.submit

            def patched(*args: Any, **kwargs: Any) -> Any:
                future = original(*args, **kwargs)
                future.add_done_callback(done.append)
                return future

            pool.submit = patched  # type: ignore[method-assign]
            assert list(pool.map(abs, range(-5, 5))) == [abs(i) for i in range(-5, 5)]
        assert len(done) == 10

    def test_tqdm_thread_map_progress_bar_counts_every_item(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tqdm_std = pytest.importorskip("tqdm.std")
        concurrent_contrib = pytest.importorskip("tqdm.contrib.concurrent")
        updates: list[int] = []

        class Recording(tqdm_std.tqdm):  # type: ignore[misc,name-defined]
            def update(self, n: int = 1) -> Any:
                updates.append(n)
                return super().update(n)

        # thread_map builds a concurrent.futures.ThreadPoolExecutor: make it ours.
        monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", Pool)
        results = concurrent_contrib.thread_map(
            abs, range(-10, 10), max_workers=2, tqdm_class=Recording, file=io.StringIO()
        )
        assert results == [abs(i) for i in range(-10, 10)]
        assert sum(updates) == 20, f"the progress bar counted {sum(updates)} of 20 items"


class TestStdlibPrivateAttributes:
    """Item 11: stdlib-era code reaching for the pool's private attributes keeps working."""

    @pytest.mark.parametrize("pool_class", [ThreadPoolExecutor, Pool], ids=["stdlib", "ours"])
    def test_shutdown_lock_is_a_lock(self, pool_class: type[Any]) -> None:
        with pool_class(1) as pool:
            with pool._shutdown_lock:
                pass
            assert pool._shutdown_lock.acquire(timeout=WAIT)
            pool._shutdown_lock.release()
            assert pool.submit(pow, 2, 3).result(timeout=WAIT) == 8

    @pytest.mark.parametrize("pool_class", [ThreadPoolExecutor, Pool], ids=["stdlib", "ours"])
    def test_idle_semaphore_has_acquire_and_release(self, pool_class: type[Any]) -> None:
        with pool_class(1) as pool:
            assert pool.submit(pow, 2, 3).result(timeout=WAIT) == 8
            semaphore = pool._idle_semaphore
            assert callable(semaphore.acquire)
            assert callable(semaphore.release)
            if semaphore.acquire(timeout=0):
                semaphore.release()
            assert pool.submit(pow, 2, 4).result(timeout=WAIT) == 16

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("pool_class", [ThreadPoolExecutor, Pool], ids=["stdlib", "ours"])
    def test_draining_the_work_queue_cancels_the_drained_futures(
        self, pool_class: type[Any]
    ) -> None:
        pool = pool_class(2)
        gate, _ = occupy_workers(pool, 2)
        ran: list[int] = []
        backlog = [pool.submit(ran.append, i) for i in range(10)]
        try:
            # The recipe from before cancel_futures existed.
            while True:
                try:
                    item = pool._work_queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item.future.cancel()
            assert all(future.cancelled() for future in backlog)
        finally:
            gate.set()
            outcome = run_bounded(lambda: pool.shutdown(wait=True))
        assert outcome.finished, "shutdown hung after the queue was drained"
        assert not ran
