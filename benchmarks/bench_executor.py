"""CancellableThreadPoolExecutor against the stdlib ThreadPoolExecutor (and pebble).

Run ``python -m benchmarks.bench_executor [--quick]``. Every comparison runs
its variants interleaved in one process (benchmarks/_harness.py) and reports
medians and ratios to the stdlib. Workloads:

- submit+result: submit N no-op tasks to 4 workers, then ``result()`` in order;
  ours without tokens and with a fresh token per task; pebble's ThreadPool.
- map: ``list(pool.map(fn, range(N)))`` with 4 workers.
- cancel pending: N tasks queued behind blocked workers, then cancelled: ours
  through their one submit token, the stdlib by its per-future ``cancel()``.
- memory per pending task: tracemalloc growth per queued task.
- wake latency: a task blocked until cancelled; ours wakes from
  ``current_token().wait()`` after ``request_cancel()``, the stdlib's from
  ``Event.wait()`` after ``Event.set()``.
- Ctrl-C at exit: a child process whose cooperative tasks hold the exit; time
  from SIGINT to the process ending.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from cancellable import CancellableThreadPoolExecutor, CancellationTokenSource, current_token

from ._childproc import interrupt_when_blocked
from ._harness import compare, machine, markdown_table

try:
    import pebble
except ImportError:  # the optional "bench" extra
    pebble = None

WORKERS = 4


def _noop() -> None:
    pass


def _ident(x: int) -> int:
    return x


def _submit_result(make: Callable[[], Any], n: int, *, tokens: bool = False) -> float:
    pool = make()
    try:
        # Warm the workers up so thread start-up is not measured.
        for f in [pool.submit(_noop) for _ in range(WORKERS * 4)]:
            f.result()
        start = time.perf_counter()
        if tokens:
            fs = [pool.submit(_noop, token=CancellationTokenSource().token) for _ in range(n)]
        else:
            submit = pool.submit
            fs = [submit(_noop) for _ in range(n)]
        for f in fs:
            f.result()
        elapsed = time.perf_counter() - start
    finally:
        pool.shutdown(wait=True)
    return n / elapsed


def _pebble_submit_result(n: int) -> float:
    pool = pebble.ThreadPool(max_workers=WORKERS)
    try:
        for f in [pool.schedule(_noop) for _ in range(WORKERS * 4)]:
            f.result()
        start = time.perf_counter()
        schedule = pool.schedule
        fs = [schedule(_noop) for _ in range(n)]
        for f in fs:
            f.result()
        elapsed = time.perf_counter() - start
    finally:
        pool.close()
        pool.join()
    return n / elapsed


def _map(make: Callable[[], Executor], n: int) -> float:
    pool = make()
    try:
        list(pool.map(_ident, range(WORKERS * 4)))
        start = time.perf_counter()
        list(pool.map(_ident, range(n)))
        elapsed = time.perf_counter() - start
    finally:
        pool.shutdown(wait=True)
    return n / elapsed


def _blocked(pool: Executor) -> tuple[threading.Event, list[Future[Any]]]:
    gate = threading.Event()
    started = threading.Barrier(WORKERS + 1)

    def hold() -> None:
        started.wait()
        gate.wait()

    held = [pool.submit(hold) for _ in range(WORKERS)]
    started.wait()
    return gate, held


def _cancel_ours(n: int) -> float:
    pool = CancellableThreadPoolExecutor(WORKERS)
    gate, _ = _blocked(pool)
    cts = CancellationTokenSource()
    fs = [pool.submit(_noop, token=cts.token) for _ in range(n)]
    start = time.perf_counter()
    cts.cancel()
    elapsed = time.perf_counter() - start
    assert all(f.cancelled() for f in fs)
    gate.set()
    pool.shutdown(wait=True)
    return elapsed * 1e3


def _cancel_stdlib(n: int) -> float:
    pool = ThreadPoolExecutor(WORKERS)
    gate, _ = _blocked(pool)
    fs = [pool.submit(_noop) for _ in range(n)]
    start = time.perf_counter()
    for f in fs:
        f.cancel()
    elapsed = time.perf_counter() - start
    gate.set()
    pool.shutdown(wait=True)
    return elapsed * 1e3


def _memory(make: Callable[[], Executor], n: int) -> float:
    pool = make()
    gate, _ = _blocked(pool)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fs = [pool.submit(_ident, i) for i in range(n)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    gate.set()
    del fs
    pool.shutdown(wait=True)
    return (after - before) / n


def _wake_median(
    pool: Executor,
    rounds: int,
    arm: Callable[[], tuple[Callable[[], Callable[[], object]], Callable[[Future[Any]], object]]],
) -> float:
    """Median µs from a release to the blocked task running again.

    Each round, ``arm()`` gives ``prepare`` (run in the task before it says it
    is ready; returns the blocking call) and ``release(future)``.
    """
    samples = []
    for _ in range(rounds):
        prepare, release = arm()
        ready = threading.Event()
        resumed = threading.Event()
        woke: list[float] = []

        def task(
            prepare: Callable[[], Callable[[], object]] = prepare,
            ready: threading.Event = ready,
            woke: list[float] = woke,
            resumed: threading.Event = resumed,
        ) -> None:
            block = prepare()
            ready.set()
            block()
            woke.append(time.perf_counter())
            resumed.set()

        fut = pool.submit(task)
        ready.wait()
        time.sleep(0.0005)  # let the task block: the wake-up is what is timed
        start = time.perf_counter()
        release(fut)
        resumed.wait()
        samples.append(woke[0] - start)
        fut.result()
    samples.sort()
    return samples[len(samples) // 2] * 1e6


def _arm_token() -> tuple[Callable[[], Callable[[], object]], Callable[[Future[Any]], object]]:
    # The task's own token, touched before the task says it is ready.
    return (lambda: current_token().wait), lambda fut: fut.request_cancel()


def _arm_event() -> tuple[Callable[[], Callable[[], object]], Callable[[Future[Any]], object]]:
    stop = threading.Event()
    return (lambda: stop.wait), lambda fut: stop.set()


def _latency_ours(rounds: int) -> float:
    with CancellableThreadPoolExecutor(1) as pool:
        return _wake_median(pool, rounds, _arm_token)


def _latency_stdlib(rounds: int) -> float:
    with ThreadPoolExecutor(1) as pool:
        return _wake_median(pool, rounds, _arm_event)


_EXIT_CHILD = r"""
import os
from cancellable import CancellableThreadPoolExecutor, current_token, _executor
_executor._exit_wait_hooks.append(
    lambda phase: os.write(1, b"waiting\n") if phase == "waiting" else None
)
ex = CancellableThreadPoolExecutor(4)
for _ in range(4):
    ex.submit(lambda: (os.write(1, b"started\n"), current_token().wait()))
