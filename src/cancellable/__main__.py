"""``python -m cancellable``: the task-queue stop problem, solved with one cancel().

A service runs worker threads that block waiting for work. Stopping them the
old way means pushing dummy items and releasing semaphores so each blocked
call returns. Here every blocking wait takes a token, so one ``cancel()``
releases them all, and this demo prints how long that took.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import wait

from ._errors import OperationCancelledError
from ._executor import CancellableThreadPoolExecutor
from ._primitives import Semaphore
from ._queues import Queue
from ._stats import Laggard
from ._token import CancellationToken, CancellationTokenSource, current_token


def _worker(
    token: CancellationToken,
    jobs: Queue[object],
    slots: Semaphore,
    ready: threading.Barrier,
    stopped_at: list[float],
) -> None:
    ready.wait()
    try:
        # Half the workers block waiting for a free slot, half for a job. Nothing
        # fake is pushed or released to wake them: the cancel itself does.
        if slots.acquire(token=token):
            jobs.get(token=token)
    except OperationCancelledError:
        stopped_at.append(time.perf_counter())


def run_blocked_primitives(workers: int) -> float:
    """Block ``workers`` threads in ``Semaphore.acquire`` and ``Queue.get``, cancel once.

    Returns the seconds from the ``cancel()`` until the last worker stopped.
    """
    service = CancellationTokenSource()
    jobs: Queue[object] = Queue()
    slots = Semaphore(workers // 2)  # the rest wait for a slot
    ready = threading.Barrier(workers + 1)
    stopped_at: list[float] = []
    threads = [
        threading.Thread(
            target=_worker,
            args=(service.token, jobs, slots, ready, stopped_at),
            name=f"worker-{i}",
        )
        for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    ready.wait()
    # Poll until every worker is blocked (each has registered one callback on
    # the token), so the figure below is the wake-up of blocked threads only.
    while len(service.token._regs or ()) < workers:
        time.sleep(0.001)
    started = time.perf_counter()
    service.cancel("service stopping")
    for thread in threads:
        thread.join()
    return max(stopped_at) - started


def _pool_task(index: int, steps: int, started: list[int]) -> int:
    # A cooperative task: a little work per step, checking its token between.
    started.append(index)
    token = current_token()
    total = 0
    for step in range(steps):
        token.raise_if_cancellation_requested()
        total += sum(range(200)) + step
    return total


def run_pool_scenario(tasks: int = 5000, workers: int = 4) -> dict[str, float]:
    """Push ``tasks`` tasks through ``workers`` workers and cancel them all mid-way.

    Returns the counts of tasks that ran to the end, were cancelled before
    starting, and stopped cooperatively while running, and the seconds from
    the cancel until every future was done.
    """
    stop = CancellationTokenSource()
    halfway = threading.Event()
    finished = [0]
    started_tasks: list[int] = []
    lock = threading.Lock()

    def count(future: object) -> None:
        with lock:
            finished[0] += 1
            if finished[0] == tasks // 2:
                halfway.set()

    with CancellableThreadPoolExecutor(workers) as pool:
        futures = [
            pool.submit(_pool_task, i, 50, started_tasks, token=stop.token) for i in range(tasks)
        ]
        for future in futures:
            future.add_done_callback(count)
        halfway.wait()
        started = time.perf_counter()
        stop.cancel("stop requested")
        wait(futures)
        emptied = time.perf_counter() - started
    ran = sum(1 for f in futures if not f.cancelled())
    began = set(started_tasks)
    cooperative = sum(1 for i, f in enumerate(futures) if f.cancelled() and i in began)
    return {
        "ran": ran,
        "cancelled_pending": tasks - ran - cooperative,
        "stopped_cooperatively": cooperative,
        "seconds_to_empty": emptied,
    }


def _print_pool_scenario() -> None:
    stats = run_pool_scenario()
    print(
        f"A pool of 4 workers got 5000 tasks; half-way through, one cancel(): "
        f"{stats['ran']:.0f} ran to the end, {stats['cancelled_pending']:.0f} were "
        f"cancelled before starting, {stats['stopped_cooperatively']:.0f} stopped "
        f"cooperatively, and the pool was empty "
        f"{stats['seconds_to_empty'] * 1e3:.2f} ms after the cancel."
    )


def _checks_its_token(started: threading.Barrier) -> None:
    started.wait()
    current_token().wait()
    current_token().raise_if_cancellation_requested()


def _ignores_its_token(started: threading.Barrier, release: threading.Event) -> None:
    started.wait()
    release.wait()  # stands for a C call that no token can interrupt


def run_laggard_scene() -> list[Laggard]:
    """Cancel two running tasks, one cooperative and one not; return the laggards.

    The cooperative task ends at the cancel; the other is what
    ``laggards()`` (and the report a shutdown logs) names.
    """
    started = threading.Barrier(3)
    release = threading.Event()
    with CancellableThreadPoolExecutor(2, thread_name_prefix="demo") as pool:
        cooperative = pool.submit(_checks_its_token, started)
        pool.submit(_ignores_its_token, started, release)
        started.wait()
        pool.cancel_all("demo stopping")
        wait([cooperative])
        laggards = pool.laggards()
        release.set()
    return laggards


def _print_laggard_scene() -> None:
    for laggard in run_laggard_scene():
        print(
            f"After cancel_all(), pool.laggards() names the task that ignores its token: "
            f"{laggard.qualname} on thread {laggard.thread_name}, "
            f"{laggard.seconds_since_cancel * 1e3:.1f} ms after the cancel (reason "
            f"{laggard.reason!r}); its stack starts in the task:"
        )
        print("\n".join(laggard.stack.rstrip().splitlines()[:2]))


def main(argv: list[str] | None = None) -> int:
    """Run the demo and print what happened."""
    parser = argparse.ArgumentParser(prog="python -m cancellable", description=__doc__)
    parser.add_argument("--workers", type=int, default=50, help="blocked worker threads")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    print(
        f"{args.workers} worker threads are blocked in Semaphore.acquire() "
        "and Queue.get() waiting for work."
    )
    elapsed = run_blocked_primitives(args.workers)
    print(
        f"One cancel() released all {args.workers} of them in {elapsed * 1e3:.2f} ms, "
        "with no dummy items or extra semaphore releases."
    )
    _print_pool_scenario()
    _print_laggard_scene()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
