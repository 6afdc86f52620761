"""Process pools: per-task token overhead, cancelling a backlog, noticing a cancel.

Run with ``python -m benchmarks.bench_process [--quick]``. Compares
`CancellableProcessPoolExecutor` with the stdlib `ProcessPoolExecutor` and,
where installed (the ``bench`` extra), loky's and pebble's process pools, all
in this one process with the same start method (``forkserver``), variants
interleaved round by round. Targets are printed next to the figures.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

from benchmarks._harness import Row, cli, compare, header, markdown_table, quantile_table
from cancellable import CancellableProcessPoolExecutor, CancellationTokenSource, current_token

__all__ = ["run"]

_CTX = "forkserver"
_flag: Any = None  # the stdlib baseline's hand-rolled cancel flag, per worker


def noop() -> None:
    return None


def work(seconds: float) -> None:
    """A task that stands for real work: cooperative where it can be (our pool)."""
    tok = current_token()
    if tok.can_be_cancelled:
        tok.wait(seconds)
    else:
        time.sleep(seconds)


def _set_flag(flag: Any) -> None:
    global _flag
    _flag = flag


def wait_flag() -> float:
    """The stdlib's way to reach a running task: an inherited multiprocessing.Event."""
    _flag.wait(30)
    return time.monotonic()


def wait_token() -> float:
    current_token().wait(30)
    return time.monotonic()


def wait_forever() -> float:
    time.sleep(30)
    return time.monotonic()


def _pools(workers: int) -> dict[str, Callable[[], Any]]:
    ctx = multiprocessing.get_context(_CTX)
    pools: dict[str, Callable[[], Any]] = {
        "stdlib ProcessPoolExecutor": lambda: cf.ProcessPoolExecutor(workers, mp_context=ctx),
        "cancellable": lambda: CancellableProcessPoolExecutor(workers, mp_context=ctx),
    }
    try:
        import loky

        pools["loky"] = lambda: loky.ProcessPoolExecutor(workers)
    except ImportError:
        pass
    try:
        import pebble

        pools["pebble ProcessPool"] = lambda: pebble.ProcessPool(workers, context=ctx)
    except ImportError:
        pass
    return pools


