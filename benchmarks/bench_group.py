"""TaskGroup against plain submit, and to_thread against asyncio.to_thread.

Run ``python -m benchmarks.bench_group [--quick]``. Variants run interleaved
in one process (benchmarks/_harness.py); medians and ratios are reported.

- TaskGroup overhead: N no-op tasks on one 4-worker pool, either submitted
  plainly and then waited for with ``result()`` in order, or submitted to a
  ``TaskGroup(pool)`` whose exit waits for them; also with ``limit=4`` (the
  group-side queue, for information). Nanoseconds per task.
- to_thread: N no-op calls awaited one after another in one event loop:
  `asyncio.to_thread` on the stdlib default executor, `cancellable.to_thread`
  on our pool, and `asyncio.to_thread` with our pool as the loop's default
  executor. Microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import time
from concurrent.futures import ThreadPoolExecutor

from cancellable import CancellableThreadPoolExecutor, TaskGroup, to_thread

from ._harness import compare, machine, markdown_table

WORKERS = 4


def _noop() -> None:
    pass


def _warm(pool: CancellableThreadPoolExecutor) -> None:
    for f in [pool.submit(_noop) for _ in range(WORKERS * 4)]:
        f.result()


def _plain(pool: CancellableThreadPoolExecutor, n: int) -> float:
    start = time.perf_counter()
    submit = pool.submit
    for f in [submit(_noop) for _ in range(n)]:
        f.result()
    return (time.perf_counter() - start) / n * 1e9


def _group(pool: CancellableThreadPoolExecutor, n: int, limit: int | None = None) -> float:
    start = time.perf_counter()
    with TaskGroup(pool, limit=limit) as tg:
        submit = tg.submit
        for _ in range(n):
            submit(_noop)
    return (time.perf_counter() - start) / n * 1e9


def _group_overhead(quick: bool, tiny: bool) -> str:
    n = 200 if tiny else 20_000 if quick else 100_000
    rounds = 1 if tiny else 5 if quick else 9
    pool = CancellableThreadPoolExecutor(WORKERS)
    try:
        _warm(pool)
        rows = compare(
            {
                "plain submit + result()": lambda: _plain(pool, n),
                "TaskGroup(pool)": lambda: _group(pool, n),
                "TaskGroup(pool, limit=4)": lambda: _group(pool, n, 4),
            },
            rounds=rounds,
        )
    finally:
        pool.shutdown()
    title = f"TaskGroup overhead per task ({n:,} no-op tasks, {WORKERS} workers, same pool)"
    return markdown_table(title, rows, baseline="plain submit + result()", unit="ns per task")


async def _awaits(n: int, call: object) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await call()  # type: ignore[operator]
    return (time.perf_counter() - start) / n * 1e6


def _asyncio_to_thread(n: int) -> float:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(WORKERS))
        await asyncio.to_thread(_noop)
        return await _awaits(n, lambda: asyncio.to_thread(_noop))

    return asyncio.run(main())


def _ours(n: int, pool: CancellableThreadPoolExecutor) -> float:
    async def main() -> float:
        await to_thread(_noop, executor=pool)
        return await _awaits(n, lambda: to_thread(_noop, executor=pool))

    return asyncio.run(main())


def _asyncio_on_ours(n: int) -> float:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(CancellableThreadPoolExecutor(WORKERS))
        await asyncio.to_thread(_noop)
        return await _awaits(n, lambda: asyncio.to_thread(_noop))

    return asyncio.run(main())


def _to_thread(quick: bool, tiny: bool) -> str:
    n = 100 if tiny else 5_000 if quick else 20_000
    rounds = 1 if tiny else 5 if quick else 9
    pool = CancellableThreadPoolExecutor(WORKERS)
    try:
        rows = compare(
            {
                "asyncio.to_thread (stdlib pool)": lambda: _asyncio_to_thread(n),
                "cancellable.to_thread": lambda: _ours(n, pool),
                "asyncio.to_thread (our pool as default)": lambda: _asyncio_on_ours(n),
            },
            rounds=rounds,
        )
    finally:
        pool.shutdown()
    title = f"to_thread round trip ({n:,} no-op calls awaited in turn, {WORKERS} workers)"
    return markdown_table(
        title, rows, baseline="asyncio.to_thread (stdlib pool)", unit="µs per call"
    )


def run(quick: bool = False, *, tiny: bool = False) -> str:
    """Run the TaskGroup and to_thread benchmarks and return markdown."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python -m benchmarks.bench_group" + (" --quick" if quick else "")
    header = (
        "### Structured concurrency and the asyncio bridge (`benchmarks/bench_group.py`)"
        f"\n\n`{command}` on {when}; {machine()}."
    )
    return "\n\n".join([header, _group_overhead(quick, tiny), _to_thread(quick, tiny)]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    print(run(quick=parser.parse_args().quick))


if __name__ == "__main__":
    main()
