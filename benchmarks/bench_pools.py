"""Thread pools side by side: the stdlib, cancellable, pebble and a raw floor.

Run ``python -m benchmarks.bench_pools [--quick]`` (or the whole suite with
``python -m benchmarks``). Every workload runs its implementations (see
`benchmarks._pools`) interleaved round by round in this one process and
reports medians with ratios to the stdlib ``ThreadPoolExecutor``:

- submit+result: submit N no-op tasks to 4 workers, then wait for each in order;
- ``map`` over N items with 4 workers;
- cancel cost against backlog size: 4 workers held busy, a backlog of 1k to
  1M pending tasks, then the time to cancel the whole backlog (the stdlib's
  per-future ``cancel()`` loop, ``cancel_all()``, one job token);
- wake latency p50/p99 from the cancel to a cooperative task resuming;
- memory per pending task (tracemalloc);
- submit+result throughput against ``max_workers`` (1, 2, 4, 16, 64);
- time to the first result of ``map`` over N items;
- a mixed workload: N cooperative tasks, of which every tenth belongs to one
  job that is cancelled when half the tasks are done.

``plots(outdir)`` draws the last run's throughput against workers, cancel cost
against backlog and latency distribution as PNG files (matplotlib).
"""

from __future__ import annotations

import collections
import contextvars
import datetime
import gc
import itertools
import math
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import bench_executor
from benchmarks._harness import (
    Row,
    cli,
    compare,
    load_tree,
    machine,
    markdown_table,
    percentile,
    timed,
)
from benchmarks._pools import STDLIB, CancellablePool, FloorPool, Pool, StdlibPool, available

__all__ = ["plots", "run"]

WORKERS = bench_executor.WORKERS  # the pool size every fixed-size workload uses
SWEEP = (1, 2, 4, 16, 64)

# One colour per implementation in every plot.
_COLORS = {
    STDLIB: "C0",
    "cancellable": "C1",
    "cancellable, token per task": "C2",
    "cancellable, one job token": "C2",
    "cancellable, per-request token": "C4",
    "pebble ThreadPool": "C3",
    FloorPool.name: "C7",
}

# What the last run() measured, for plots().
_LAST: dict[str, Any] = {}
# Set in the submitting thread's context for `against`'s row with one.
_VAR: contextvars.ContextVar[int] = contextvars.ContextVar("bench_pools_var")


def _with_context_variable(measure: Callable[[], float]) -> Callable[[], float]:
    """``measure`` run with a context variable set, so every task copies a non-empty context."""

    def run() -> float:
        def inside() -> float:
            _VAR.set(1)
            return measure()

        return contextvars.copy_context().run(inside)

    return run


def _noop() -> None:
    pass


def _ident(x: int) -> int:
    return x


