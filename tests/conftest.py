"""Shared fixtures: a fake deadline clock and a guard against leaked threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from cancellable import CancellableThreadPoolExecutor, _timer


class FakeClock:
    """A deadline clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> int:
        """Move time forward and fire, on this thread, every deadline now due."""
        self.now += seconds
        return _timer.TIMER.run_due()


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    fake = FakeClock()
    previous = _timer.set_clock(fake)
    try:
        yield fake
    finally:
        _timer.set_clock(previous)


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads running (other than the shared timer)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.name != "cancellable-timer"]
    for thread in leaked:
        thread.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"threads left running: {still}"


@pytest.fixture
def pool() -> Iterator[CancellableThreadPoolExecutor]:
    """A two-worker pool, shut down (cancelling what is left) after the test."""
    ex = CancellableThreadPoolExecutor(max_workers=2)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def occupy_workers(
    pool: CancellableThreadPoolExecutor, n: int
) -> tuple[threading.Event, list[Future[Any]]]:
    """Keep ``n`` workers busy until the returned gate is set; return once all run.

    Returns the gate and the futures of the occupying tasks.
    """
    gate = threading.Event()
    started = threading.Barrier(n + 1)

    def hold() -> None:
        started.wait()
        gate.wait()

    futures: list[Future[Any]] = [pool.submit(hold) for _ in range(n)]
    started.wait(timeout=10)  # raises BrokenBarrierError rather than hang
    return gate, futures
