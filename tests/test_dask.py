"""cancellable.dask.DaskExecutor on a real two-worker LocalCluster."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

distributed = pytest.importorskip(
    "distributed", reason="the Dask tests need the 'dask' extra: pip install -e '.[dask]'"
)

from tests import _process_tasks as tasks  # noqa: E402

from cancellable import (  # noqa: E402 (after the skip)
    CancellationToken,
    CancellationTokenSource,
    OperationCancelledError,
)
from cancellable import dask as cdask  # noqa: E402

WAIT = 20


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One real cluster for the run: two worker processes on localhost.

    Every Dask test is in this module, so module scope starts it once per
    session; closing it when the module ends keeps its client threads (which
    allocate on every heartbeat) out of the later memory-measuring tests.
    """
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c
    # Leave no thread of ours behind for later modules that count threads. The
    # one poll here: a set event's removal is a timer (``_LINGER``) that starts
    # the executor's I/O thread, which then ends after ``_IDLE`` idle seconds.
    deadline = time.monotonic() + cdask._LINGER + 4 * cdask._IDLE + 5
    while time.monotonic() < deadline and any(
        t.name.startswith("cancellable-dask") for t in threading.enumerate()
    ):
        time.sleep(0.05)


@pytest.fixture
def ex(client: Any) -> Iterator[cdask.DaskExecutor]:
    executor = cdask.DaskExecutor(client)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _started(client: Any) -> tuple[Any, str]:
    """A distributed.Event the task sets when it starts (no polling)."""
    name = f"test-started-{time.monotonic_ns()}"
    return distributed.Event(name, client=client), name


def signal_start(name: str) -> None:
    distributed.Event(name).set()


def wait_started_then_cancel(name: str) -> object:
    signal_start(name)
    return tasks.wait_for_cancel()


def started_then_cooperative(name: str) -> str:
    signal_start(name)
    return tasks.cooperative()


def started_then_gate(name: str, gate: str) -> str:
    signal_start(name)
    distributed.Event(gate).wait(WAIT)
    return "gated"


def scheduler_names(dask_scheduler: Any) -> list[str]:
    """On the scheduler: every event, variable and task key this package made."""
    events = [str(n) for n in dask_scheduler.extensions["events"]._events]
    variables = [str(n) for n in dask_scheduler.extensions["variables"].variables]
    keys = [str(k) for k in dask_scheduler.tasks]
    return [n for n in events + variables + keys if "cancellable-" in n]


def _wait_until_clean(client: Any) -> list[str]:
    # The one poll here: the scheduler's state is in another process and
    # lingers for the documented lease/linger seconds; nothing to wait on.
    deadline = time.monotonic() + 4 * (cdask._LEASE + cdask._LINGER)
    while True:
        left = client.run_on_scheduler(scheduler_names)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