class _Progress:
    """One progress line on stderr: rewritten in place on a terminal, else one per step."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def __call__(self, text: str) -> None:
        line = f"  bench_pools {time.perf_counter() - self.started:6.1f} s  {text}"
        if self.tty:
            print(f"\r{line[:110]:<110}", end="", file=sys.stderr, flush=True)

    def step(self, text: str) -> None:
        if self.tty:
            self(text)
        else:
            print(
                f"  bench_pools {time.perf_counter() - self.started:6.1f} s  {text}",
                file=sys.stderr,
            )

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _warm(make: Callable[[int], Pool], workers: int) -> Pool:
    pool = make(workers)
    # Start the workers first so thread start-up is not what is measured,
    # and free what earlier variants left for the collector, so that no
    # variant pays for another's garbage.
    pool.wait([pool.submit(_noop) for _ in range(workers * 4)])
    gc.collect()
    return pool


# -- workloads: each returns one measurement of one implementation --------------------


def _submit_result(make: Callable[[int], Pool], workers: int, n: int) -> float:
    pool = _warm(make, workers)
    try:
        submit = pool.submit
        start = time.perf_counter()
        handles = [submit(_noop) for _ in range(n)]
        pool.wait(handles)
        return n / (time.perf_counter() - start)
    finally:
        pool.shutdown()


def _map(make: Callable[[int], Pool], n: int) -> float:
    pool = _warm(make, WORKERS)
    try:
        start = time.perf_counter()
        collections.deque(pool.map(_ident, range(n)), maxlen=0)
        return n / (time.perf_counter() - start)
    finally:
        pool.shutdown()


def _first_result(make: Callable[[int], Pool], n: int) -> float:
    pool = _warm(make, WORKERS)
    try:
        start = time.perf_counter()
        results = pool.map(_ident, range(n))
        next(results)
        elapsed = time.perf_counter() - start
        close = getattr(results, "close", None)
        if close is not None:
            close()  # the stdlib's and ours cancel what was not yielded
        return elapsed * 1e3
    finally:
        pool.shutdown()


def _cancel_cost(make: Callable[[int], Pool], n: int) -> float:
    pool = make(WORKERS)
    gate, _ = bench_executor._blocked(pool)
    try:
        submit = pool.submit
        handles = [submit(_noop) for _ in range(n)]
        elapsed = timed(lambda: pool.cancel_backlog(handles))
        if not isinstance(pool, FloorPool):
            assert all(handle.cancelled() for handle in handles[:: max(1, n // 1000)])
        return elapsed * 1e3
    finally:
        gate.set()
        pool.shutdown()


def _memory(make: Callable[[int], Pool], n: int) -> float:
    return bench_executor._memory(lambda: make(WORKERS), n)  # type: ignore[arg-type,return-value]


def _steps(check: Callable[[], object], tick: Callable[[], None], steps: int) -> None:
    for _ in range(steps):
        check()
        sum(range(40))  # a little work per step
    tick()


def _never() -> None:
    pass


def _mixed(make: Callable[[int], Pool], n: int, steps: int) -> tuple[float, float]:
    """Seconds for n tasks, and ms from cancelling the 10 % job until its tasks settled."""
    pool = _warm(make, WORKERS)
    try:
        finished = itertools.count(1)
        halfway = threading.Event()
        half = n // 2

        def tick() -> None:
            if next(finished) == half:
                halfway.set()

        check = pool.job_check()
        start = time.perf_counter()
        job: list[Any] = []
        handles: list[Any] = []
        for i in range(n):
            if i % 10 == 0:
                handle = pool.submit_job(_steps, check, tick, steps)
                job.append(handle)
            else:
                handle = pool.submit(_steps, _never, tick, steps)
            handles.append(handle)
        halfway.wait()
        cancelled_at = time.perf_counter()
        pool.cancel_job(job)
        settle_ms = float("nan")
        if not isinstance(pool, FloorPool):
            pool.settle(job)
            settle_ms = (time.perf_counter() - cancelled_at) * 1e3
        pool.settle(handles)
        return time.perf_counter() - start, settle_ms
    finally:
        pool.shutdown()


class _Waker:
    """A long-lived pool whose samples each time one cooperative task's wake-up."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.started: queue.SimpleQueue[None] = queue.SimpleQueue()
        self.resumed: queue.SimpleQueue[float] = queue.SimpleQueue()

    def sample(self) -> float:
        stop = self.pool.wake_task(
            lambda: self.started.put(None), lambda: self.resumed.put(time.perf_counter())
        )
        self.started.get()
        # Sleeping is the point here: let the task block in its wait, so that
        # what follows times a wake-up rather than a fast path.
        time.sleep(0.0005)
        start = time.perf_counter()
        stop()
        return float((self.resumed.get() - start) * 1e6)


# -- reports ---------------------------------------------------------------------------


def _ratio_note(rows: list[Row], higher_is_better: bool) -> str:
    """Name the implementations that beat each cancellable variant, if any."""
    by_name = {row.name: row.median for row in rows}
    ours = [name for name in by_name if name.startswith("cancellable")]
    peers = [name for name in by_name if not name.startswith(("cancellable", "raw floor"))]
    behind = []
    for name in ours:
        for peer in peers:
            better = (
                by_name[peer] > by_name[name] if higher_is_better else by_name[peer] < by_name[name]
            )
            if better:
                behind.append(f"{name} is behind {peer}")
    return "; ".join(behind)


def _table(title: str, rows: list[Row], unit: str, *, higher: bool) -> str:
    table = markdown_table(title, rows, baseline=STDLIB, unit=unit, lower_is_better=not higher)
    note = _ratio_note(rows, higher)
    return table + (f"\n\nBehind a peer: {note}." if note else "")


