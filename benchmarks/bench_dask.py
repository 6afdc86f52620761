"""Dask: `DaskExecutor` against plain ``client.submit`` on a local two-worker cluster.

Run with ``python -m benchmarks.bench_dask [--quick]`` (needs the ``dask``
extra; without it the section says so and measures nothing). One
``LocalCluster(n_workers=2, threads_per_worker=2, processes=True)`` serves
every comparison; variants are interleaved round by round.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from benchmarks._harness import cli, compare, header, markdown_table, percentile
from cancellable import CancellationTokenSource, current_token

__all__ = ["run"]


def noop() -> None:
    return None


def work(seconds: float) -> None:
    """Cooperative under DaskExecutor (waits on its token), plain sleep otherwise."""
    tok = current_token()
    if tok.can_be_cancelled:
        tok.wait(seconds)
    else:
        time.sleep(seconds)


def notice(out: str, started: str) -> None:
    import distributed

    distributed.Event(started).set()
    current_token().wait(30)
    distributed.Variable(out).set(time.monotonic())


def _round_trip(client: Any, ex: Any, n: int, rounds: int) -> str:
    cts = CancellationTokenSource()

    def plain() -> float:
        start = time.perf_counter()
        for _ in range(n):
            client.submit(noop, pure=False).result()
        return (time.perf_counter() - start) / n * 1e3

    def ours() -> float:
        start = time.perf_counter()
        for _ in range(n):
            ex.submit(noop, token=cts.token).result()
        return (time.perf_counter() - start) / n * 1e3

    def batch_plain() -> float:
        start = time.perf_counter()
        client.gather([client.submit(noop, pure=False) for _ in range(n * 10)])
        return n * 10 / (time.perf_counter() - start)

    def batch_ours() -> float:
        start = time.perf_counter()
        cf.wait([ex.submit(noop, token=cts.token) for _ in range(n * 10)])
        return n * 10 / (time.perf_counter() - start)

    rows = compare({"client.submit": plain, "DaskExecutor, token=": ours}, rounds=rounds)
    batch = compare(
        {"client.submit": batch_plain, "DaskExecutor, token=": batch_ours}, rounds=rounds
    )
    return (
        markdown_table(
            f"Round trip of one no-op task, {n} in a row",
            rows,
            baseline="client.submit",
            unit="ms per task",
        )
        + "\n\n"
        + markdown_table(
            f"Throughput of {n * 10:,} no-op tasks submitted at once",
            batch,
            baseline="client.submit",
            unit="tasks/s",
            lower_is_better=False,
        )
    )


def _wait_cancelled(fs: list[Any]) -> None:
    import distributed

    with contextlib.suppress(distributed.client.FuturesCancelledError):
        distributed.wait(fs)


def _quiesce(client: Any, ex: Any, backlog: int, rounds: int) -> str:
    task = 0.05

    def probe_after(cancel: Callable[[], None]) -> tuple[float, float]:
        start = time.perf_counter()
        cancel()
        settled = time.perf_counter()
        # How soon the workers take new work: a probe per worker thread.
        client.gather([client.submit(noop, pure=False) for _ in range(4)])
        return (settled - start) * 1e3, (time.perf_counter() - start) * 1e3

    results: dict[str, list[float]] = {"client.cancel": [], "DaskExecutor token": []}

    def plain() -> float:
        fs = [client.submit(work, task, pure=False) for _ in range(backlog)]
        time.sleep(task * 2)
        settled, probe = probe_after(lambda: (client.cancel(fs), _wait_cancelled(fs)))
        results["client.cancel"].append(probe)
        return settled

    def ours() -> float:
        cts = CancellationTokenSource()
        fs = [ex.submit(work, task, token=cts.token) for _ in range(backlog)]
        time.sleep(task * 2)
        settled, probe = probe_after(lambda: (cts.cancel(), cf.wait(fs)))
        results["DaskExecutor token"].append(probe)
        return settled

    rows = compare({"client.cancel": plain, "DaskExecutor token": ours}, rounds=rounds)
    lines = [
        f"**Cancel-to-quiesce: {backlog:,} tasks of {task * 1e3:.0f} ms on 2 workers x 2 threads** "
        "(ms, median: until every future is done; then until four probe tasks ran, "
        "which needs the worker threads free)",
        "",
        "| variant | futures done | probes ran |",
        "| --- | ---: | ---: |",
    ]
    for row in rows:
        probes = sorted(results[row.name])[len(results[row.name]) // 2]
        lines.append(f"| {row.name} | {row.median:.2f} | {probes:.2f} |")
    lines += [
        "",
        "Both end the futures at once. The probes wait for the worker threads, and for "
        "the scheduler to drop the backlog: `DaskExecutor` calls `client.cancel` on a "
        "background thread after `cancel()` returned, while the plain variant calls it "
        "before submitting the probes.",
    ]
    return "\n".join(lines)


def _notice(client: Any, ex: Any, samples: int) -> str:
    import distributed

    values: list[float] = []
    for i in range(samples):
        out, started = f"bench-notice-{i}-{time.monotonic_ns()}", f"bench-start-{i}"
        cts = CancellationTokenSource()
        ex.submit(notice, out, started, token=cts.token)
        assert distributed.Event(started, client=client).wait(30)
        sent = time.monotonic()
        cts.cancel()
        noticed = distributed.Variable(out, client=client).get(timeout=30)
        values.append((noticed - sent) * 1e3)
        distributed.Variable(out, client=client).delete()
        distributed.Event(started, client=client).clear()
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    return (
        f"**Cancel-to-notice for a running task** ({samples} samples): "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms from `cancel()` in the client until the "
        "task's `current_token().wait()` returned on its worker."
    )


def run(quick: bool = False, *, tiny: bool = False) -> str:
    """Run the Dask benchmarks and return the results as markdown.

    ``tiny`` shrinks every size to a smoke test (for tests).
    """
    heading = header("Dask", "bench_dask", quick)
    try:
        import distributed

        from cancellable.dask import DaskExecutor
    except ImportError:
        return heading + "\n\nSkipped: `distributed` is not installed (the `dask` extra).\n"
    n = 5 if tiny else 50 if quick else 200
    rounds = 1 if tiny else 3 if quick else 5
    backlog = 20 if tiny else 1_000
    samples = 2 if tiny else 20 if quick else 100
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        ex = DaskExecutor(client)
        try:
            sections = [
                heading,
                _round_trip(client, ex, n, rounds),
                _quiesce(client, ex, backlog, rounds),
                _notice(client, ex, samples),
            ]
        finally:
            ex.shutdown()
    return "\n\n".join(sections) + "\n"


def main() -> None:
    cli(run, __doc__)


if __name__ == "__main__":
    main()