def _submit(pool: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> cf.Future[Any]:
    if hasattr(pool, "schedule"):  # pebble
        return pool.schedule(fn, args=args)  # type: ignore[no-any-return]
    return pool.submit(fn, *args, **kwargs)  # type: ignore[no-any-return]


def _close(pool: Any) -> None:
    if hasattr(pool, "schedule"):
        pool.stop()
        pool.join()
    elif pool.__class__.__module__.startswith("loky"):
        pool.shutdown(wait=True, kill_workers=True)
    else:
        pool.shutdown(wait=True, cancel_futures=True)


def _warm(pool: Any, workers: int) -> None:
    cf.wait([_submit(pool, noop) for _ in range(workers * 4)])


def _round_trip(quick: bool, tiny: bool) -> str:
    n = 20 if tiny else 300 if quick else 2_000
    rounds = 2 if tiny else 5
    pools = {name: make() for name, make in _pools(1).items()}
    for pool in pools.values():
        _warm(pool, 1)
    cts = CancellationTokenSource()

    def sequential(pool: Any, **kwargs: Any) -> Callable[[], float]:
        def measure() -> float:
            start = time.perf_counter()
            for _ in range(n):
                _submit(pool, noop, **kwargs).result()
            return (time.perf_counter() - start) / n * 1e6

        return measure

    variants = {name: sequential(pool) for name, pool in pools.items()}
    variants["cancellable, token= per task"] = sequential(pools["cancellable"], token=cts.token)
    try:
        rows = compare(variants, rounds=rounds)
    finally:
        for pool in pools.values():
            _close(pool)
    table = markdown_table(
        f"Round trip of one no-op task, submit then result, one worker, {n:,} in a row",
        rows,
        baseline="stdlib ProcessPoolExecutor",
        unit="µs per task",
    )
    ratio = (
        _by(rows, "cancellable, token= per task").median
        / _by(rows, "stdlib ProcessPoolExecutor").median
    )
    verdict = "met" if ratio <= 1.2 else "MISSED"
    return f"{table}\n\nToken per task vs the stdlib: target <= 1.20: {verdict} ({ratio:.2f})"


def _throughput(quick: bool, tiny: bool) -> str:
    n = 50 if tiny else 1_000 if quick else 10_000
    rounds = 2 if tiny else 5
    pools = {name: make() for name, make in _pools(2).items()}
    for pool in pools.values():
        _warm(pool, 2)

    def batch(pool: Any) -> Callable[[], float]:
        def measure() -> float:
            start = time.perf_counter()
            cf.wait([_submit(pool, noop) for _ in range(n)])
            return n / (time.perf_counter() - start)

        return measure

    try:
        rows = compare({name: batch(pool) for name, pool in pools.items()}, rounds=rounds)
    finally:
        for pool in pools.values():
            _close(pool)
    return markdown_table(
        f"Throughput of {n:,} no-op tasks submitted at once, two workers",
        rows,
        baseline="stdlib ProcessPoolExecutor",
        unit="tasks/s",
        lower_is_better=False,
    )


def _quiesce(quick: bool, tiny: bool) -> str:
    backlog = 50 if tiny else 1_000
    rounds = 2 if tiny else 3 if quick else 5
    task = 0.02
    pools = {name: make() for name, make in _pools(2).items()}
    for pool in pools.values():
        _warm(pool, 2)

    def measure_for(name: str, pool: Any) -> Callable[[], float]:
        def measure() -> float:
            cts = CancellationTokenSource()
            if name == "cancellable":
                fs = [pool.submit(work, task, token=cts.token) for _ in range(backlog)]
            else:
                fs = [_submit(pool, work, task) for _ in range(backlog)]
            time.sleep(task * 3)  # the workers are busy with the first tasks
            start = time.perf_counter()
            if name == "cancellable":
                cts.cancel()
            else:
                for f in fs:
                    f.cancel()
            cf.wait(fs)
            return (time.perf_counter() - start) * 1e3

        return measure

    try:
        rows = compare(
            {name: measure_for(name, pool) for name, pool in pools.items()}, rounds=rounds
        )
    finally:
        for pool in pools.values():
            _close(pool)
    table = markdown_table(
        f"Cancel-to-quiesce: {backlog:,} tasks of {task * 1e3:.0f} ms queued on two workers, "
        "from the cancel until every future is done",
        rows,
        baseline="stdlib ProcessPoolExecutor",
        unit="ms",
    )
    return (
        f"{table}\n\nThe stdlib and loky cancel each future (the tasks already fed to a "
        "worker run to the end); pebble's cancel kills the worker of a running task; "
        "`cancellable` cancels one token, its running tasks wait on it and return."
    )


def _notice(quick: bool, tiny: bool) -> str:
    samples = 3 if tiny else 30 if quick else 200
    ctx = multiprocessing.get_context(_CTX)
    flag = ctx.Event()
    stdlib = cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=_set_flag, initargs=(flag,))
    ours = CancellableProcessPoolExecutor(1, mp_context=ctx)
    pebble_pool = None
    try:
        import pebble

        pebble_pool = pebble.ProcessPool(1, context=ctx)
    except ImportError:
        pass
    _warm(stdlib, 1)
    _warm(ours, 1)

    def started(f: cf.Future[Any]) -> None:
        # A running task cannot tell the parent it started without IPC of its
        # own; give it time to block (the latency is measured in the worker).
        time.sleep(0.02)
        assert not f.done()

    def stdlib_sample() -> float:
        flag.clear()
        f = stdlib.submit(wait_flag)
        started(f)
        sent = time.monotonic()
        flag.set()
        return (f.result() - sent) * 1e3

    def ours_sample() -> float:
        f = ours.submit(wait_token)
        started(f)
        sent = time.monotonic()
        f.request_cancel()
        cf.wait([f])
        # The task returned its notice time, but the future ends cancelled only
        # when an OperationCancelledError escapes; wait_token returns instead.
        return (f.result() - sent) * 1e3 if not f.cancelled() else float("nan")

    variants: dict[str, Callable[[], float]] = {
        "stdlib + inherited multiprocessing.Event": stdlib_sample,
        "cancellable token": ours_sample,
    }
    if pebble_pool is not None:

        def pebble_sample() -> float:
            f = pebble_pool.schedule(wait_forever)
            started(f)
            sent = time.monotonic()
            f.cancel()  # kills the worker; the future is done once it is gone
            cf.wait([f])
            return (time.monotonic() - sent) * 1e3

        variants["pebble cancel (kills the worker)"] = pebble_sample
    try:
        rows = compare(variants, rounds=samples)
    finally:
        stdlib.shutdown()
        ours.shutdown()
        if pebble_pool is not None:
            pebble_pool.stop()
            pebble_pool.join()
    title = (
        f"**Cancel-to-notice for a running task** (ms from the cancel in the parent until "
        f"the task runs again in its worker; pebble: until its future is done; "
        f"{samples} samples each, interleaved)"
    )
    return "\n".join(quantile_table(title, rows, (0.5, 0.99), digits=3))


def _by(rows: list[Row], name: str) -> Row:
    return next(row for row in rows if row.name == name)


def run(quick: bool = False, *, tiny: bool = False) -> str:
    """Run every process-pool benchmark and return the results as markdown.

    ``tiny`` shrinks every size to a smoke test (for tests).
    """
    sections = [
        header("Process pools", "bench_process", quick, note=f"start method {_CTX}"),
        _round_trip(quick, tiny),
        _throughput(quick, tiny),
        _quiesce(quick, tiny),
        _notice(quick, tiny),
    ]
    return "\n\n".join(sections) + "\n"


def main() -> None:
    cli(run, __doc__)


if __name__ == "__main__":
    main()