def _sizes(quick: bool, tiny: bool) -> dict[str, Any]:
    if tiny:
        return {
            "n": 300, "map": 300, "rounds": 1, "backlogs": (100, 1000), "samples": 5,
            "memory": 200, "sweep_n": 200, "sweep": (1, 4), "first": 300, "mixed": 200,
            "steps": 2,
        }  # fmt: skip
    if quick:
        return {
            "n": 10_000, "map": 10_000, "rounds": 3, "backlogs": (1_000, 10_000, 100_000),
            "samples": 150, "memory": 5_000, "sweep_n": 4_000, "sweep": SWEEP,
            "first": 10_000, "mixed": 3_000, "steps": 20,
        }  # fmt: skip
    return {
        "n": 200_000, "map": 200_000, "rounds": 5,
        "backlogs": (1_000, 10_000, 100_000, 1_000_000), "samples": 2_000, "memory": 20_000,
        "sweep_n": 50_000, "sweep": SWEEP, "first": 200_000, "mixed": 20_000, "steps": 20,
    }  # fmt: skip


def run(quick: bool = False, *, tiny: bool = False) -> str:
    """Run every pool workload and return the results as markdown.

    ``tiny`` shrinks every size to a smoke test of a second or so (for tests).
    """
    size = _sizes(quick, tiny)
    rounds = size["rounds"]
    progress = _Progress()
    pools = available()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python -m benchmarks.bench_pools" + (" --quick" if quick else "")
    skipped = "" if "pebble ThreadPool" in pools else " pebble is not installed: no pebble rows."
    out = [
        "### Thread pools (`benchmarks/bench_pools.py`)",
        f"`{command}` on {when}; {machine()}. Medians of {rounds} interleaved rounds; "
        f"ratios to the {STDLIB}.{skipped}",
    ]

    summary: list[tuple[str, bool, dict[str, float]]] = []

    def note(label: str, rows: list[Row], *, higher: bool) -> None:
        summary.append((label, higher, {row.name: row.median for row in rows}))

    def measure(title: str, variants: dict[str, Callable[[], float]]) -> list[Row]:
        progress.step(title)
        return compare(variants, rounds=rounds, progress=lambda text: progress(f"{title}: {text}"))

    n = size["n"]
    # The per-request pattern (a child of one app token per task) only here.
    submit_pools = dict(pools)
    submit_pools["cancellable, per-request token"] = lambda workers: CancellablePool(
        workers, "per-request"
    )
    rows = measure(
        f"submit+result {n:,}",
        {
            name: (lambda make=make: _submit_result(make, WORKERS, n))
            for name, make in submit_pools.items()
        },
    )
    out.append(
        _table(f"{n:,} no-op submit+result, {WORKERS} workers", rows, "tasks/s", higher=True)
    )
    _LAST["submit_result"] = rows
    note(f"submit+result, {n:,} no-op tasks, {WORKERS} workers (tasks/s)", rows, higher=True)

    n = size["map"]
    map_pools = {k: v for k, v in pools.items() if "token per task" not in k}
    rows = measure(
        f"map {n:,}", {name: (lambda make=make: _map(make, n)) for name, make in map_pools.items()}
    )
    out.append(_table(f"map over {n:,} items, {WORKERS} workers", rows, "items/s", higher=True))
    note(f"map over {n:,} items, {WORKERS} workers (items/s)", rows, higher=True)

    # Cancel cost against backlog: the token variant shares one job token.
    cancel_pools = {k: v for k, v in pools.items() if "token per task" not in k}
    cancel_pools["cancellable, one job token"] = lambda workers: CancellablePool(workers, "job")
    cancel: dict[int, list[Row]] = {}
    for backlog in size["backlogs"]:
        cancel[backlog] = measure(
            f"cancel {backlog:,} pending",
            {
                name: (lambda make=make, backlog=backlog: _cancel_cost(make, backlog))
                for name, make in cancel_pools.items()
            },
        )
    out.append(_cancel_table(cancel))
    _LAST["cancel"] = cancel
    backlog = 100_000 if 100_000 in cancel else max(cancel)
    note(f"cancel {backlog:,} pending tasks (ms)", cancel[backlog], higher=False)

    latency = _latency(pools, size["samples"], progress)
    out.append(_latency_table(latency, size["samples"]))
    _LAST["latency"] = latency
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        summary.append(
            (
                f"wake latency {label}, cancel to resume (µs)",
                False,
                {row.name: percentile(row.samples, q) for row in latency},
            )
        )

    n = size["memory"]
    rows = measure(
        f"memory {n:,} pending",
        {name: (lambda make=make: _memory(make, n)) for name, make in pools.items()},
    )
    out.append(_table(f"memory per pending task ({n:,} queued)", rows, "bytes", higher=False))
    note("memory per pending task (bytes)", rows, higher=False)

    sweep: dict[int, list[Row]] = {}
    n = size["sweep_n"]
    for workers in size["sweep"]:
        sweep[workers] = measure(
            f"submit+result {n:,} with {workers} workers",
            {
                name: (lambda make=make, workers=workers: _submit_result(make, workers, n))
                for name, make in pools.items()
            },
        )
    out.append(_sweep_table(sweep, n))
    _LAST["sweep"] = sweep
    for workers in (min(sweep), max(sweep)):
        note(
            f"submit+result, {n:,} tasks, {workers} worker{'s' * (workers > 1)} (tasks/s)",
            sweep[workers],
            higher=True,
        )

    n = size["first"]
    first_pools = dict(map_pools)
    first_pools[f"cancellable, buffersize={WORKERS * 2}"] = lambda workers: CancellablePool(
        workers, buffersize=WORKERS * 2
    )
    rows = measure(
        f"first result of map over {n:,}",
        {name: (lambda make=make: _first_result(make, n)) for name, make in first_pools.items()},
    )
    out.append(
        _table(f"time to the first result of map over {n:,} items", rows, "ms", higher=False)
    )
    note(f"time to the first result of map over {n:,} items (ms)", rows, higher=False)

    n, steps = size["mixed"], size["steps"]
    mixed_pools = {k: v for k, v in pools.items() if "token per task" not in k}
    settle: dict[str, list[float]] = {name: [] for name in mixed_pools}

    def mixed(name: str, make: Callable[[int], Pool]) -> float:
        seconds, settle_ms = _mixed(make, n, steps)
        settle[name].append(settle_ms)
        return n / seconds

    rows = measure(
        f"mixed {n:,}",
        {
            name: (lambda name=name, make=make: mixed(name, make))
            for name, make in mixed_pools.items()
        },
    )
    out.append(_mixed_table(rows, settle, n, steps))
    note(f"mixed, {n:,} tasks, a tenth cancelled mid-run (tasks/s)", rows, higher=True)
    out.insert(2, _summary_table(summary))
    progress.done()
    return "\n\n".join(out) + "\n"


