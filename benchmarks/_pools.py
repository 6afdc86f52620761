"""The thread pools under comparison, each behind one small adapter.

Every adapter offers the same five operations, so a workload is written once
and run against each implementation:

- ``submit(fn, *args)`` queues a call and returns a handle (a future, or
  ``None`` for the raw floor);
- ``wait(handles)`` blocks until those calls finished (``result()`` in order
  where there are futures);
- ``map(fn, items)`` returns an iterator of results;
- ``cancel_backlog(handles)`` drops every queued call that has not started,
  by the cheapest means the implementation offers;
- ``shutdown(wait=True)``.

``wake_task(started, resumed)`` submits a task that blocks until it is told to
stop by the implementation's own means and returns the zero-argument callable
that tells it: the cooperative cancel of each pool.

Implementations: the stdlib ``ThreadPoolExecutor``; ``cancellable`` without
tokens and with one token per task; pebble's ``ThreadPool`` (an optional
peer); and a raw floor of N threads pulling callables from a
``queue.SimpleQueue`` with no futures at all, which shows the limit.
"""

from __future__ import annotations

import itertools
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any

from cancellable import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancellationToken,
    CancellationTokenSource,
    current_token,
)

__all__ = [
    "STDLIB",
    "CancellablePool",
    "FloorPool",
    "PebblePool",
    "Pool",
    "StdlibPool",
    "available",
]

STDLIB = "stdlib ThreadPoolExecutor"
_TOKEN_NAMES = {
    "none": "cancellable",
    "per-task": "cancellable, token per task",
    "per-request": "cancellable, per-request token",
    "job": "cancellable, one job token",
}
_REPORTED_MISSING: set[str] = set()


class Pool:
    """The interface every adapter implements."""

    name = "?"

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._job_flag = threading.Event()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def wait(self, handles: list[Any]) -> None:
        for handle in handles:
            handle.result()

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        raise NotImplementedError

    def cancel_backlog(self, handles: list[Any]) -> None:
        for handle in handles:
            handle.cancel()

    def wake_task(
        self, started: Callable[[], object], resumed: Callable[[], object]
    ) -> Callable[[], object]:
        """Submit a task that blocks until the returned callable stops it."""
        stop = threading.Event()

        def task() -> None:
            started()
            stop.wait()
            resumed()

        self.submit(task)
        return stop.set

    def settle(self, handles: list[Any]) -> None:
        """Block until those calls finished, however they ended; never raises."""
        futures.wait(handles)

    def submit_job(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Submit a call of the one job that ``cancel_job`` stops (see ``job_check``)."""
        return self.submit(fn, *args)

    def job_check(self) -> Callable[[], object]:
        """What a job's task calls between steps: raises once the job is cancelled."""
        flag = self._job_flag = threading.Event()

        def check() -> None:
            if flag.is_set():
                raise futures.CancelledError

        return check

    def cancel_job(self, handles: list[Any]) -> None:
        """Cancel the job: drop its queued calls and tell its running ones to stop."""
        self._job_flag.set()
        for handle in handles:
            handle.cancel()

    def shutdown(self, wait: bool = True) -> None:
        raise NotImplementedError


class StdlibPool(Pool):
    """``concurrent.futures.ThreadPoolExecutor``; stops a task through an ``Event``."""

    name = STDLIB

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers)
        self._pool = ThreadPoolExecutor(max_workers)
        self.submit = self._pool.submit  # type: ignore[method-assign]

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        return self._pool.map(fn, items)

    def shutdown(self, wait: bool = True) -> None:
        # A cancelled backlog is dropped from the work queue rather than
        # walked by the workers one item at a time.
        self._pool.shutdown(wait=wait, cancel_futures=True)


