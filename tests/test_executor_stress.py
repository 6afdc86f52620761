"""Races between the stdlib's wait()/as_completed() and completions and cancels.

`CancellableFuture` builds its condition only when observed, so installing a
stdlib waiter races with a worker finishing the task and with cancellers. Each
round submits a batch, lets a helper thread cancel part of it (through a token,
``cancel()`` and ``request_cancel()``) while workers finish the rest, and
meanwhile waits with ``wait(FIRST_COMPLETED)``, ``as_completed`` and
``wait(ALL_COMPLETED)``. A lost wake-up shows as a TimeoutError; a future
notified twice as a duplicate or an error from as_completed.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, as_completed, wait

import pytest

from cancellable import CancellableThreadPoolExecutor, CancellationTokenSource

RACES = 100_000
BATCH = 250
TIMEOUT = 10  # a lost wake-up would wait forever; this turns it into a failure


def _noop() -> None:
    pass


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_stdlib_waiters_never_miss_a_completion_or_cancel() -> None:
    jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()

    def helper() -> None:
        while (job := jobs.get()) is not None:
            job()

    canceller = threading.Thread(target=helper)
    canceller.start()
    raced = 0
    # Switch threads as often as possible, as CPython's own race tests do.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with CancellableThreadPoolExecutor(3) as ex:
            round_no = 0
            while raced < RACES:
                round_no += 1
                cts = CancellationTokenSource()
                fs = [
                    ex.submit(_noop, token=cts.token if i % 3 == 0 else None) for i in range(BATCH)
                ]

                def cancel_some(fs: list = fs, cts: CancellationTokenSource = cts) -> None:  # type: ignore[type-arg]
                    cts.cancel("race")
                    for f in fs[1::7]:
                        f.cancel()
                    for f in fs[2::11]:
                        f.request_cancel()

                jobs.put(cancel_some)
                done, _ = wait(fs[-20:], timeout=TIMEOUT, return_when=FIRST_COMPLETED)
                assert done, f"round {round_no}: wait(FIRST_COMPLETED) missed every completion"
                seen = list(as_completed(fs, timeout=TIMEOUT))
                assert len(seen) == len(set(seen)) == BATCH
                done, not_done = wait(fs, timeout=TIMEOUT, return_when=ALL_COMPLETED)
                assert not not_done
                assert all(f.done() for f in fs)
                raced += BATCH
    finally:
        sys.setswitchinterval(interval)
        jobs.put(None)
        canceller.join()
    assert raced >= RACES
