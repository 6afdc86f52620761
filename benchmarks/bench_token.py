"""Token core against its stdlib counterparts: flag reads, creation, callbacks, wake-up.

Run with ``python -m benchmarks.bench_token [--quick]``. Every comparison runs
ours and the stdlib in this one process, interleaved round by round (see
`benchmarks._harness`), and reports medians and ratios. Targets are printed
next to the figures; nothing here asserts them.

``--against DIR`` instead compares this tree's token core with another tree
of the package (``DIR`` holds its ``cancellable/``, e.g. an export of an
older commit's ``src``), imported in the same process under another name and
interleaved round by round with this one: the cancel loop and child creation,
before and after.
"""

from __future__ import annotations

import gc
import threading
import time
import timeit
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import cancellable
from benchmarks._harness import (
    Row,
    cli,
    compare,
    header,
    load_tree,
    markdown_table,
    percentile,
    quantile_table,
    timed,
)
from cancellable import CancellationToken, CancellationTokenSource

__all__ = ["against", "load_tree", "run"]


def _noop() -> None:
    pass


def _ns_per_op(
    stmt: str, setup: Callable[[], dict[str, object]], number: int
) -> Callable[[], float]:
    """A variant measuring ``stmt`` in ns per execution, over ``number`` runs."""

    def measure() -> float:
        timer = timeit.Timer(stmt, globals=setup())
        gc.collect()
        gc.disable()
        try:
            return timer.timeit(number) / number * 1e9
        finally:
            gc.enable()

    return measure


def _target(ratio: float, limit: float) -> str:
    verdict = "met" if ratio <= limit else "MISSED"
    return f"target <= {limit:.2f}: {verdict} ({ratio:.2f})"


def _ratio(rows: list[Row], name: str, baseline: str, q: float | None = None) -> float:
    by_name = {row.name: row for row in rows}
    if q is None:
        return by_name[name].median / by_name[baseline].median
    return percentile(by_name[name].samples, q) / percentile(by_name[baseline].samples, q)


def _flag_read(quick: bool, tiny: bool = False) -> str:
    number = 1_000 if tiny else 200_000 if quick else 2_000_000

    def env() -> dict[str, object]:
        return {"token": CancellationTokenSource().token, "event": threading.Event()}

    rows = compare(
        {
            "threading.Event.is_set()": _ns_per_op("event.is_set()", env, number),
            "token.is_cancellation_requested": _ns_per_op(
                "token.is_cancellation_requested", env, number
            ),
        },
        rounds=1 if tiny else 5 if quick else 15,
    )
    ratio = _ratio(rows, "token.is_cancellation_requested", "threading.Event.is_set()")
    table = markdown_table(
        "Reading the flag (not cancelled)", rows, baseline="threading.Event.is_set()", unit="ns/op"
    )
    return f"{table}\n\n{_target(ratio, 1.0)}"


def _create_child(quick: bool, tiny: bool = False) -> str:
    number = 100 if tiny else 20_000 if quick else 200_000

    def env() -> dict[str, object]:
        return {
            "Source": CancellationTokenSource,
            "parent": CancellationTokenSource().token,
            "Event": threading.Event,
        }

    rows = compare(
        {
            "threading.Event()": _ns_per_op("Event()", env, number),
            "CancellationTokenSource(parent).close()": _ns_per_op(
                "Source(parent).close()", env, number
            ),
            "CancellationTokenSource()": _ns_per_op("Source()", env, number),
        },
        rounds=1 if tiny else 5 if quick else 15,
    )
    ratio = _ratio(rows, "CancellationTokenSource(parent).close()", "threading.Event()")
    table = markdown_table(
        "Creating a linked child and closing it", rows, baseline="threading.Event()", unit="ns/op"
    )
    return f"{table}\n\n{_target(ratio, 1.5)}"


