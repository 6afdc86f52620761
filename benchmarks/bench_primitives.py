"""Cancellable blocking primitives against the stdlib ones, in one process, interleaved.

Two kinds of figures:

- Uncontended throughput (ns per operation, median of rounds): lock
  acquire/release, semaphore acquire/release, queue put/get and ``wait`` on a
  set event, for the stdlib class, ours with no token, and ours with a live
  token. Goals: no token <= 1.1x the stdlib, a live token <= 1.5x; the
  pure-Python `Lock`/`RLock` <= 3x the C locks.
- Wake latency (microseconds from the trigger to the blocked thread running
  again, p50 and p99 over many samples): ``cancel()`` waking each primitive,
  against ``threading.Event.set()`` waking an ``Event.wait``. Goals: p50 <= 1.2x,
  p99 <= 2x.

Run ``python -m benchmarks.bench_primitives [--quick]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from functools import partial

import cancellable
from benchmarks._harness import Row, compare, machine, markdown_table, percentile
from cancellable import CancellationToken, CancellationTokenSource, OperationCancelledError

# -- uncontended throughput ----------------------------------------------------------


def _per_op(body: Callable[[int], None], n: int) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        body(n)
        return (time.perf_counter() - start) / n * 1e9

    return run


def _lock_loop(lock: object, token: CancellationToken | None) -> Callable[[int], None]:
    acquire = lock.acquire  # type: ignore[attr-defined]
    release = lock.release  # type: ignore[attr-defined]
    if token is None:

        def body(n: int) -> None:
            for _ in range(n):
                acquire()
                release()

    else:

        def body(n: int) -> None:
            for _ in range(n):
                acquire(token=token)
                release()

    return body


def _queue_loop(q: object, token: CancellationToken | None) -> Callable[[int], None]:
    put = q.put  # type: ignore[attr-defined]
    get = q.get  # type: ignore[attr-defined]
    if token is None:

        def body(n: int) -> None:
            for i in range(n):
                put(i)
                get()

    else:

        def body(n: int) -> None:
            for i in range(n):
                put(i, token=token)
                get(token=token)

    return body


def _event_loop(event: object, token: CancellationToken | None) -> Callable[[int], None]:
    event.set()  # type: ignore[attr-defined]
    wait = event.wait  # type: ignore[attr-defined]
    if token is None:

        def body(n: int) -> None:
            for _ in range(n):
                wait()

    else:

        def body(n: int) -> None:
            for _ in range(n):
                wait(token=token)

    return body


def _throughput(quick: bool, tiny: bool = False) -> list[tuple[str, list[Row], str]]:
    n = 200 if tiny else 20_000 if quick else 200_000
    rounds = 1 if tiny else 3 if quick else 9
    live = CancellationTokenSource().token
    workloads = {
        "Lock acquire/release": (threading.Lock, cancellable.Lock, _lock_loop),
        "RLock acquire/release": (threading.RLock, cancellable.RLock, _lock_loop),
        "Semaphore acquire/release": (threading.Semaphore, cancellable.Semaphore, _lock_loop),
        "Queue put/get": (queue.Queue, cancellable.Queue, _queue_loop),
        "Event.wait on a set event": (threading.Event, cancellable.Event, _event_loop),
    }
    tables = []
    for title, (theirs, ours, loop) in workloads.items():
        variants = {
            "stdlib": _per_op(loop(theirs(), None), n),
            "ours, no token": _per_op(loop(ours(), None), n),
            "ours, live token": _per_op(loop(ours(), live), n),
        }
        tables.append((title, compare(variants, rounds=rounds), "stdlib"))
    return tables


# -- wake latency ----------------------------------------------------------------------


class _Worker:
    """A long-lived thread that runs blocking calls and stamps when each returns.

    Workers in real programs are long-lived, so each variant gets its own
    thread for all its samples rather than a fresh thread per sample.
    """

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._resumed: queue.SimpleQueue[float] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._calls.get()) is not None:
            with contextlib.suppress(OperationCancelledError, threading.BrokenBarrierError):
                block()
            self._resumed.put(time.perf_counter())

    def sample(
        self, block: Callable[[], object], trigger: Callable[[], None], blocked: Callable[[], bool]
    ) -> float:
        """Run ``block``; once it waits, ``trigger``; return microseconds until it returned."""
        self._calls.put(block)
        while not blocked():
            time.sleep(0.0001)  # a benchmark may poll: it only sets up the measurement
        time.sleep(0.0005)  # let the thread settle into its blocking acquire
        start = time.perf_counter()
        trigger()
        return (self._resumed.get() - start) * 1e6

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join()


def _stdlib_event_set(worker: _Worker) -> float:
    event = threading.Event()
    return worker.sample(event.wait, event.set, lambda: bool(event._cond._waiters))  # type: ignore[attr-defined]


def _cancel_wake(
    worker: _Worker, make_block: Callable[[CancellationToken], Callable[[], object]]
) -> float:
    cts = CancellationTokenSource()
    block = make_block(cts.token)
    return worker.sample(block, cts.cancel, lambda: bool(cts.token._regs))


def _held(lock: cancellable.Lock | cancellable.RLock) -> cancellable.Lock | cancellable.RLock:
    lock.acquire()  # by the measuring thread, never released: the lock is dropped after
    return lock


def _cond_wait(token: CancellationToken) -> Callable[[], object]:
    cond = cancellable.Condition(cancellable.Lock())

    def block() -> object:
        with cond:
            return cond.wait(token=token)

    return block


def _full_queue() -> cancellable.Queue[int]:
    q: cancellable.Queue[int] = cancellable.Queue(1)
    q.put(0)
    return q


LATENCY: dict[str, Callable[[CancellationToken], Callable[[], object]]] = {
    "Event.wait": lambda t: lambda: cancellable.Event().wait(token=t),
    "Lock.acquire": lambda t: partial(_held(cancellable.Lock()).acquire, token=t),
    "RLock.acquire": lambda t: partial(_held(cancellable.RLock()).acquire, token=t),
    "Semaphore.acquire": lambda t: lambda: cancellable.Semaphore(0).acquire(token=t),
    "Condition.wait": _cond_wait,
    "Queue.get": lambda t: lambda: cancellable.Queue[int]().get(token=t),
    "Queue.put": lambda t: lambda: _full_queue().put(1, token=t),
    "Barrier.wait": lambda t: lambda: cancellable.Barrier(2).wait(token=t),
    "sleep": lambda t: lambda: cancellable.sleep(60, token=t),
    "result(future)": lambda t: lambda: cancellable.result(cf.Future(), token=t),
    "wait(futures)": lambda t: lambda: cancellable.wait([cf.Future()], token=t),
}


def _latency(quick: bool, tiny: bool = False) -> tuple[list[Row], str]:
    samples = 2 if tiny else 30 if quick else 300
    workers = [_Worker() for _ in range(len(LATENCY) + 1)]
    variants: dict[str, Callable[[], float]] = {
        "stdlib Event.set()": partial(_stdlib_event_set, workers[0])
    }
    for worker, (name, make) in zip(workers[1:], LATENCY.items(), strict=True):
        variants[f"cancel() -> {name}"] = partial(_cancel_wake, worker, make)
    try:
        rows = compare(variants, rounds=samples)
    finally:
        for worker in workers:
            worker.close()
    base = rows[0]
    lines = [
        "**Wake latency** (microseconds from the trigger to the blocked call returning or "
        f"raising on a long-lived thread; {samples} samples each, interleaved; "
        f"ratios to {base.name})",
        "",
        "| variant | p50 | p99 | p50 ratio | p99 ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    b50, b99 = percentile(base.samples, 0.5), percentile(base.samples, 0.99)
    for row in rows:
        p50, p99 = percentile(row.samples, 0.5), percentile(row.samples, 0.99)
        lines.append(f"| {row.name} | {p50:.1f} | {p99:.1f} | {p50 / b50:.2f} | {p99 / b99:.2f} |")
    return rows, "\n".join(lines)


def run(quick: bool, *, tiny: bool = False) -> str:
    """Run every comparison and return the results as markdown.

    ``tiny`` shrinks every size to a smoke test (for tests).
    """
    parts = [f"Machine: {machine()}", ""]
    for title, rows, baseline in _throughput(quick, tiny):
        parts += [markdown_table(title, rows, baseline=baseline, unit="ns per op"), ""]
    _, latency_table = _latency(quick, tiny)
    parts.append(latency_table)
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few seconds instead of minutes")
    args = parser.parse_args()
    print(run(args.quick))


if __name__ == "__main__":
    main()
