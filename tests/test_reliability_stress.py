"""Many tasks, four submitters, two cancellers, a three-level token tree.

Each task's outcome is recorded by its done-callback into per-task byte
arrays (no future is kept), so the check scales to a million tasks. After the
pool shuts down: every task ended exactly once, every done-callback ran
exactly once, no pending task ran, completed + cancelled + failed is the
number submitted, and no worker thread remains. A smaller round of the same
load under `tracemalloc` leaves nothing allocated behind.

The default sizes suit CI (250,000 tasks, then 50,000 traced);
``CANCELLABLE_STRESS_FULL=1`` runs 1,000,000, then 200,000 traced.
"""

from __future__ import annotations

import functools
import gc
import os
import random
import threading
import tracemalloc
from concurrent.futures import Future

import pytest

from cancellable import (
    CancellableThreadPoolExecutor,
    CancellationToken,
    CancellationTokenSource,
    current_token,
)

FULL = os.environ.get("CANCELLABLE_STRESS_FULL") == "1"
TASKS = 1_000_000 if FULL else 250_000
TRACED_TASKS = 200_000 if FULL else 50_000  # tracing makes each task several times slower
SUBMITTERS = 4
CANCELLERS = 2
WORKERS = 8
FANOUT = 4  # children per node: 1 root, 4 middles, 16 leaves
PACE = 150  # submissions between two cancels (per canceller wake-up)
# Bytes the second round may leave behind after the first (caches, the odd
# free list); a leak of even 8 bytes a task would be far above it.
MEMORY_BUDGET = 256 * 1024

COMPLETED, FAILED, CANCELLED, UNEXPECTED = 1, 2, 3, 4