for _ in range(10_000):
    ex.submit(lambda: current_token().wait())
"""


def _ctrl_c_exit_seconds() -> float:
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-c", _EXIT_CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    seen = b""
    while seen.count(b"started") < 4 or b"waiting" not in seen:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    # The hook line comes just before the main thread blocks; a signal sent
    # before it really sleeps would wait for the next wake-up.
    interrupt_when_blocked(proc)
    start = time.perf_counter()
    try:
        proc.wait(timeout=60)
    finally:
        proc.kill()
    elapsed = time.perf_counter() - start
    proc.stdout.close()
    return elapsed


def run(quick: bool, *, tiny: bool = False) -> str:
    """Run every comparison and return the results as markdown.

    ``tiny`` shrinks every size to a smoke test (for tests).
    """
    n = 20_000 if quick else 200_000
    n_cancel = 10_000 if quick else 100_000
    n_mem = 5_000 if quick else 20_000
    rounds = 3 if quick else 5
    lat_rounds = 50 if quick else 300
    if tiny:
        n, n_cancel, n_mem, rounds, lat_rounds = 200, 200, 100, 1, 3
    out = [f"Machine: {machine()}", ""]

    def stdlib() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(WORKERS)

    def ours() -> CancellableThreadPoolExecutor:
        return CancellableThreadPoolExecutor(WORKERS)

    variants: dict[str, Callable[[], float]] = {
        "stdlib ThreadPoolExecutor": lambda: _submit_result(stdlib, n),
        "CancellableThreadPoolExecutor": lambda: _submit_result(ours, n),
        "Cancellable..., a token per task": lambda: _submit_result(ours, n, tokens=True),
    }
    if pebble is not None:
        variants["pebble ThreadPool"] = lambda: _pebble_submit_result(n)
    rows = compare(variants, rounds=rounds)
    out.append(
        markdown_table(
            f"{n:,} no-op submit+result, {WORKERS} workers",
            rows,
            baseline="stdlib ThreadPoolExecutor",
            unit="tasks/s",
            lower_is_better=False,
        )
    )
    if pebble is None:
        out.append("\n(pebble is not installed: `pip install -e '.[bench]'` adds it.)")
    out.append("")

    rows = compare(
        {
            "stdlib ThreadPoolExecutor": lambda: _map(stdlib, n),
            "CancellableThreadPoolExecutor": lambda: _map(ours, n),
        },
        rounds=rounds,
    )
    out.append(
        markdown_table(
            f"map over {n:,} items, {WORKERS} workers",
            rows,
            baseline="stdlib ThreadPoolExecutor",
            unit="items/s",
            lower_is_better=False,
        )
    )
    out.append("")

    rows = compare(
        {
            "stdlib per-future cancel() loop": lambda: _cancel_stdlib(n_cancel),
            "one token cancel": lambda: _cancel_ours(n_cancel),
        },
        rounds=rounds,
    )
    out.append(
        markdown_table(
            f"cancel {n_cancel:,} pending tasks",
            rows,
            baseline="stdlib per-future cancel() loop",
            unit="ms",
        )
    )
    out.append("")

    rows = compare(
        {
            "stdlib ThreadPoolExecutor": lambda: _memory(stdlib, n_mem),
            "CancellableThreadPoolExecutor": lambda: _memory(ours, n_mem),
        },
        rounds=rounds,
    )
    out.append(
        markdown_table(
            "memory per pending task (tracemalloc)",
            rows,
            baseline="stdlib ThreadPoolExecutor",
            unit="bytes",
        )
    )
    out.append("")

    rows = compare(
        {
            "stdlib Event.set() wake": lambda: _latency_stdlib(lat_rounds),
            "request_cancel() wake": lambda: _latency_ours(lat_rounds),
        },
        rounds=rounds,
    )
    out.append(
        markdown_table(
            "wake latency of a blocked task",
            rows,
            baseline="stdlib Event.set() wake",
            unit="µs, median of rounds",
        )
    )
    out.append("")
    exits = sorted(_ctrl_c_exit_seconds() for _ in range(rounds))
    out.append(
        "**Ctrl-C at interpreter exit** (4 cooperative running tasks, 10,000 queued): "
        f"the process ended {exits[len(exits) // 2] * 1e3:.0f} ms after SIGINT (median)."
    )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_executor")
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    args = parser.parse_args()
    print(run(args.quick))


if __name__ == "__main__":
    main()