def _register(quick: bool, tiny: bool = False) -> str:
    number = 100 if tiny else 50_000 if quick else 500_000

    def env() -> dict[str, object]:
        return {"token": CancellationTokenSource().token, "fn": _noop, "d": {}}

    rows = compare(
        {
            "dict insert + delete (reference)": _ns_per_op("d[fn] = None; del d[fn]", env, number),
            "token.register(fn).unregister()": _ns_per_op(
                "token.register(fn).unregister()", env, number
            ),
        },
        rounds=1 if tiny else 5 if quick else 15,
    )
    return markdown_table(
        "Registering and unregistering a callback",
        rows,
        baseline="dict insert + delete (reference)",
        unit="ns/op",
    )


def _cancel_many(quick: bool, tiny: bool = False) -> str:
    sizes = [100] if tiny else [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    rounds = 1 if tiny else 3 if quick else 5
    lines = [
        "**Cancelling a source with n registrations** (median of "
        f"{rounds}; linear if ns per registration stays flat)",
        "",
        "| registrations | cancel() ms | ns per registration |",
        "| ---: | ---: | ---: |",
    ]
    for size in sizes:
        samples = []
        for _ in range(rounds):
            cts = CancellationTokenSource()
            token = cts.token
            for _ in range(size):
                token.register(_noop)
            samples.append(timed(cts.cancel))
            del cts, token
        row = Row(str(size), samples)
        lines.append(f"| {size:,} | {row.median * 1e3:.2f} | {row.median / size * 1e9:.1f} |")
    return "\n".join(lines)


def _children_memory(quick: bool, tiny: bool = False) -> str:
    count = 100 if tiny else 100_000 if quick else 1_000_000

    def closed(token: CancellationToken) -> None:
        for _ in range(count):
            CancellationTokenSource(token).close()

    def dropped(token: CancellationToken) -> None:
        for _ in range(count):
            CancellationTokenSource(token)

    lines = [
        f"**{count:,} linked children of one parent** (tracemalloc after gc.collect())",
        "",
        "| children | retained by the parent afterwards | peak while churning |",
        "| --- | ---: | ---: |",
    ]
    for name, churn in (("created and closed", closed), ("created and dropped", dropped)):
        parent = CancellationTokenSource()
        churn(parent.token)  # warm caches and free lists first
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            churn(parent.token)
            gc.collect()
            after, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        lines.append(f"| {name} | {after - before:+,} B | {peak - before:,} B |")
    return "\n".join(lines)


class _Waker:
    """One waiting thread; each sample hands it a fresh waitable and times its wake-up."""

    def __init__(self) -> None:
        self.job: Callable[[], object] | None = None
        self.go = threading.Semaphore(0)
        self.parked = threading.Semaphore(0)
        self.done = threading.Semaphore(0)
        self.woke_at = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            self.go.acquire()
            job = self.job
            if job is None:
                return
            self.parked.release()
            job()
            self.woke_at = time.perf_counter_ns()
            self.done.release()

    def sample(self, wait: Callable[[], object], signal: Callable[[], object]) -> float:
        self.job = wait
        self.go.release()
        self.parked.acquire()
        # Sleeping is the point here: give the waiter time to block in wait()
        # so that what follows measures a wake-up, not a fast path.
        time.sleep(0.0002)
        start = time.perf_counter_ns()
        signal()
        self.done.acquire()
        return (self.woke_at - start) / 1e3

    def stop(self) -> None:
        self.job = None
        self.go.release()
        self.thread.join()


def _wake_latency(quick: bool, tiny: bool = False) -> str:
    samples = 5 if tiny else 300 if quick else 10_000
    waker = _Waker()

    def event_sample() -> float:
        event = threading.Event()
        return waker.sample(event.wait, event.set)

    def token_sample() -> float:
        cts = CancellationTokenSource()
        return waker.sample(cts.token.wait, cts.cancel)

    gc.disable()
    try:
        rows = compare(
            {"Event.set() -> Event.wait()": event_sample, "cancel() -> token.wait()": token_sample},
            rounds=samples,
        )
    finally:
        gc.enable()
        waker.stop()
    base, ours = rows
    title = (
        f"**Wake latency** (µs from the signal to the waiter running again, {samples:,} "
        "samples each, interleaved)"
    )
    lines = quantile_table(title, rows, (0.5, 0.9, 0.99), digits=1)
    p50_ratio = percentile(ours.samples, 0.5) / percentile(base.samples, 0.5)
    p99_ratio = percentile(ours.samples, 0.99) / percentile(base.samples, 0.99)
    lines += ["", f"p50 {_target(p50_ratio, 1.2)}; p99 {_target(p99_ratio, 2.0)}"]
    return "\n".join(lines)


def _cancel_per_callback(package: ModuleType, size: int) -> Callable[[], float]:
    """ns per callback of one ``cancel()`` with ``size`` plain registrations."""

    def measure() -> float:
        source = package.CancellationTokenSource()
        token = source.token
        for _ in range(size):
            token.register(_noop)
        return timed(source.cancel) / size * 1e9

    return measure


def _cancel_per_child(package: ModuleType, size: int) -> Callable[[], float]:
    """ns per child of one ``cancel()`` reaching ``size`` children with a callback each."""

    def measure() -> float:
        parent = package.CancellationTokenSource()
        children = [package.CancellationTokenSource(parent.token) for _ in range(size)]
        for child in children:
            child.token.register(_noop)
        return timed(parent.cancel) / size * 1e9

    return measure


def _create(package: ModuleType, stmt: str, number: int) -> Callable[[], float]:
    def env() -> dict[str, object]:
        source = package.CancellationTokenSource
        return {"Source": source, "parent": source().token}

    return _ns_per_op(stmt, env, number)


def against(src: str | Path, quick: bool = False, *, tiny: bool = False) -> str:
    """Compare this tree's token core with the one in ``src``, interleaved; return markdown."""
    before = load_tree(src)
    trees = {"before": before, "after": cancellable}
    size = 100 if tiny else 20_000 if quick else 100_000
    children = 100 if tiny else 2_000 if quick else 20_000
    number = 100 if tiny else 20_000 if quick else 100_000
    rounds = 1 if tiny else 5 if quick else 11
    workloads: dict[str, Callable[[ModuleType], Callable[[], float]]] = {
        f"`cancel()` of {size:,} plain registrations, ns per callback": lambda p: (
            _cancel_per_callback(p, size)
        ),
        f"`cancel()` of a parent reaching {children:,} children (one callback each), "
        "ns per child": lambda p: _cancel_per_child(p, children),
        "`CancellationTokenSource()`, ns": lambda p: _create(p, "Source()", number),
        "`CancellationTokenSource(parent)`, dropped, ns": lambda p: _create(
            p, "Source(parent)", number
        ),
        "`CancellationTokenSource(parent).close()`, ns": lambda p: _create(
            p, "Source(parent).close()", number
        ),
    }
    lines = [
        f"**This tree against `{src}`** ({rounds} interleaved rounds, collector off while "
        "timing; median, and the best round, which a shared machine disturbs least; "
        "ratio after/before, lower is better)",
        "",
        "| workload | before | after | ratio | best before | best after | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for title, workload in workloads.items():
        rows = compare({name: workload(tree) for name, tree in trees.items()}, rounds=rounds)
        old, new = (row.median for row in rows)
        best_old, best_new = (min(row.samples) for row in rows)
        lines.append(
            f"| {title} | {old:.0f} | {new:.0f} | {new / old:.2f} "
            f"| {best_old:.0f} | {best_new:.0f} | {best_new / best_old:.2f} |"
        )
    return "\n".join(lines)


def run(quick: bool = False, *, tiny: bool = False) -> str:
    """Run every token benchmark and return the results as markdown.

    ``tiny`` shrinks every size to a smoke test (for tests).
    """
    sections = [
        header("Token core", "bench_token", quick),
        _flag_read(quick, tiny),
        _create_child(quick, tiny),
        _register(quick, tiny),
        _cancel_many(quick, tiny),
        _children_memory(quick, tiny),
        _wake_latency(quick, tiny),
    ]
    return "\n\n".join(sections) + "\n"


def main() -> None:
    cli(run, __doc__, against=against, module="bench_token")


if __name__ == "__main__":
    main()