class _Tree:
    """A root, FANOUT middle sources under it, FANOUT leaves under each middle.

    Cancellers cancel a random node and replace the cancelled subtree with
    fresh sources, so submitters always find live leaves and dead ones alike.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lock = threading.Lock()
        self.root = CancellationTokenSource()
        self.middles: list[CancellationTokenSource] = []
        self.leaves: list[CancellationTokenSource] = []
        # Read by submitters without the lock: one list item load is atomic.
        self.leaf_tokens: list[CancellationToken] = []
        self._build_all()
        self.cancels = 0

    def _build_all(self) -> None:
        self.root = CancellationTokenSource()
        self.middles = [CancellationTokenSource(self.root.token) for _ in range(FANOUT)]
        self.leaves = [
            CancellationTokenSource(middle.token) for middle in self.middles for _ in range(FANOUT)
        ]
        self.leaf_tokens[:] = [leaf.token for leaf in self.leaves]

    def _rebuild_middle(self, m: int) -> None:
        self.middles[m] = CancellationTokenSource(self.root.token)
        for j in range(m * FANOUT, (m + 1) * FANOUT):
            self._rebuild_leaf(j)

    def _rebuild_leaf(self, j: int) -> None:
        self.leaves[j] = CancellationTokenSource(self.middles[j // FANOUT].token)
        self.leaf_tokens[j] = self.leaves[j].token

    def cancel_random(self) -> None:
        rng = self.rng
        with self.lock:
            level = rng.random()
            self.cancels += 1
            if level < 0.05:
                self.root.cancel("root")
                self._build_all()
            elif level < 0.3:
                m = rng.randrange(FANOUT)
                self.middles[m].cancel("middle")
                self._rebuild_middle(m)
            else:
                j = rng.randrange(FANOUT * FANOUT)
                self.leaves[j].cancel("leaf")
                self._rebuild_leaf(j)


def _task(i: int, runs: bytearray) -> int:
    runs[i] += 1
    if i % 11 == 0:
        raise ValueError(i)
    if i % 5 == 0:
        current_token().raise_if_cancellation_requested()
    return i


def _record(i: int, calls: bytearray, outcome: bytearray, future: Future[int]) -> None:
    calls[i] += 1
    if future.cancelled():
        outcome[i] = CANCELLED
        return
    error = future.exception()
    if error is None:
        outcome[i] = COMPLETED if future.result() == i else UNEXPECTED
    elif type(error) is ValueError:
        outcome[i] = FAILED
    else:
        outcome[i] = UNEXPECTED


def _round(tasks: int, seed: int, *, every_outcome: bool = True) -> dict[str, int]:
    """Run one round of the load; check it; return the outcome counts.

    ``every_outcome``: also require that the round completed, failed and
    cancelled at least one task each (a short warm-up round may finish its
    tasks before any cancel reaches them).
    """
    rng = random.Random(seed)
    tree = _Tree(random.Random(seed + 1))
    runs = bytearray(tasks)
    calls = bytearray(tasks)
    outcome = bytearray(tasks)
    pace = threading.Semaphore(0)
    stop = threading.Event()
    errors: list[BaseException] = []
    prefix = f"stress-{seed}"

    with CancellableThreadPoolExecutor(WORKERS, thread_name_prefix=prefix) as pool:

        def submit_share(first: int, picks: list[int]) -> None:
            try:
                leaf_tokens = tree.leaf_tokens
                for n, i in enumerate(range(first, tasks, SUBMITTERS)):
                    pick = picks[n % len(picks)]
                    token = None if pick < 0 else leaf_tokens[pick]
                    future = pool.submit(_task, i, runs, token=token)
                    future.add_done_callback(functools.partial(_record, i, calls, outcome))
                    if n % PACE == 0:
                        pace.release()
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        def cancel_loop() -> None:
            try:
                while True:
                    pace.acquire()
                    if stop.is_set():
                        return
                    tree.cancel_random()
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        # -1: no token (only the pool's shutdown could reach those tasks).
        picks = [rng.randrange(-1, FANOUT * FANOUT) for _ in range(997)]
        cancellers = [threading.Thread(target=cancel_loop) for _ in range(CANCELLERS)]
        submitters = [
            threading.Thread(target=submit_share, args=(k, picks[k:] + picks[:k]))
            for k in range(SUBMITTERS)
        ]
        for thread in cancellers + submitters:
            thread.start()
        for thread in submitters:
            thread.join()
        stop.set()
        pace.release(CANCELLERS)
        for thread in cancellers:
            thread.join()
        workers = list(pool._threads)

    assert not errors, errors
    assert 0 < len(workers) <= WORKERS
    assert not any(thread.is_alive() for thread in workers)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(prefix)]

    assert max(calls) == 1, "a done-callback ran twice"
    assert min(calls) == 1, "a done-callback never ran (a lost future)"
    assert max(runs) == 1, "a task ran twice"
    assert UNEXPECTED not in outcome
    never_ran = [i for i in range(tasks) if not runs[i]]
    assert all(outcome[i] == CANCELLED for i in never_ran), "a task that never ran did not cancel"
    counts = {
        "completed": outcome.count(COMPLETED),
        "failed": outcome.count(FAILED),
        "cancelled": outcome.count(CANCELLED),
    }
    assert sum(counts.values()) == tasks
    if every_outcome:
        # The load must exercise every outcome, or it proves little.
        assert all(counts.values()), counts
        assert tree.cancels > 0
    return counts


@pytest.mark.slow
@pytest.mark.timeout(900 if FULL else 150)
def test_every_task_ends_exactly_once_under_concurrent_cancels() -> None:
    _round(TASKS, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(900 if FULL else 150)
def test_a_round_of_the_load_retains_no_memory() -> None:
    # Warm up caches and free lists outside the measurement.
    _round(2000, seed=2, every_outcome=False)
    gc.collect()
    # Only blocks allocated while tracing count: what the round leaves alive.
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        _round(TRACED_TASKS, seed=3)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before <= MEMORY_BUDGET, f"the round left {after - before} bytes behind"


def test_a_long_lived_pool_forgets_the_submit_tokens_it_no_longer_needs() -> None:
    with CancellableThreadPoolExecutor(1) as pool:

        def use_token_twice(count: int) -> None:
            for _ in range(count):
                token = CancellationTokenSource().token
                # The token's group empties twice before any collection.
                pool.submit(int, token=token).result()
                pool.submit(int, token=token).result()

        use_token_twice(100)  # warm up caches and free lists outside the measurement
        gc.collect()
        tracemalloc.start()
        try:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            use_token_twice(3000)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert after - before <= 64 * 1024, f"{after - before} bytes retained for 3000 tokens"