def against(src: str | Path, quick: bool = False, *, tiny: bool = False) -> str:
    """This tree's pool against the one in ``src``/cancellable, with the stdlib in each round.

    The submit+result workload (no-op tasks on 4 workers) without tokens,
    with a token per task and with a per-request token, again without tokens
    from a thread with a context variable set (so each task keeps a copy of
    a non-empty context), and eager ``map``, for both trees and the stdlib,
    all interleaved in one process: each
    figure is a multiple of the stdlib's median, and the last column
    compares the two trees directly. Returns markdown.
    """
    before = load_tree(src)
    size = _sizes(quick, tiny)
    n = size["n"]
    rounds = 1 if tiny else 5 if quick else 11
    kinds = {
        "none": "submit, no token",
        "per-task": "submit, a token per task",
        "per-request": "submit, a per-request token",
    }
    varied = "submit, no token, a context variable set"
    trees = (("before", before), ("after", None))
    variants: dict[str, Callable[[], float]] = {
        STDLIB: lambda: _submit_result(StdlibPool, WORKERS, n),
        f"{STDLIB}, map": lambda: _map(StdlibPool, n),
    }
    for label, package in trees:
        for kind in kinds:
            variants[f"{label}, {kind}"] = lambda kind=kind, package=package: _submit_result(
                lambda workers: CancellablePool(workers, kind, package=package), WORKERS, n
            )
        variants[f"{label}, map"] = lambda package=package: _map(
            lambda workers: CancellablePool(workers, package=package), n
        )
        variants[f"{label}, {varied}"] = _with_context_variable(
            lambda package=package: _submit_result(
                lambda workers: CancellablePool(workers, package=package), WORKERS, n
            )
        )
    rows = {row.name: row.median for row in compare(variants, rounds=rounds)}
    lines = [
        f"**This tree against `{src}`**: {n:,} no-op tasks, {WORKERS} workers, submitted "
        f"then each `result()` read, or through `map` ({rounds} interleaved rounds with the "
        f"{STDLIB}; medians of tasks/s as multiples of the stdlib's, and after/before, "
        "higher is better)",
        "",
        "| workload | before | after | after / before |",
        "| --- | ---: | ---: | ---: |",
    ]
    titles = {**kinds, varied: varied, "map": f"`map` over {n:,} items (items/s)"}
    for kind, title in titles.items():
        base = rows[f"{STDLIB}, map" if kind == "map" else STDLIB]
        old, new = rows[f"before, {kind}"], rows[f"after, {kind}"]
        lines.append(f"| {title} | {old / base:.2f}x | {new / base:.2f}x | {new / old:.3f} |")
    return "\n".join(lines)


