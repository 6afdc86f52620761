"""Behaviour that differs between Python 3.11, 3.12 and 3.13, checked on each.

Every class here follows the stdlib of the interpreter it runs on. The
stdlib's own suites (``test_stdlib_suites.py``, ``test_stdlib_executor.py``)
cover most of it; these tests cover what they do not, comparing ours with the
stdlib side by side on the running version.
"""

from __future__ import annotations

import inspect
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

import cancellable
from test_primitives import install_waiter_log

AFFINITY = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


@pytest.mark.skipif(not AFFINITY, reason="needs CPU affinity and at least two usable CPUs")
def test_default_max_workers_matches_the_stdlib_under_cpu_affinity() -> None:
    code = (
        "import os\n"
        "from concurrent.futures import Future, ThreadPoolExecutor\n"
        "from cancellable import CancellableThreadPoolExecutor\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "print(ThreadPoolExecutor()._max_workers, CancellableThreadPoolExecutor()._max_workers)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    theirs, ours = out.split()
    assert ours == theirs


def test_default_max_workers_matches_the_stdlib() -> None:
    with ThreadPoolExecutor() as theirs, cancellable.CancellableThreadPoolExecutor() as ours:
        assert ours._max_workers == theirs._max_workers


@pytest.mark.parametrize("parties", [0, -1])
def test_barrier_rejects_no_parties(parties: int) -> None:
    # 3.13's Barrier raises ValueError for parties < 1 (earlier ones accept
    # it and then hang or misbehave); ours raises on every version.
    with pytest.raises(ValueError, match="parties"):
        cancellable.Barrier(parties)
    if sys.version_info >= (3, 13):
        with pytest.raises(ValueError, match="parties"):
            threading.Barrier(parties)


def test_lock_is_not_a_threading_lock_subclass() -> None:
    # threading.Lock is a type from 3.13 on, but still not subclassable: ours
    # cannot pass isinstance(x, threading.Lock), on any version.
    if isinstance(threading.Lock, type):
        assert not isinstance(cancellable.Lock(), threading.Lock)
        with pytest.raises(TypeError):
            type("L", (threading.Lock,), {})


def test_rlock_locked_is_true_for_other_threads_while_held() -> None:
    # 3.14 added RLock.locked(): whether any thread holds it.
    lock = cancellable.RLock()
    assert not lock.locked()
    seen: list[bool] = []
    with lock:
        thread = threading.Thread(target=lambda: seen.append(lock.locked()))
        thread.start()
        thread.join(timeout=10)
    assert seen == [True]
    assert not lock.locked()


def test_rlock_locked_is_true_for_the_owner() -> None:
    lock = cancellable.RLock()
    with lock:
        assert lock.locked()


@pytest.mark.parametrize("kind", ["Queue", "LifoQueue", "PriorityQueue"])
def test_queue_shutdown_api_is_there_exactly_where_the_stdlib_has_it(kind: str) -> None:
    ours, theirs = getattr(cancellable, kind)(), getattr(queue, kind)()
    for name in ("shutdown", "is_shutdown"):
        assert hasattr(ours, name) == hasattr(theirs, name) == (sys.version_info >= (3, 13))


def test_semaphore_release_n_wakes_n_waiters(monkeypatch: pytest.MonkeyPatch) -> None:
    # 3.13's Semaphore.release(n) wakes waiters with one notify(n) instead of
    # n notify() calls: ours must hand out exactly n permits either way.
    waiters = install_waiter_log(monkeypatch)
    sem = cancellable.Semaphore(0)
    cts = cancellable.CancellationTokenSource()
    got: list[bool] = []
    recorded = threading.Semaphore(0)

    def take() -> None:
        try:
            got.append(sem.acquire(token=cts.token))
        except cancellable.OperationCancelledError:
            got.append(False)
        recorded.release()

    threads = [threading.Thread(target=take) for _ in range(3)]
    for thread in threads:
        thread.start()
    waiters.wait_blocked(3)
    sem.release(2)
    assert recorded.acquire(timeout=10)
    assert recorded.acquire(timeout=10)
    assert got == [True, True]
    cts.cancel()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(got) == [False, True, True]


# Keywords we add on purpose (DESIGN): token= everywhere, max_pending= and laggard_grace= on the
# pool, and map's buffersize= (3.14's, offered on every version).
ADDED_KEYWORDS = {"token", "max_pending", "buffersize", "laggard_grace"}
PAIRS = [
    (cancellable.Event, threading.Event),
    (cancellable.Condition, threading.Condition),
    (cancellable.Semaphore, threading.Semaphore),
    (cancellable.BoundedSemaphore, threading.BoundedSemaphore),
    (cancellable.Barrier, threading.Barrier),
    (cancellable.Queue, queue.Queue),
    (cancellable.LifoQueue, queue.LifoQueue),
    (cancellable.PriorityQueue, queue.PriorityQueue),
    (cancellable.CancellableThreadPoolExecutor, ThreadPoolExecutor),
    (cancellable.CancellableFuture, Future),
]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=lambda c: c.__name__)
def test_public_signatures_match_this_versions_stdlib(ours: type, theirs: type) -> None:
    # Whatever this interpreter's stdlib class offers (3.13's Queue.shutdown,
    # say), ours offers with the same parameters.
    checked = 0
    for name, member in inspect.getmembers(theirs):
        if (name.startswith("_") and name != "__init__") or not callable(member):
            continue
        try:
            expected = inspect.signature(member)
        except (TypeError, ValueError):  # a C slot without a signature
            continue
        mine = getattr(ours, name, None)
        assert mine is not None, f"{ours.__name__}.{name} is missing"
        got = [
            (p.name, p.kind, p.default)
            for p in inspect.signature(mine).parameters.values()
            if p.name not in ADDED_KEYWORDS
        ]
        assert got == [(p.name, p.kind, p.default) for p in expected.parameters.values()], name
        checked += 1
    assert checked > 0