class CancellablePool(Pool):
    """``CancellableThreadPoolExecutor``, without tokens or with a token per task.

    Without tokens the backlog goes with ``cancel_all()``. With
    ``tokens="per-task"`` every submit gets a fresh ``CancellationTokenSource``
    (the costliest way to use tokens) and the backlog still goes with
    ``cancel_all()``. With ``tokens="per-request"`` every submit gets a fresh
    ``CancellationTokenSource(app.token)``, a child of one long-lived
    application token: the pattern of a service that gives each request its
    own token. With ``tokens="job"`` every submit shares one job token and the
    backlog goes with that token's one ``cancel()``.

    ``package`` is the ``cancellable`` package to use: another tree's, loaded
    with `benchmarks._harness.load_tree`, for a before/after comparison.
    """

    def __init__(
        self,
        max_workers: int,
        tokens: str = "none",
        buffersize: int | None = None,
        package: ModuleType | None = None,
    ) -> None:
        super().__init__(max_workers)
        self.tokens = tokens
        self.buffersize = buffersize
        self._source: type[CancellationTokenSource] = (
            CancellationTokenSource if package is None else package.CancellationTokenSource
        )
        self._pool = (
            CancellableThreadPoolExecutor(max_workers)
            if package is None
            else package.CancellableThreadPoolExecutor(max_workers)
        )
        self._current = current_token if package is None else package.current_token
        self._job = self._source()
        self._app = self._source()
        self.name = _TOKEN_NAMES[tokens]
        if buffersize is not None:
            self.name += f", buffersize={buffersize}"
        if tokens == "none":
            self.submit = self._pool.submit  # type: ignore[method-assign]

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.tokens == "job":
            return self._pool.submit(fn, *args, token=self._job.token)
        if self.tokens == "per-request":
            request = self._source(self._app.token)
            return self._pool.submit(fn, *args, token=request.token)
        return self._pool.submit(fn, *args, token=self._source().token)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        token: CancellationToken | None = self._job.token if self.tokens == "job" else None
        return self._pool.map(fn, items, buffersize=self.buffersize, token=token)

    def cancel_backlog(self, handles: list[Any]) -> None:
        if self.tokens == "job":
            self._job.cancel()
            self._job = self._source()
        else:
            self._pool.cancel_all()

    def submit_job(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._pool.submit(fn, *args, token=self._job.token)

    def job_check(self) -> Callable[[], object]:
        return self._job.token.raise_if_cancellation_requested

    def cancel_job(self, handles: list[Any]) -> None:
        self._job.cancel()
        self._job = self._source()

    def wake_task(
        self, started: Callable[[], object], resumed: Callable[[], object]
    ) -> Callable[[], object]:
        current = self._current

        def task() -> None:
            token = current()
            started()
            token.wait()
            resumed()

        if self.tokens == "none":
            future: CancellableFuture[None] = self._pool.submit(task)
            return future.request_cancel
        source = self._source()
        self._pool.submit(task, token=source.token)
        return source.cancel

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


class PebblePool(Pool):
    """pebble's ``ThreadPool`` (optional): ``schedule()`` and plain futures."""

    name = "pebble ThreadPool"

    def __init__(self, max_workers: int) -> None:
        import pebble

        super().__init__(max_workers)
        self._pool = pebble.ThreadPool(max_workers=max_workers)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._pool.schedule(fn, args=args)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        return self._pool.map(fn, items).result()  # type: ignore[no-any-return]

    def shutdown(self, wait: bool = True) -> None:
        # stop() skips what is still queued (cancelled or not); join() polls
        # its manager thread, so a shutdown takes up to 0.1 s: never timed.
        self._pool.stop()
        if wait:
            self._pool.join()


class FloorPool(Pool):
    """N threads pulling callables from a ``queue.SimpleQueue``: no futures, no locks.

    Completions are counted by a latch built on ``itertools.count``, whose
    ``next()`` is one atomic builtin call: ``wait()`` sets the index of the
    last arrival it expects, then arrives itself, and whoever arrives last
    wakes it. ``map`` waits for the whole batch, then yields its results in
    completion order. A task is stopped by releasing a raw lock it blocks on:
    the cheapest wake-up a thread has.
    """

    name = "raw floor (SimpleQueue, no futures)"

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers)
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._arrivals = itertools.count()
        self._submitted = 0
        self._waits = 0
        self._target = -1
        self._done = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"floor-{i}", daemon=True)
            for i in range(max_workers)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        get = self._jobs.get
        arrive = self._arrivals.__next__
        while (job := get()) is not None:
            fn, args, sink = job
            try:
                result = fn(*args)
            except Exception:  # a stopped job's task; the floor keeps no outcomes
                result = None
            if sink is not None:
                sink(result)
            if arrive() == self._target:
                self._done.set()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._submitted += 1
        self._jobs.put((fn, args, None))

    def wait(self, handles: list[Any]) -> None:
        # Arrival indexes so far: every submitted call, plus one per earlier wait.
        self._target = self._submitted + self._waits
        if next(self._arrivals) != self._target:
            self._done.wait()
        self._waits += 1
        self._done = threading.Event()

    def settle(self, handles: list[Any]) -> None:
        self.wait(handles)

    def cancel_job(self, handles: list[Any]) -> None:
        self._job_flag.set()  # no handles: queued calls of the job run and return at once

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        # Results are collected with list.append (one atomic builtin call) and
        # handed over once the latch opens: in completion order, no per-item wake-up.
        results: list[Any] = []
        put = self._jobs.put
        sink = results.append
        for item in items:
            self._submitted += 1
            put((fn, (item,), sink))
        self.wait([])
        return iter(results)

    def cancel_backlog(self, handles: list[Any]) -> None:
        get = self._jobs.get_nowait
        try:
            while True:
                get()
                if next(self._arrivals) == self._target:  # a dropped call still counts
                    self._done.set()
        except queue.Empty:
            pass

    def wake_task(
        self, started: Callable[[], object], resumed: Callable[[], object]
    ) -> Callable[[], object]:
        gate = threading.Lock()
        gate.acquire()

        def task() -> None:
            started()
            gate.acquire()
            resumed()

        self.submit(task)
        return gate.release

    def shutdown(self, wait: bool = True) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


def _pebble_installed() -> bool:
    try:
        import pebble  # noqa: F401
    except ImportError:
        if "pebble" not in _REPORTED_MISSING:
            _REPORTED_MISSING.add("pebble")
            print(
                "pebble is not installed: skipping pebble.ThreadPool "
                "(pip install -e '.[bench]' adds it)",
                file=sys.stderr,
            )
        return False
    return True


def available(*, floor: bool = True, tokens: str = "per-task") -> dict[str, Callable[[int], Pool]]:
    """Factories (``max_workers -> Pool``) for every implementation installed here.

    The stdlib comes first (it is every table's baseline). A missing optional
    peer is left out with one message on stderr, never an error.
    """
    made: dict[str, Callable[[int], Pool]] = {
        STDLIB: StdlibPool,
        "cancellable": CancellablePool,
    }
    made[_TOKEN_NAMES[tokens]] = lambda workers: CancellablePool(workers, tokens)
    if _pebble_installed():
        made[PebblePool.name] = PebblePool
    if floor:
        made[FloorPool.name] = FloorPool
    return made