def _summary_table(summary: list[tuple[str, bool, dict[str, float]]]) -> str:
    """One row per workload: the stdlib's median, then every variant's ratio to it."""
    names: list[str] = []
    for _, _, medians in summary:
        names += [name for name in medians if name != STDLIB and name not in names]
    names.sort(key=lambda name: (not name.startswith("cancellable"), name == FloorPool.name))
    lines = [
        f"**Summary** (medians; the {STDLIB}'s figure, then each variant as a multiple of it; "
        "better is the direction in the second column; — where a variant does not apply; "
        "bold where a cancellable variant is behind pebble)",
        "",
        f"| workload | better | {STDLIB} | " + " | ".join(names) + " |",
        "| --- | :---: | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for label, higher, medians in summary:
        base = medians[STDLIB]
        peer = medians.get("pebble ThreadPool")
        cells = []
        for name in names:
            if name not in medians:
                cells.append("—")
                continue
            cell = f"{medians[name] / base:.2f}x"
            behind = peer is not None and (medians[name] < peer if higher else medians[name] > peer)
            cells.append(f"**{cell}**" if name.startswith("cancellable") and behind else cell)
        arrow = "higher" if higher else "lower"
        lines.append(f"| {label} | {arrow} | {base:,.4g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cancel_table(cancel: dict[int, list[Row]]) -> str:
    names = [row.name for row in next(iter(cancel.values()))]
    lines = [
        f"**Cancelling a backlog of pending tasks** ({WORKERS} workers held busy; ms to cancel "
        f"the whole backlog, median; ns per task; ratio to the {STDLIB}'s per-future "
        "`cancel()` loop, lower is better; linear if ns per task stays flat). The stdlib "
        "and pebble cancel each future; `cancellable` uses `cancel_all()`, or one `cancel()` "
        "of the job token all tasks were submitted with; the floor empties its queue.",
        "",
        "| pending | " + " | ".join(names) + " |",
        "| ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for backlog, rows in cancel.items():
        base = next(row.median for row in rows if row.name == STDLIB)
        cells = [
            f"{row.median:.3g} ms, {row.median * 1e6 / backlog:.0f} ns, {row.median / base:.2f}"
            for row in rows
        ]
        lines.append(f"| {backlog:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _latency(
    pools: dict[str, Callable[[int], Pool]], samples: int, progress: _Progress
) -> list[Row]:
    progress.step(f"wake latency, {samples:,} samples")
    wakers = {name: _Waker(make(2)) for name, make in pools.items()}
    try:
        return compare(
            {name: waker.sample for name, waker in wakers.items()},
            rounds=samples,
            progress=lambda text: progress(f"wake latency: {text}") if text.endswith("0") else None,
        )
    finally:
        for waker in wakers.values():
            waker.pool.shutdown()


def _latency_table(rows: list[Row], samples: int) -> str:
    base = next(row for row in rows if row.name == STDLIB)
    b50, b99 = percentile(base.samples, 0.5), percentile(base.samples, 0.99)
    lines = [
        "**Wake latency** (µs from the cancel to the cooperative task running again, "
        f"{samples:,} samples each, interleaved; ratios to the {STDLIB}). The stdlib and "
        "pebble tasks wait on a `threading.Event` that is set; `cancellable` tasks wait on "
        "`current_token()`, cancelled by `future.request_cancel()` or, with a token per task, "
        "by that token's source; the floor's task blocks on a raw lock that is released.",
        "",
        "| variant | p50 | p99 | p50 ratio | p99 ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        p50, p99 = percentile(row.samples, 0.5), percentile(row.samples, 0.99)
        lines.append(f"| {row.name} | {p50:.1f} | {p99:.1f} | {p50 / b50:.2f} | {p99 / b99:.2f} |")
    return "\n".join(lines)


def _sweep_table(sweep: dict[int, list[Row]], n: int) -> str:
    names = [row.name for row in next(iter(sweep.values()))]
    lines = [
        f"**Throughput against max_workers** ({n:,} no-op submit+result; tasks/s, median; "
        f"ratio to the {STDLIB}, higher is better)",
        "",
        "| max_workers | " + " | ".join(names) + " |",
        "| ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for workers, rows in sweep.items():
        base = next(row.median for row in rows if row.name == STDLIB)
        cells = [f"{row.median:,.0f} ({row.median / base:.2f})" for row in rows]
        lines.append(f"| {workers} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mixed_table(rows: list[Row], settle: dict[str, list[float]], n: int, steps: int) -> str:
    base = next(row.median for row in rows if row.name == STDLIB)
    lines = [
        f"**Mixed workload** ({n:,} cooperative tasks of {steps} small steps, {WORKERS} "
        "workers; every tenth task belongs to one job, cancelled when half the tasks are "
        "done. Throughput over the whole run, median, ratio to the stdlib, higher is better; "
        "and ms from the cancel until every task of the job has ended). The stdlib and "
        "pebble cancel the job's futures one by one and set an `Event` its running tasks "
        "check; `cancellable` cancels the job token its tasks were submitted with; the floor "
        "only sets the `Event` (it has no handles).",
        "",
        "| variant | tasks/s | ratio | job settled after (ms) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        settled = [value for value in settle[row.name] if not math.isnan(value)]
        median = f"{sorted(settled)[len(settled) // 2]:.2f}" if settled else "n/a"
        lines.append(f"| {row.name} | {row.median:,.0f} | {row.median / base:.2f} | {median} |")
    note = _ratio_note(rows, higher_is_better=True)
    if note:
        lines += ["", f"Behind a peer: {note}."]
    return "\n".join(lines)


# -- plots -----------------------------------------------------------------------------


def plots(outdir: Path) -> list[Path]:
    """Draw the last run's figures as PNG files in ``outdir``; return their paths.

    Raises:
        RuntimeError: if ``run()`` has not been called in this process.
        ImportError: if matplotlib is not installed.
    """
    if not _LAST:
        raise RuntimeError("run() must be called before plots()")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    outdir.mkdir(parents=True, exist_ok=True)
    stamp = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d}; {machine()}"
    written = []

    fig, ax = plt.subplots(figsize=(8, 5.6), dpi=110)
    sweep: dict[int, list[Row]] = _LAST["sweep"]
    counts = list(sweep)
    for name in (row.name for row in sweep[counts[0]]):
        medians = [next(r.median for r in sweep[w] if r.name == name) for w in counts]
        ax.plot(counts, medians, marker="o", label=name, color=_COLORS.get(name))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("max_workers")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:,.0f}"))
    ax.set_ylabel("no-op tasks per second (submit + result)")
    ax.set_title(f"Throughput against max_workers\n{stamp}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)
    fig.tight_layout()
    written.append(outdir / "pools_throughput_vs_workers.png")
    fig.savefig(written[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    cancel: dict[int, list[Row]] = _LAST["cancel"]
    backlogs = list(cancel)
    for name in (row.name for row in cancel[backlogs[0]]):
        medians = [next(r.median for r in cancel[b] if r.name == name) for b in backlogs]
        style = "--" if name.endswith("job token") else "-"
        ax.plot(backlogs, medians, style, marker="o", label=name, color=_COLORS.get(name))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.set_xlabel("pending tasks")
    ax.set_ylabel("ms to cancel the whole backlog")
    ax.set_title(f"Cancel cost against backlog (log-log; slope 1 = linear)\n{stamp}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(outdir / "pools_cancel_vs_backlog.png")
    fig.savefig(written[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    latency: list[Row] = _LAST["latency"]
    for row in latency:
        ordered = sorted(row.samples)
        fraction = [(i + 1) / len(ordered) for i in range(len(ordered))]
        p50, p99 = percentile(ordered, 0.5), percentile(ordered, 0.99)
        label = f"{row.name} (p50 {p50:.1f}, p99 {p99:.1f} µs)"
        ax.step(ordered, fraction, where="post", label=label, color=_COLORS.get(row.name))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.axhline(0.99, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("µs from the cancel to the task running again (log)")
    ax.set_ylabel("fraction of wake-ups")
    ax.set_title(f"Wake latency distribution (cumulative)\n{stamp}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    written.append(outdir / "pools_wake_latency.png")
    fig.savefig(written[-1])
    plt.close(fig)
    return written


def main() -> None:
    cli(
        run,
        __doc__,
        quick_help="small sizes, well under a minute",
        against=against,
        against_help="only submit+result, this tree against the package in DIR/cancellable "
        "(e.g. an older commit's src)",
        module="bench_pools",
    )


if __name__ == "__main__":
    main()
