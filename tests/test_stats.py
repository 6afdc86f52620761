"""`statistics()`, `laggards()` and the laggard report at shutdown and exit."""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from concurrent.futures import wait
from typing import Any

import pytest
from benchmarks._childproc import interrupt_when_blocked

from cancellable import (
    CancellableThreadPoolExecutor,
    CancellationTokenSource,
    ExecutorStatistics,
    Laggard,
    OperationCancelledError,
    _executor,
    current_token,
)

WAIT = 10  # seconds; only a deadlock would need it


def _stats(pool: CancellableThreadPoolExecutor) -> dict[str, int]:
    return dataclasses.asdict(pool.statistics())


class _Held:
    """``n`` tasks that each signal they run, then block until released."""

    def __init__(self, pool: CancellableThreadPoolExecutor, n: int, *, cooperative: bool) -> None:
        self.started = threading.Barrier(n + 1)
        self.gate = threading.Event()

        def hold_stubbornly() -> None:
            self.started.wait()
            self.gate.wait()  # ignores its token

        def hold_cooperatively() -> None:
            self.started.wait()
            current_token().wait()
            current_token().raise_if_cancellation_requested()

        fn: Callable[[], None] = hold_cooperatively if cooperative else hold_stubbornly
        self.futures = [pool.submit(fn) for _ in range(n)]
        self.started.wait(timeout=WAIT)


class _Reports(logging.Handler):
    """Collects laggard reports; sets ``gate`` once ``release_after`` arrived."""

    def __init__(self, release_after: int, gate: threading.Event) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.release_after = release_after
        self.gate = gate

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "still running" in message:
            self.messages.append(message)
            if len(self.messages) >= self.release_after:
                self.gate.set()


def hold_stubbornly_forever(gate: threading.Event) -> None:
    gate.wait()


class TestStatistics:
    def test_a_new_pool_is_all_zero(self) -> None:
        with CancellableThreadPoolExecutor(2) as pool:
            assert pool.statistics() == ExecutorStatistics(0, 0, 0, 0, 0, 0, 0, 0)

    def test_snapshot_is_frozen(self, pool: CancellableThreadPoolExecutor) -> None:
        snapshot = pool.statistics()
        with pytest.raises(dataclasses.FrozenInstanceError):
            snapshot.pending = 3  # type: ignore[misc]

    def test_exact_counts_through_a_gated_run(self) -> None:
        pool = CancellableThreadPoolExecutor(2)
        held = _Held(pool, 2, cooperative=False)
        job = CancellationTokenSource()
        later = [pool.submit(int, token=job.token) for _ in range(5)]
        others = [pool.submit(int) for _ in range(3)]
        assert _stats(pool) == {
            "workers": 2,
            "idle_workers": 0,
            "pending": 8,
            "running": 2,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "laggards": 0,
        }
        job.cancel("job over")
        assert all(f.cancelled() for f in later)
        assert _stats(pool)["pending"] == 3
        assert _stats(pool)["cancelled"] == 5
        failing = pool.submit(int, "not a number")
        held.gate.set()
        wait([*held.futures, *others, failing], timeout=WAIT)
        rejected = pool.submit(int, token=job.token)  # already cancelled: ends at submit
        assert rejected.cancelled()
        pool.shutdown(wait=True)
        assert _stats(pool) == {
            "workers": 0,
            "idle_workers": 0,
            "pending": 0,
            "running": 0,
            "completed": 5,
            "failed": 1,
            "cancelled": 6,
            "laggards": 0,
        }

    def test_cooperative_stop_counts_as_cancelled_and_lag_as_laggard(self) -> None:
        pool = CancellableThreadPoolExecutor(2)
        coop = _Held(pool, 1, cooperative=True)
        stubborn = _Held(pool, 1, cooperative=False)
        pool.cancel_all("stop")
        wait(coop.futures, timeout=WAIT)
        assert coop.futures[0].cancelled()
        counts = _stats(pool)
        assert (counts["running"], counts["laggards"], counts["cancelled"]) == (1, 1, 1)
        assert counts["idle_workers"] == 1
        stubborn.gate.set()
        pool.shutdown(wait=True)
        counts = _stats(pool)
        assert (counts["completed"], counts["cancelled"], counts["laggards"]) == (1, 1, 0)

    def test_a_failed_initializer_counts_its_pending_tasks_as_failed(self) -> None:
        entered = threading.Event()
        release = threading.Event()

        def initializer() -> None:
            entered.set()
            release.wait(WAIT)
            raise ValueError("no")

        pool = CancellableThreadPoolExecutor(1, initializer=initializer)
        fs = [pool.submit(int) for _ in range(4)]
        assert entered.wait(WAIT)
        release.set()
        wait(fs, timeout=WAIT)
        pool.shutdown(wait=True)
        counts = _stats(pool)
        assert (counts["failed"], counts["cancelled"], counts["pending"]) == (4, 0, 0)

    def test_a_million_tasks_with_one_token_add_up(self) -> None:
        # The counts stay exact however long a token lives; the size is
        # kept to what a CI machine runs in a couple of seconds.
        job = CancellationTokenSource()
        n = 20_000
        with CancellableThreadPoolExecutor(4) as pool:
            fs = [pool.submit(int, token=job.token) for _ in range(n)]
            job.cancel()
            wait(fs, timeout=WAIT)
        counts = _stats(pool)
        assert counts["completed"] + counts["cancelled"] == n
        assert counts["completed"] == sum(not f.cancelled() for f in fs)