class TestDask:
    def test_submit_and_map(self, ex: cdask.DaskExecutor) -> None:
        assert ex.submit(tasks.add, 1, 2).result(WAIT) == 3
        assert list(ex.map(tasks.add, range(5), range(5))) == [0, 2, 4, 6, 8]
        f = ex.submit(tasks.fail, "boom")
        with pytest.raises(ValueError, match="boom"):
            f.result(WAIT)

    def test_is_an_executor_and_never_closes_the_client(self, client: Any) -> None:
        executor = cdask.DaskExecutor(client)
        assert isinstance(executor, cf.Executor)
        assert executor.client is client
        executor.shutdown()
        assert client.status == "running"
        with pytest.raises(RuntimeError, match="after shutdown"):
            executor.submit(tasks.add, 1, 1)

    def test_current_token_is_a_local_token(self, ex: cdask.DaskExecutor) -> None:
        assert ex.submit(tasks.token_state).result(WAIT) == (True, False, "CancellationToken")

    def test_token_cancel_reaches_only_its_running_tasks(
        self, ex: cdask.DaskExecutor, client: Any
    ) -> None:
        (ev_a, start_a), (ev_b, start_b) = _started(client), _started(client)
        out_a, out_b = f"{start_a}-out", f"{start_b}-out"
        a, b = CancellationTokenSource(), CancellationTokenSource()
        fa = ex.submit(notice_and_report, start_a, out_a, token=a.token)
        fb = ex.submit(notice_and_report, start_b, out_b, token=b.token)
        assert ev_a.wait(WAIT)
        assert ev_b.wait(WAIT)
        a.cancel("stop a")
        assert fa.cancelled()  # at once, on the client
        assert distributed.Variable(out_a, client=client).get(timeout=WAIT)  # a noticed
        assert not fb.done()
        fb.request_cancel("only b")  # one task, through client.run
        assert fb.cancelled()
        assert distributed.Variable(out_b, client=client).get(timeout=WAIT)
        for name in (out_a, out_b):
            distributed.Variable(name, client=client).delete()
        ev_a.clear()
        ev_b.clear()

    def test_cooperative_task_frees_its_worker_thread(
        self, ex: cdask.DaskExecutor, client: Any
    ) -> None:
        # 4 worker threads in all: cancel 4 blocking tasks, then 4 more must run.
        cts = CancellationTokenSource()
        events = [_started(client) for _ in range(4)]
        fs = [ex.submit(started_then_cooperative, n, token=cts.token) for _, n in events]
        assert all(e.wait(WAIT) for e, _ in events)
        cts.cancel()
        assert all(f.cancelled() for f in fs)
        assert [f.result(WAIT) for f in [ex.submit(tasks.add, i, 0) for i in range(8)]] == list(
            range(8)
        )
        # Nothing is left running on the workers.
        states = client.run(cdask._worker_state)
        assert all(s["running"] == 0 for s in states.values())
        for e, _ in events:
            e.clear()

    def test_backlog_is_dropped_and_never_runs(self, ex: cdask.DaskExecutor, client: Any) -> None:
        gate = f"test-gate-{time.monotonic_ns()}"
        events = [_started(client) for _ in range(4)]
        blockers = [ex.submit(started_then_gate, n, gate) for _, n in events]
        assert all(e.wait(WAIT) for e, _ in events)
        cts = CancellationTokenSource()
        backlog = [ex.submit(tasks.pid, token=cts.token) for _ in range(200)]
        cts.cancel("drop")
        assert all(f.cancelled() for f in backlog)
        with pytest.raises(OperationCancelledError) as info:
            backlog[0].result()
        assert info.value.reason == "drop"
        distributed.Event(gate, client=client).set()
        assert [b.result(WAIT) for b in blockers] == ["gated"] * 4
        distributed.Event(gate, client=client).clear()
        for e, _ in events:
            e.clear()

    def test_already_cancelled_token_and_executor_token(self, client: Any) -> None:
        cts = CancellationTokenSource()
        cts.cancel()
        executor = cdask.DaskExecutor(client, token=cts.token)
        assert executor.submit(tasks.add, 1, 1).cancelled()
        executor.shutdown()
        other = cdask.DaskExecutor(client)
        f = other.submit(tasks.add, 1, 1, token=cts.token)
        assert f.cancelled()
        with pytest.raises(OperationCancelledError):
            f.result()
        other.shutdown()

    def test_future_cancel_true_only_before_start(
        self, ex: cdask.DaskExecutor, client: Any
    ) -> None:
        gate = f"test-gate-{time.monotonic_ns()}"
        events = [_started(client) for _ in range(4)]
        blockers = [ex.submit(started_then_gate, n, gate) for _, n in events]
        assert all(e.wait(WAIT) for e, _ in events)
        queued = ex.submit(tasks.add, 1, 1)
        assert queued.cancel()
        assert queued.cancelled()
        assert not blockers[0].cancel()
        distributed.Event(gate, client=client).set()
        assert blockers[0].result(WAIT) == "gated"
        distributed.Event(gate, client=client).clear()
        for e, _ in events:
            e.clear()

    def test_cancel_all_and_shutdown_cancel_futures(self, client: Any) -> None:
        executor = cdask.DaskExecutor(client)
        event, name = _started(client)
        running = executor.submit(started_then_cooperative, name)
        assert event.wait(WAIT)
        executor.cancel_all("all")
        assert running.cancelled()
        assert executor.submit(tasks.add, 2, 2).result(WAIT) == 4
        event2, name2 = _started(client)
        running2 = executor.submit(started_then_cooperative, name2)
        assert event2.wait(WAIT)
        executor.shutdown(wait=True, cancel_futures=True)
        assert running2.cancelled()
        event.clear()
        event2.clear()

    def test_a_with_block_left_by_an_exception_cancels_its_tasks(self, client: Any) -> None:
        event, name = _started(client)
        executor = cdask.DaskExecutor(client)
        running = executor.submit(started_then_cooperative, name)
        assert event.wait(WAIT)
        try:
            with executor:
                raise KeyError("leave")
        except KeyError:
            pass
        assert running.cancelled()
        assert running.token.reason == "the executor's with block was left by KeyError('leave')"
        event.clear()

    def test_unrelated_operation_cancelled_error_is_ordinary(self, ex: cdask.DaskExecutor) -> None:
        f = ex.submit(tasks.cancel_own_raise)
        assert isinstance(f.exception(WAIT), OperationCancelledError)

    def test_map_token_cancel_raises(self, ex: cdask.DaskExecutor, client: Any) -> None:
        cts = CancellationTokenSource()
        it = ex.map(tasks.cooperative, [None] * 3, token=cts.token)
        cts.cancel()
        with pytest.raises(OperationCancelledError):
            next(it)

    def test_map_timeout_cancels_running_calls(self, ex: cdask.DaskExecutor, client: Any) -> None:
        it = ex.map(tasks.cooperative, [None] * 4, timeout=0.5)
        with pytest.raises(TimeoutError):
            list(it)
        # All four worker threads are free again: the naps saw their tokens.
        assert [ex.submit(tasks.add, i, 0).result(WAIT) for i in range(4)] == [0, 1, 2, 3]
        states = client.run(cdask._worker_state)
        assert all(s["running"] == 0 for s in states.values())

    def test_bad_arguments(self, client: Any, ex: cdask.DaskExecutor) -> None:
        with pytest.raises(TypeError, match=r"client must be a distributed\.Client"):
            cdask.DaskExecutor(object())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="token"):
            cdask.DaskExecutor(client, token=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="fn must be callable"):
            ex.submit(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="token"):
            ex.submit(tasks.add, 1, 1, token="x")  # type: ignore[arg-type]
        assert ex.submit(tasks.add, 1, 1, token=CancellationToken.NONE).result(WAIT) == 2


