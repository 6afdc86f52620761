"""What a pool reports about itself: `ExecutorStatistics` and `Laggard`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ExecutorStatistics", "Laggard"]


@dataclass(frozen=True, slots=True)
class ExecutorStatistics:
    """A snapshot of a `CancellableThreadPoolExecutor`, from `statistics()`.

    Exact when the pool is quiescent (no submit, cancel or task step in
    flight); while it is busy, each figure is a recent value and the sum
    ``completed + failed + cancelled + pending + running`` may be off by the
    few tasks changing state at that moment.

    Attributes:
        workers: Worker threads alive.
        idle_workers: Workers alive and not running a task.
        pending: Tasks submitted and not yet started or ended.
        running: Tasks running now.
        completed: Tasks that returned, since the pool was created.
        failed: Tasks that raised (their future holds the exception),
            including those a failed initializer ended with `BrokenThreadPool`.
        cancelled: Tasks that ended cancelled: before they started, or while
            running by letting `OperationCancelledError` escape. ``completed``,
            ``failed`` and ``cancelled`` are disjoint: a task ends in one.
        laggards: Running tasks whose token was cancelled and that have not
            ended yet.
    """

    workers: int
    idle_workers: int
    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    laggards: int

    __module__ = "cancellable"


@dataclass(frozen=True, slots=True)
class Laggard:
    """A running task that has not ended although its token was cancelled.

    Attributes:
        thread_name: The name of the worker thread running it.
        qualname: The callable's ``__qualname__`` (its ``repr`` if it has none).
        seconds_since_cancel: How long ago its token (or the parent that
            reached it) was cancelled.
        reason: That token's reason.
        stack: The worker's current stack, formatted as by
            `traceback.format_stack`, innermost frame last.
    """

    thread_name: str
    qualname: str
    seconds_since_cancel: float
    reason: object
    stack: str

    __module__ = "cancellable"

    def __str__(self) -> str:
        return (
            f"{self.qualname} on thread {self.thread_name!r} is still running "
            f"{self.seconds_since_cancel:.1f} s after its cancel (reason: {self.reason!r})\n"
            f"{self.stack}"
        )