class TestLaggards:
    def test_a_stubborn_task_is_named_with_its_stack(self) -> None:
        pool = CancellableThreadPoolExecutor(2)
        gate = threading.Event()
        started = threading.Event()

        def stubborn() -> None:
            started.set()
            hold_stubbornly_forever(gate)

        future = pool.submit(stubborn)
        assert started.wait(WAIT)
        assert pool.laggards() == []  # not cancelled yet
        future.request_cancel("please stop")
        (laggard,) = pool.laggards()
        assert isinstance(laggard, Laggard)
        assert laggard.qualname.endswith("stubborn")
        assert laggard.reason == "please stop"
        assert laggard.seconds_since_cancel >= 0
        assert laggard.thread_name.startswith("ThreadPoolExecutor-")
        assert "hold_stubbornly_forever" in laggard.stack
        assert "in stubborn" in laggard.stack
        assert "_executor.py" not in laggard.stack  # the pool's own frames are left out
        assert pool.laggards(grace=3600) == []
        gate.set()
        pool.shutdown(wait=True)
        assert pool.laggards() == []

    def test_a_wrapped_call_is_named_by_what_it_wraps(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        # What asyncio.to_thread and run_in_executor(pool, partial(...)) submit.
        gate = threading.Event()
        started = threading.Barrier(3)

        def stubborn_inner() -> None:
            started.wait()
            gate.wait()

        ctx = contextvars.copy_context()
        fs = [
            pool.submit(functools.partial(stubborn_inner)),
            pool.submit(functools.partial(ctx.run, stubborn_inner)),
        ]
        started.wait(timeout=WAIT)
        pool.cancel_all()
        try:
            names = [lag.qualname for lag in pool.laggards()]
            assert len(names) == 2
            assert all(name.endswith("stubborn_inner") for name in names), names
        finally:
            gate.set()
        wait(fs, timeout=WAIT)

    def test_a_cooperative_task_is_not_a_laggard(self) -> None:
        pool = CancellableThreadPoolExecutor(1)
        held = _Held(pool, 1, cooperative=True)
        pool.cancel_all()
        wait(held.futures, timeout=WAIT)
        assert pool.laggards() == []
        pool.shutdown()

    @pytest.mark.parametrize(("grace", "n"), [(0.05, 2), (0, 1)])
    def test_shutdown_logs_each_laggard_once(self, grace: float, n: int) -> None:
        pool = CancellableThreadPoolExecutor(n, laggard_grace=grace)
        held = _Held(pool, n, cooperative=False)
        reports = _Reports(release_after=n, gate=held.gate)
        logger = logging.getLogger("cancellable")
        logger.addHandler(reports)
        try:
            pool.cancel_all("closing")
            # The tasks end only once shutdown has reported every one of them.
            pool.shutdown(wait=True)
        finally:
            logger.removeHandler(reports)
        assert len(reports.messages) == n
        assert all("hold_stubbornly" in m and "'closing'" in m for m in reports.messages)

    def test_grace_at_the_edges(self, pool: CancellableThreadPoolExecutor) -> None:
        held = _Held(pool, 1, cooperative=False)
        pool.cancel_all("edges")
        try:
            assert [lag.reason for lag in pool.laggards(0)] == ["edges"]
            assert [lag.reason for lag in pool.laggards(0.0)] == ["edges"]
            assert pool.laggards(1e10) == []
            assert pool.laggards(float("inf")) == []
        finally:
            held.gate.set()

    def test_a_huge_laggard_grace_waits_without_reporting(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # 1e10 ("never report") once overflowed the C lock's timeout in the
        # wait that follows each report check. The stubborn task is released
        # right after the check, so the wait always runs with that timeout.
        pool = CancellableThreadPoolExecutor(1, laggard_grace=1e10)
        held = _Held(pool, 1, cooperative=False)
        original = _executor._Core.report_laggards

        def check_then_release(core: Any, reported: set[int]) -> float | None:
            due = original(core, reported)
            held.gate.set()
            return due

        monkeypatch.setattr(_executor._Core, "report_laggards", check_then_release)
        reports = _Reports(release_after=1, gate=threading.Event())
        logger = logging.getLogger("cancellable")
        logger.addHandler(reports)
        try:
            pool.cancel_all("quietly")
            pool.shutdown(wait=True)
        finally:
            held.gate.set()
            logger.removeHandler(reports)
        assert reports.messages == []
        assert held.futures[0].done()

    def test_grace_is_checked(self, pool: CancellableThreadPoolExecutor) -> None:
        with pytest.raises(ValueError, match="grace"):
            pool.laggards(-1)

    def test_cancelled_task_that_ends_is_dropped_from_the_report(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        held = _Held(pool, 1, cooperative=False)
        pool.cancel_all()
        assert len(pool.laggards()) == 1
        held.gate.set()
        wait(held.futures, timeout=WAIT)
        assert pool.laggards() == []
        assert not held.futures[0].cancelled()  # it ignored the cancel and returned
        with pytest.raises(OperationCancelledError):
            pool.submit(int, token=_cancelled_token()).result(timeout=WAIT)


def _cancelled_token() -> object:
    source = CancellationTokenSource()
    source.cancel()
    return source.token


@pytest.mark.timeout(60)
def test_ctrl_c_at_exit_prints_the_stuck_task_to_stderr() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                r"""
                import os, threading
                from cancellable import CancellableThreadPoolExecutor
                gate = threading.Event()
                def stuck_in_a_c_call():
                    os.write(1, b"started\n")
                    gate.wait()
                ex = CancellableThreadPoolExecutor(1, laggard_grace=0.1)
                ex.submit(stuck_in_a_c_call)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline().strip() == "started"
        interrupt_when_blocked(proc)  # the first Ctrl-C: cancel, then wait for tasks
        report = ""
        for line in proc.stderr:
            report += line
            if "in stuck_in_a_c_call" in line:
                break
        interrupt_when_blocked(proc)  # the second one stops waiting
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert "a cancelled task is still running: stuck_in_a_c_call" in report
    assert "interrupted while waiting for tasks at exit" in report