def reason_of_cancel(name: str) -> str:
    signal_start(name)
    return tasks.reason_type()


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("no")

    def __repr__(self) -> str:
        return "<unpicklable reason>"


def test_reasons_travel_pickled_or_as_repr(client: Any) -> None:
    """The reason reaches the worker: check it through a task that reports it via an Event."""
    ex = cdask.DaskExecutor(client)
    try:
        for reason, expected in [(KeyError("k"), "KeyError:'k'"), (_Unpicklable(), None)]:
            event, name = _started(client)
            cts = CancellationTokenSource()
            out = distributed.Variable(f"{name}-out", client=client)
            f = ex.submit(report_reason, name, f"{name}-out", token=cts.token)
            assert event.wait(WAIT)
            cts.cancel(reason)
            assert f.cancelled()
            got = out.get(timeout=WAIT)
            assert got == (expected or "str:<unpicklable reason>")
            out.delete()
            event.clear()
    finally:
        ex.shutdown()


def report_reason(name: str, out: str) -> None:
    signal_start(name)
    distributed.Variable(out).set(tasks.reason_type())


@pytest.mark.timeout(60)
def test_nothing_left_on_the_scheduler(client: Any) -> None:
    ex = cdask.DaskExecutor(client)
    cts = CancellationTokenSource()
    assert ex.submit(tasks.add, 1, 1, token=cts.token).result(WAIT) == 2
    cancelled = CancellationTokenSource()
    event, name = _started(client)
    f = ex.submit(started_then_cooperative, name, token=cancelled.token)
    assert event.wait(WAIT)
    cancelled.cancel()
    assert f.cancelled()
    del f
    cts.close()
    cancelled.close()
    del cts, cancelled
    gc.collect()
    ex.shutdown(wait=True)
    assert _wait_until_clean(client) == []
    event.clear()


def test_cancel_notice_latency_is_event_driven(client: Any) -> None:
    """A running task notices the cancel through the watcher (no polling in the task)."""
    ex = cdask.DaskExecutor(client)
    try:
        event, name = _started(client)
        out = f"{name}-out"
        cts = CancellationTokenSource()
        ex.submit(notice_and_report, name, out, token=cts.token)
        assert event.wait(WAIT)
        sent = time.monotonic()
        cts.cancel()
        noticed = distributed.Variable(out, client=client).get(timeout=WAIT)
        assert noticed >= sent
        distributed.Variable(out, client=client).delete()
        event.clear()
    finally:
        ex.shutdown()


def notice_and_report(name: str, out: str) -> None:
    signal_start(name)
    distributed.Variable(out).set(tasks.notice_latency())


def test_many_threads_submitting_with_one_token(ex: cdask.DaskExecutor) -> None:
    cts = CancellationTokenSource()
    results: list[int] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        value = ex.submit(tasks.add, i, 0, token=cts.token).result(WAIT)
        with lock:
            results.append(value)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(results) == list(range(8))
