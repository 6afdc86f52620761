"""TaskGroup against plain submit, and to_thread against asyncio.to_thread.

Run ``python -m benchmarks.bench_group [--quick] [--group-only] [--rounds N]
[--against REV] [--cpu]``. Variants run interleaved in one process
(benchmarks/_harness.py); medians and ratios are reported.

- TaskGroup overhead: N no-op tasks on one 4-worker pool, either submitted
  plainly and then waited for with ``result()`` in order, or submitted to a
  ``TaskGroup(pool)`` whose exit waits for them; also with ``limit=4`` (the
  group-side queue, for information). Nanoseconds per task. ``--against REV``
  adds ``TaskGroup`` as it was at a git revision (its ``_group.py`` loaded
  beside today's, on today's executor), for a before/after in one process;
  ``--cpu`` times that block in process CPU time (every thread's), which
  other jobs on a shared machine disturb less than wall time.
- to_thread: N no-op calls awaited one after another in one event loop:
  `asyncio.to_thread` on the stdlib default executor, `cancellable.to_thread`
  on our pool, and `asyncio.to_thread` with our pool as the loop's default
  executor. Microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import subprocess
import sys
import time
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cancellable import CancellableThreadPoolExecutor, TaskGroup, to_thread

from ._harness import compare, machine, markdown_table

WORKERS = 4

Clock = Callable[[], float]


def _noop() -> None:
    pass


def _warm(pool: CancellableThreadPoolExecutor) -> None:
    for f in [pool.submit(_noop) for _ in range(WORKERS * 4)]:
        f.result()


def _plain(pool: CancellableThreadPoolExecutor, n: int, clock: Clock) -> float:
    start = clock()
    submit = pool.submit
    for f in [submit(_noop) for _ in range(n)]:
        f.result()
    return (clock() - start) / n * 1e9


def _group(
    pool: CancellableThreadPoolExecutor,
    n: int,
    limit: int | None = None,
    group_class: Any = TaskGroup,
    clock: Clock = time.perf_counter,
) -> float:
    start = clock()
    with group_class(pool, limit=limit) as tg:
        submit = tg.submit
        for _ in range(n):
            submit(_noop)
    return (clock() - start) / n * 1e9


def group_at(rev: str) -> Any:
    """The ``TaskGroup`` class of ``src/cancellable/_group.py`` at git revision ``rev``.

    Loaded as a sibling module of today's ``cancellable._group`` (so its
    relative imports find today's executor and tokens).

    Raises:
        subprocess.CalledProcessError: git does not know ``rev``.
    """
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{rev}:src/cancellable/_group.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = f"cancellable._group_at_{rev.replace('-', '_').replace('~', '_').replace('^', '_')}"
    module = types.ModuleType(name)
    module.__package__ = "cancellable"
    sys.modules[name] = module
    exec(compile(source, f"{rev}:src/cancellable/_group.py", "exec"), module.__dict__)
    return module.TaskGroup


def _group_overhead(
    quick: bool,
    tiny: bool,
    rounds: int | None = None,
    against: str | None = None,
    cpu: bool = False,
) -> str:
    n = 200 if tiny else 20_000 if quick else 100_000
    if rounds is None:
        rounds = 1 if tiny else 5 if quick else 15
    pool = CancellableThreadPoolExecutor(WORKERS)
    try:
        _warm(pool)
        clock: Clock = time.process_time if cpu else time.perf_counter
        variants = {
            "plain submit + result()": lambda: _plain(pool, n, clock),
            "TaskGroup(pool)": lambda: _group(pool, n, None, TaskGroup, clock),
        }
        if against is not None:
            old = group_at(against)
            variants[f"TaskGroup(pool) at {against}"] = lambda: _group(pool, n, None, old, clock)
        variants["TaskGroup(pool, limit=4)"] = lambda: _group(pool, n, 4, TaskGroup, clock)
        rows = compare(variants, rounds=rounds)
    finally:
        pool.shutdown()
    title = f"TaskGroup overhead per task ({n:,} no-op tasks, {WORKERS} workers, same pool)"
    unit = "ns of process CPU time per task" if cpu else "ns per task"
    return markdown_table(title, rows, baseline="plain submit + result()", unit=unit)


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


def run(
    quick: bool = False,
    *,
    tiny: bool = False,
    group_only: bool = False,
    rounds: int | None = None,
    against: str | None = None,
    cpu: bool = False,
) -> str:
    """Run the TaskGroup and to_thread benchmarks and return markdown."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python -m benchmarks.bench_group" + (" --quick" if quick else "")
    if group_only:
        command += " --group-only"
    if rounds is not None:
        command += f" --rounds {rounds}"
    if against is not None:
        command += f" --against {against}"
    if cpu:
        command += " --cpu"
    header = (
        "### Structured concurrency and the asyncio bridge (`benchmarks/bench_group.py`)"
        f"\n\n`{command}` on {when}; {machine()}."
    )
    parts = [header, _group_overhead(quick, tiny, rounds, against, cpu)]
    if not group_only:
        parts.append(_to_thread(quick, tiny))
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--group-only", action="store_true", help="skip the to_thread block")
    parser.add_argument("--rounds", type=int, help="rounds of the TaskGroup block")
    parser.add_argument("--against", metavar="REV", help="also time TaskGroup as of git REV")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="time the TaskGroup block in process CPU time (steadier on a busy machine)",
    )
    args = parser.parse_args()
    print(
        run(
            quick=args.quick,
            group_only=args.group_only,
            rounds=args.rounds,
            against=args.against,
            cpu=args.cpu,
        )
    )


if __name__ == "__main__":
    main()
