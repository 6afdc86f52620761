"""A finished worker's thread id stops counting as one of the pool's workers.

The pool recognises its own workers by thread id (``shutdown(wait=True)`` from
a task raises instead of waiting for itself; a bounded ``submit`` from a task
is admitted over the bound). The system hands a dead thread's id to the next
thread it starts, so an id left behind after its worker exits would let an
unrelated thread pass for a worker.
"""

from __future__ import annotations

import threading

from cancellable import CancellableThreadPoolExecutor


def test_worker_ids_are_forgotten_when_the_workers_exit() -> None:
    ex = CancellableThreadPoolExecutor(2)
    started = threading.Barrier(3)
    fs = [ex.submit(started.wait, 10) for _ in range(2)]
    started.wait(10)  # both workers run a task: both ids are known
    for f in fs:
        f.result(10)
    assert len(ex._core.worker_ids) == 2
    ex.shutdown(wait=True)
    assert ex._core.worker_ids == set()
