"""`CancellableProcessPoolExecutor`: the executor's tokens across process boundaries.

Architecture (parent side). One dispatcher thread per pool owns the worker
processes and every dispatched task: it waits (``multiprocessing.connection.wait``)
on each worker's result pipe, each worker's sentinel and one wake-up pipe, and
sends a task only to an idle worker. Nothing is pre-fed, so no worker holds a
queued task the parent can no longer recall, and killing one worker can never
leave a lock held that the others need: workers share no lock at all (each has
its own pipes, unlike the stdlib's shared call and result queues).

The caller's `CancellationTokenSource` stays the single source of truth: each
task's parent-side token is a linked child of the submit token, the executor's
token and the pool's generation (what `cancel_all` cancels). Its one
registration does the cross-process work when it fires:

* pending task: claimed under the pool lock, its future ends cancelled at once;
* dispatched task: its worker's slot in a shared-memory array of cancelled
  sequence numbers is written first (the start check), then the sequence
  number and the pickled reason go down the worker's cancel pipe.

Worker side. The main thread runs tasks, each under ``use_token()`` of a
local `CancellationTokenSource` (so ``is_cancellation_requested`` is a plain
attribute read and ``wait()`` blocks on the local token, no IPC). One watcher
thread blocks on the cancel pipe and cancels the local source of the task
concerned. A task whose slot already names it when it would start is skipped.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import struct
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool, _ExceptionWithTraceback
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, final

from ._checks import check_seconds
from ._errors import OperationCancelledError
from ._remote import (
    SHUT_DOWN,
    ExecutorState,
    MapResults,
    RemoteFuture,
    dump_reason,
    end_cancelled,
    end_unstarted,
    executor_token,
    log_cancel_errors,
    map_source,
    submit_token,
)
from ._token import CancellationToken, CancellationTokenSource, use_token

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

__all__ = ["CancellableProcessFuture", "CancellableProcessPoolExecutor"]

_R = TypeVar("_R")
_log = logging.getLogger("cancellable")

_SEQ = struct.Struct("<q")

# Reply kinds, worker -> parent.
_OK: Final = 0
_ERROR: Final = 1
_CANCELLED: Final = 2
_SKIPPED: Final = 3
_INIT_FAILED: Final = 4

# Parent-side task states. Invariant: only the pool lock's holder changes
# ``state``; a DISPATCHED task has ``worker`` set; a task's future is ended by
# whoever moved it out of PENDING/DISPATCHED (the claimer for PENDING ->
# CANCELLED, the dispatcher thread for everything after DISPATCHED).
_PENDING: Final = 0
_DISPATCHED: Final = 1
_DONE: Final = 2

_BROKEN_POOL = "A child process terminated abruptly, the process pool is not usable anymore"
_BROKEN_TASK = (
    "A process in the process pool was terminated abruptly while the future was running or pending."
)
_BROKEN_INIT = "A process initializer failed, the process pool is not usable anymore"

_pools: weakref.WeakSet[_Core] = weakref.WeakSet()
_exiting = False


# -- the worker process --------------------------------------------------------


class _WorkerState:
    """What the watcher thread of a worker needs to reach the running task."""

    __slots__ = ("current", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: tuple[int, CancellationTokenSource] | None = None


def _watch(cancels: Connection, state: _WorkerState) -> None:
    """Worker watcher thread: turn cancel messages into local cancels."""
    while True:
        try:
            data = cancels.recv_bytes()
        except (EOFError, OSError):
            # The parent closed the pipe (shutdown) or died: a running task
            # has nobody left to report to, so ask it to stop.
            seq, reason = -1, "the parent process went away"
        else:
            (seq,) = _SEQ.unpack_from(data)
            try:
                reason = pickle.loads(data[_SEQ.size :])
            except Exception as exc:
                reason = repr(exc)
        with state.lock:
            current = state.current
        if current is not None and (seq == -1 or current[0] == seq):
            log_cancel_errors(current[1], reason)
        if seq == -1:
            return


def _worker_main(  # noqa: PLR0917 (a Process target takes its arguments positionally)
    index: int,
    conn: Connection,
    cancels: Connection,
    flags: Any,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    max_tasks: int | None,
) -> None:
    """Entry point of a worker process: run tasks from ``conn`` until told to stop."""
    state = _WorkerState()
    watcher = threading.Thread(
        target=_watch, args=(cancels, state), name="cancellable-watcher", daemon=True
    )
    watcher.start()
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            _log.critical("Exception in initializer:", exc_info=True)
            _send(conn, 0, _INIT_FAILED, _remote(exc))
            return
    done = 0
    while max_tasks is None or done < max_tasks:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        (seq,) = _SEQ.unpack_from(data)
        if seq == 0:
            return
        _run_one(index, seq, data, conn, flags, state)
        done += 1


def _run_one(  # noqa: PLR0917 (the worker loop's one call, kept flat for speed)
    index: int, seq: int, data: bytes, conn: Connection, flags: Any, state: _WorkerState
) -> None:
    source = CancellationTokenSource()
    with state.lock:
        state.current = (seq, source)
    kind: int
    value: object = None
    try:
        # The start check: the parent writes this slot before it sends the
        # cancel message, and the watcher reads ``state.current`` under the
        # lock after that message; so either the watcher saw this task (and
        # cancelled ``source``) or this read sees the slot.
        if flags[index] == seq or source.is_cancellation_requested:
            kind = _SKIPPED
        else:
            try:
                fn, args, kwargs = pickle.loads(data[_SEQ.size :])
                with use_token(source.token):
                    value = fn(*args, **kwargs)
                kind = _OK
            except OperationCancelledError as exc:
                if source.is_cancellation_requested:
                    kind, value = _CANCELLED, None
                else:
                    kind, value = _ERROR, _remote(exc)
            except BaseException as exc:
                kind, value = _ERROR, _remote(exc)
    finally:
        with state.lock:
            state.current = None
        source.close()
    _send(conn, seq, kind, value)


def _remote(exc: BaseException) -> object:
    """The stdlib's carrier of an exception with its worker-side traceback text."""
    return _ExceptionWithTraceback(exc, exc.__traceback__)  # type: ignore[arg-type]


def _send(conn: Connection, seq: int, kind: int, value: object) -> None:
    try:
        payload = pickle.dumps((seq, kind, value))
    except BaseException as exc:
        try:
            payload = pickle.dumps((seq, _ERROR, _remote(exc)))
        except BaseException:
            # Not even the error pickles: send what it says.
            error = RuntimeError(f"the task's outcome could not be pickled: {exc!r}")
            payload = pickle.dumps((seq, _ERROR, _remote(error)))
    conn.send_bytes(payload)


# -- the parent process --------------------------------------------------------


class _Task:
    """One submitted call, parent side. See the state invariant above."""

    __slots__ = (
        "args",
        "fn",
        "future",
        "gen",
        "kill_source",
        "kwargs",
        "reg",
        "seq",
        "source",
        "state",
        "worker",
    )

    def __init__(  # noqa: PLR0917 (one private call site)
        self,
        seq: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        future: CancellableProcessFuture[Any],
        source: CancellationTokenSource,
        gen: CancellationTokenSource,
    ) -> None:
        self.seq = seq
        self.fn: Callable[..., Any] | None = fn
        self.args: tuple[Any, ...] = args
        self.kwargs: dict[str, Any] = kwargs
        self.future = future
        self.source = source
        self.gen = gen
        self.state = _PENDING
        self.worker: _Worker | None = None
        self.reg: Any = None
        self.kill_source: CancellationTokenSource | None = None

    def release(self) -> None:
        """Drop what the task no longer needs once its future ended."""
        self.fn = None
        self.args = ()
        self.kwargs = {}
        if self.reg is not None:
            self.reg.unregister()
            self.reg = None
        self.source.close()
        if self.kill_source is not None:
            self.kill_source.close()
            self.kill_source = None


class _Worker:
    """One worker process and its pipes, parent side (owned by the dispatcher)."""

    __slots__ = (
        "cancel_lock",
        "cancels",
        "conn",
        "done",
        "index",
        "kill_requested",
        "killed",
        "process",
        "retiring",
        "task",
    )

    def __init__(
        self, index: int, process: BaseProcess, conn: Connection, cancels: Connection
    ) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        self.cancels = cancels
        self.cancel_lock = threading.Lock()
        self.task: _Task | None = None
        self.done = 0
        self.retiring = False
        self.kill_requested = False
        self.killed = False

    def send_cancel(self, seq: int, reason: object) -> None:
        data = _SEQ.pack(seq) + dump_reason(reason)
        # The worker is gone (or going) if this fails: the dispatcher handles its death.
        with self.cancel_lock, contextlib.suppress(OSError, ValueError):
            self.cancels.send_bytes(data)


class _Core(ExecutorState):
    """The pool's state, shared by the executor object, its futures and the dispatcher."""

    def __init__(  # noqa: PLR0917 (one private call site)
        self,
        max_workers: int,
        ctx: BaseContext,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_tasks: int | None,
        token: CancellationToken,
    ) -> None:
        super().__init__(token)
        self.max_workers = max_workers
        self.ctx = ctx
        self.fork = ctx.get_start_method() == "fork"
        self.initializer = initializer
        self.initargs = initargs
        self.max_tasks = max_tasks
        self.pending: deque[_Task] = deque()
        self.stale = 0  # claimed tasks still in ``pending``
        self.seq = itertools.count(1)
        self.workers: dict[int, _Worker] = {}  # by index
        self.free_indexes = list(range(max_workers - 1, -1, -1))
        self.processes: dict[int, BaseProcess] = {}
        # One int64 per worker index: the sequence number of the task there
        # that was cancelled. Shared memory without a name (an anonymous arena
        # passed as a file descriptor), so no resource_tracker entry to leak.
        self.flags = ctx.RawArray(ctypes.c_int64, max_workers)
        self.broken: str | bool = False
        self.thread: threading.Thread | None = None
        self.wake_r, self.wake_w = multiprocessing.Pipe(duplex=False)
        self.woken = False
        self.closed = False
        self.pid = os.getpid()
        _pools.add(self)

    # -- called from any thread -------------------------------------------------

    def wake(self) -> None:
        """Wake the dispatcher (coalesced: at most one byte in the pipe)."""
        with self.lock:
            if self.woken or self.closed:
                return
            self.woken = True
            self.wake_w.send_bytes(b"")

    def start(self) -> None:
        """Start the dispatcher (and, for ``fork``, every worker first). Lock held."""
        if self.thread is not None:
            return
        if self.fork:
            # Fork every worker before this pool has a thread of its own,
            # as the stdlib does (https://github.com/python/cpython/issues/90622).
            for _ in range(self.max_workers):
                self.spawn()
        self.thread = threading.Thread(
            target=self.run, name="cancellable-process-dispatcher", daemon=True
        )
        self.thread.start()

    def on_cancel(self, task: _Task) -> None:
        """The registration on a task's token: reach it wherever it is."""
        with self.lock:
            state = task.state
            if state == _PENDING:
                task.state = _DONE
                self.stale += 1
                if self.stale > 64 and self.stale * 2 > len(self.pending):
                    self.pending = deque(t for t in self.pending if t.state == _PENDING)
                    self.stale = 0
            elif state == _DISPATCHED and task.worker is not None:
                worker = task.worker
                self.flags[worker.index] = task.seq
            else:
                return
        if state == _PENDING:
            end_cancelled(task.future)
            task.release()
        else:
            worker.send_cancel(task.seq, task.source.token.reason)

    def claim_pending(self, task: _Task) -> bool:
        with self.lock:
            if task.state != _PENDING:
                return False
            task.state = _DONE
            self.stale += 1
            return True

    def arm_kill(self, task: _Task, grace: float) -> None:
        """After ``grace`` seconds, kill the worker of ``task`` if it still runs it."""
        if grace >= threading.TIMEOUT_MAX:
            return  # longer than any wait can last: never
        with self.lock:
            if task.state == _DONE or task.kill_source is not None:
                return
            # One shared timer thread for every deadline: a source with a timeout.
            ks = task.kill_source = CancellationTokenSource(timeout=grace)
        ks.token.register(self.kill_due, task)

    def kill_due(self, task: _Task) -> None:
        with self.lock:
            worker = task.worker
            if task.state != _DISPATCHED or worker is None or worker.task is not task:
                return
            worker.kill_requested = True
        self.wake()

    # -- the dispatcher thread --------------------------------------------------

    def spawn(self) -> None:
        """Start one worker process. Dispatcher thread, or under the lock before it exists."""
        index = self.free_indexes.pop()
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        cancel_r, cancel_w = self.ctx.Pipe(duplex=False)
        process = self.ctx.Process(  # type: ignore[attr-defined]
            target=_worker_main,
            args=(
                index,
                child_conn,
                cancel_r,
                self.flags,
                self.initializer,
                self.initargs,
                self.max_tasks,
            ),
            name=f"cancellable-worker-{index}",
        )
        try:
            process.start()
        except BaseException:
            self.free_indexes.append(index)
            for c in (parent_conn, child_conn, cancel_r, cancel_w):
                c.close()
            raise
        child_conn.close()
        cancel_r.close()
        self.workers[index] = _Worker(index, process, parent_conn, cancel_w)
        self.processes[process.pid] = process

    def run(self) -> None:
        try:
            self.loop()
        except BaseException as exc:
            _log.critical("the process pool's dispatcher failed", exc_info=True)
            self.break_pool(f"the process pool's dispatcher failed: {exc!r}")
        finally:
            self.close_wake()

    def close_wake(self) -> None:
        with self.lock:
            self.closed = True
            self.wake_w.close()
        self.wake_r.close()

    def loop(self) -> None:
        wait = multiprocessing.connection.wait
        while True:
            self.dispatch()
            with self.lock:
                if self.broken:
                    return
                if self.shutdown and self.idle_and_empty():
                    break
                workers = list(self.workers.values())
            objects: list[Any] = [self.wake_r]
            for w in workers:
                objects.append(w.conn)
                objects.append(w.process.sentinel)
            ready = wait(objects)
            if self.wake_r in ready:
                with self.lock:
                    self.woken = False
                    while self.wake_r.poll():
                        self.wake_r.recv_bytes()
            for w in workers:
                if w.conn in ready:
                    self.read_replies(w)
                    if self.broken:
                        return
                if w.process.sentinel in ready:
                    self.reap(w)
                    if self.broken:
                        return
            self.kill_requested(workers)
        self.stop_workers()

    def idle_and_empty(self) -> bool:
        return not any(t.state == _PENDING for t in self.pending) and not any(
            w.task is not None for w in self.workers.values()
        )

    def kill_requested(self, workers: list[_Worker]) -> None:
        for w in workers:
            if w.kill_requested and not w.killed and w.task is not None:
                # A reply already in the pipe wins over the kill.
                self.read_replies(w)
                if w.task is not None:
                    w.killed = True
                    w.process.kill()

    def dispatch(self) -> None:
        """Hand pending tasks to idle workers; spawn workers while there is work."""
        while True:
            with self.lock:
                while self.pending and self.pending[0].state != _PENDING:
                    self.pending.popleft()
                    self.stale -= 1
                if not self.pending or self.broken:
                    self.stale = 0 if not self.pending else self.stale
                    return
                idle = next(
                    (
                        w
                        for w in self.workers.values()
                        if w.task is None and not w.retiring and not w.killed
                    ),
                    None,
                )
                if idle is None:
                    if self.free_indexes:
                        spawn = True
                    else:
                        return
                else:
                    spawn = False
                    task = self.pending.popleft()
                    task.state = _DISPATCHED
                    task.worker = idle
                    idle.task = task
            if spawn:
                try:
                    self.spawn()
                except Exception as exc:
                    _log.critical("could not start a worker process", exc_info=True)
                    self.break_pool(f"could not start a worker process: {exc!r}")
                    return
                continue
            assert idle is not None
            self.send_task(idle, task)

    def send_task(self, worker: _Worker, task: _Task) -> None:
        future = task.future
        if not Future.set_running_or_notify_cancel(future):
            # future.cancel() won between the claim and here.
            self.finish(worker, task)
            return
        try:
            payload = pickle.dumps((task.fn, task.args, task.kwargs))
        except BaseException as exc:
            self.finish(worker, task)
            future.set_exception(exc)
            return
        # If the worker died, reap() settles the task.
        with contextlib.suppress(OSError, ValueError):
            worker.conn.send_bytes(_SEQ.pack(task.seq) + payload)
        worker.done += 1
        if self.max_tasks is not None and worker.done >= self.max_tasks:
            worker.retiring = True

    def finish(self, worker: _Worker, task: _Task) -> None:
        with self.lock:
            task.state = _DONE
            if worker.task is task:
                worker.task = None
        task.release()

    def read_replies(self, w: _Worker) -> None:
        try:
            while w.conn.poll():
                data = w.conn.recv_bytes()
                self.settle(w, data)
        except (EOFError, OSError):
            pass  # the sentinel reports the death

    def settle(self, w: _Worker, data: bytes) -> None:
        try:
            seq, kind, value = pickle.loads(data)
        except BaseException as exc:
            task = w.task
            if task is None:
                return
            self.finish(w, task)
            task.future.set_exception(exc)
            return
        if kind == _INIT_FAILED:
            self.break_pool(_BROKEN_INIT, cause=value)
            return
        task = w.task
        if task is None or task.seq != seq:
            return
        self.finish(w, task)
        future = task.future
        if kind == _OK:
            future.set_result(value)
        elif kind == _ERROR:
            future.set_exception(value)
        else:
            end_cancelled(future)

    def reap(self, w: _Worker) -> None:
        """A worker process ended: settle its task, free its slot."""
        self.read_replies(w)
        w.process.join()
        with self.lock:
            self.workers.pop(w.index, None)
            self.processes.pop(w.process.pid, None)  # type: ignore[arg-type]
            self.free_indexes.append(w.index)
            task = w.task
        w.conn.close()
        with w.cancel_lock:
            w.cancels.close()
        if task is None and (w.retiring or self.shutdown):
            return
        if w.killed:
            if task is not None:
                self.finish(w, task)
                end_cancelled(task.future)
            return
        self.break_pool(_BROKEN_POOL, orphan=task)

    def break_pool(self, message: str, cause: object = None, orphan: _Task | None = None) -> None:
        """Fail every task with `BrokenProcessPool` and stop every worker."""
        with self.lock:
            if self.broken:
                return
            self.broken = message
            tasks = [t for t in self.pending if t.state == _PENDING]
            if orphan is not None and orphan.state == _DISPATCHED:
                tasks.append(orphan)
            tasks += [w.task for w in self.workers.values() if w.task is not None]
            for t in tasks:
                t.state = _DONE
            self.pending.clear()
            workers = list(self.workers.values())
            self.workers.clear()
            self.processes.clear()
        for w in workers:
            w.task = None
            w.process.kill()
        for w in workers:
            w.process.join()
            w.conn.close()
            with w.cancel_lock:
                w.cancels.close()
        for t in tasks:
            exc = BrokenProcessPool(_BROKEN_TASK)
            if isinstance(cause, BaseException):
                exc.__cause__ = cause
            t.future.set_exception(exc)
            t.release()

    def stop_workers(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            with contextlib.suppress(OSError, ValueError):
                w.conn.send_bytes(_SEQ.pack(0))
        for w in workers:
            w.process.join()
            w.conn.close()
            with w.cancel_lock:
                w.cancels.close()
        with self.lock:
            self.workers.clear()
            self.processes.clear()


@final
class CancellableProcessFuture(RemoteFuture[_R]):
    """The future of a `CancellableProcessPoolExecutor` task.

    A `concurrent.futures.Future` with the task's token and ways to cancel the
    task itself. ``cancel()`` keeps the stdlib meaning: True only while the
    task has not been handed to a worker.
    """

    __module__ = "cancellable"

    def __init__(self) -> None:
        super().__init__()
        self._task: _Task | None = None
        self._core: _Core | None = None
        self._token: CancellationToken = CancellationToken.NONE

    @property
    def token(self) -> CancellationToken:
        """The task's parent-side token: a child of the submit, executor and pool tokens."""
        return self._token

    def cancel(self) -> bool:
        """Cancel the task if it has not been handed to a worker yet (stdlib meaning).

        Returns:
            True if the future is cancelled.
        """
        task, core = self._task, self._core
        if task is not None and core is not None and core.claim_pending(task):
            end_unstarted(self)
            task.release()
            return True
        return Future.cancel(self)

    def request_cancel(self, reason: object = None, *, kill_after: float | None = None) -> None:
        """Cancel this one task's token.

        A pending task ends cancelled at once; a running one sees its
        `current_token()` cancelled in the worker. With ``kill_after``, a task
        still running that many seconds later has its worker process killed
        (the pool starts a new one; other workers' tasks run on) and its future
        ends cancelled. Does not block.

        Args:
            reason: The token's reason.
            kill_after: Grace in seconds before the worker is killed; None
                (the default), infinity or anything from
                `threading.TIMEOUT_MAX` up never kills.

        Raises:
            TypeError: ``kill_after`` is not a number.
            ValueError: ``kill_after`` is negative or NaN.
        """
        grace = check_seconds(kill_after, "kill_after")
        task, core = self._task, self._core
        if task is None or core is None:
            return
        source = task.source
        if not source.closed:
            log_cancel_errors(source, reason)
        if grace is not None:  # None: no kill (also for an infinite grace)
            core.arm_kill(task, grace)


def _chunk_call(fn: Callable[..., _R], chunk: list[tuple[Any, ...]]) -> list[_R]:
    return [fn(*args) for args in chunk]


class CancellableProcessPoolExecutor(ProcessPoolExecutor):
    """A `ProcessPoolExecutor` whose tasks carry cancellation tokens.

    ``submit``/``map`` take ``token=``; in the worker process `current_token()`
    is a local token that the parent's cancel reaches (a shared-memory flag for
    tasks about to start, a pipe message for running ones), so checking it
    costs no IPC and ``wait()`` blocks without polling. `cancel_all` drops the
    backlog and signals running tasks; ``kill_after=`` escalates to killing a
    worker whose task ignores the cancel.
    """

    __module__ = "cancellable"

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        *,
        token: CancellationToken | None = None,
    ) -> None:
        """Create the pool; worker processes start on demand.

        Args:
            max_workers: Most worker processes (default: the CPU count).
            mp_context: A `multiprocessing` context (default as the stdlib:
                the default context, or ``spawn`` with ``max_tasks_per_child``).
            initializer: Called in each worker process before its first task.
            initargs: Arguments for ``initializer``.
            max_tasks_per_child: Tasks a worker runs before it is replaced.
            token: Cancelling it cancels every task and makes later submits
                return cancelled futures.

        Raises:
            TypeError: A wrong argument type (the stdlib's messages).
            ValueError: ``max_workers`` < 1, ``max_tasks_per_child`` < 1 or
                ``max_tasks_per_child`` with the ``fork`` start method.
        """
        if max_workers is None:
            count = getattr(os, "process_cpu_count", os.cpu_count)()
            max_workers = count or 1
        elif isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an integer, got {type(max_workers).__name__!r}")
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if mp_context is None:
            if max_tasks_per_child is not None:
                mp_context = multiprocessing.get_context("spawn")
            else:
                mp_context = multiprocessing.get_context()
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if mp_context.get_start_method() == "fork":
                raise ValueError(
                    "max_tasks_per_child is incompatible with the 'fork' multiprocessing"
                    " start method; supply a different mp_context."
                )
        token = executor_token(token)
        self._max_workers = max_workers
        self._mp_context = mp_context
        self._initializer = initializer  # type: ignore[assignment]
        self._initargs = initargs
        self._max_tasks_per_child = max_tasks_per_child
        self._core = _Core(
            max_workers, mp_context, initializer, tuple(initargs), max_tasks_per_child, token
        )
        # Dropping the executor without shutdown lets the workers finish and exit.
        weakref.finalize(self, _shutdown_core, self._core)

    # The stdlib attributes real code reads, with their stdlib meanings.
    @property
    def _processes(self) -> dict[int, BaseProcess]:  # type: ignore[override]
        return self._core.processes

    @property
    def _broken(self) -> str | bool:  # type: ignore[override]
        return self._core.broken

    @property
    def _shutdown_thread(self) -> bool:  # type: ignore[override]
        return self._core.shutdown

    @property
    def token(self) -> CancellationToken:
        """The executor's token (`CancellationToken.NONE` if none was given)."""
        return self._core.token

    def submit(  # type: ignore[override]
        self,
        fn: Callable[..., _R],
        /,
        *args: Any,
        token: CancellationToken | None = None,
        **kwargs: Any,
    ) -> CancellableProcessFuture[_R]:
        """Schedule ``fn(*args, **kwargs)`` in a worker process and return its future.

        ``fn``, the arguments and the result must pickle. In the worker,
        `current_token()` is the task's token. ``token`` is taken by the
        executor; a callable that needs a ``token`` keyword gets it through
        `functools.partial`. Does not block (pickling happens on the pool's
        dispatcher thread; a pickling error becomes the future's exception).

        Args:
            fn: The callable (picklable).
            *args: Its positional arguments.
            token: Cancels this task; None means the ambient token
                (`current_token()`). Already cancelled: the returned future is
                cancelled and ``fn`` never runs.
            **kwargs: Its keyword arguments.

        Raises:
            RuntimeError: After `shutdown` or interpreter shutdown.
            BrokenProcessPool: A worker died abruptly or an initializer failed.
            TypeError: ``fn`` is not callable or ``token`` is not a token.
        """
        token = submit_token(token)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__!r}")
        core = self._core
        future: CancellableProcessFuture[_R] = CancellableProcessFuture()
        with core.lock:
            if core.broken:
                raise BrokenProcessPool(core.broken)
            if core.shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _exiting:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            gen = core.gen
        source = core.task_source(gen, token)
        task = _Task(next(core.seq), fn, args, kwargs, future, source, gen)
        future._task = task
        future._core = core
        future._token = source.token
        if source.is_cancellation_requested:
            task.state = _DONE
            end_unstarted(future)
            task.release()
            return future
        with core.lock:
            if core.broken:
                source.close()
                raise BrokenProcessPool(core.broken)
            core.pending.append(task)
            core.start()
        task.reg = source.token.register(core.on_cancel, task)
        if task.state == _PENDING:
            core.wake()
        return future

    def map(
        self,
        fn: Callable[..., _R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        token: CancellationToken | None = None,
    ) -> Iterator[_R]:
        """Return an iterator of ``fn`` applied to the items of ``iterables``, in order.

        As the stdlib (every call submitted now, ``chunksize`` items per task),
        plus: closing the iterator, a timeout or cancelling ``token`` cancels
        every call whose result was not yielded yet. Iterating blocks.

        Args:
            fn: The callable (picklable).
            *iterables: One iterable per positional argument of ``fn``.
            timeout: Seconds from this call until all results are due.
            chunksize: Items per task.
            token: Cancels the calls; None means the ambient token.

        Raises:
            TypeError: ``chunksize`` or ``token`` has the wrong type.
            ValueError: ``chunksize`` < 1.
            TimeoutError: (while iterating) a result was not ready in time.
            OperationCancelledError: (while iterating) ``token`` was cancelled
                before the next result could be delivered.
            Exception: (while iterating) whatever a call raised.
        """
        if isinstance(chunksize, bool) or not isinstance(chunksize, int):
            raise TypeError("chunksize must be an integer")
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        token, deadline, source = map_source(timeout, token)
        stok = source.token
        calls = zip(*iterables)  # noqa: B905 (stops at the shortest, as map() does)
        fs: list[Future[Any]]
        if chunksize == 1:
            fs = [self.submit(fn, *args, token=stok) for args in calls]
        else:
            fs = []
            while chunk := list(itertools.islice(calls, chunksize)):
                fs.append(self.submit(_chunk_call, fn, chunk, token=stok))
        return MapResults(fs, chunksize > 1, deadline, source, token)

    def cancel_all(self, reason: object = None, *, kill_after: float | None = None) -> None:
        """Cancel every task submitted so far; keep the workers for new ones.

        Pending tasks end cancelled at once and never start; running tasks'
        tokens are cancelled in their workers. With ``kill_after``, the worker
        of a task still running that many seconds later is killed (and
        replaced); that task's future ends cancelled. Tasks submitted
        afterwards are unaffected. Does not block.

        Raises:
            TypeError: ``kill_after`` is not a number.
            ValueError: ``kill_after`` is negative or NaN.
        """
        grace = check_seconds(kill_after, "kill_after")
        core = self._core
        fresh = CancellationTokenSource()
        with core.lock:
            old, core.gen = core.gen, fresh
            running = [w.task for w in core.workers.values() if w.task is not None]
        log_cancel_errors(old, reason)
        if grace is not None:
            for task in running:
                if task.gen is old:
                    core.arm_kill(task, grace)
        old.close()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; the workers exit once the backlog is done.

        As the stdlib, plus: ``cancel_futures=True`` also cancels running
        tasks' tokens (cooperative tasks stop). Safe to call more than once.

        Args:
            wait: Block until the dispatcher and every worker have exited.
            cancel_futures: Cancel pending tasks (they never start) and signal
                running ones.
        """
        gen = self._core.refuse_tasks()
        if cancel_futures:
            log_cancel_errors(gen, SHUT_DOWN)
        _shutdown_core(self._core, wait)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> Literal[False]:
        """Shut down and wait; if the block raised (Ctrl-C included), cancel everything first.

        As the thread pool's: the reason is a text naming the exception, so
        that its traceback (and every local of the block) is not kept alive.
        """
        if exc_type is not None:
            reason = f"the executor's with block was left by {exc_val!r}"
            del exc_val, exc_tb
            log_cancel_errors(self._core.refuse_tasks(), reason)
        self.shutdown(wait=True)
        return False


def _shutdown_core(core: _Core, wait: bool = False) -> None:
    with core.lock:
        core.shutdown = True
        thread = core.thread
    core.wake()
    if wait and thread is not None and thread is not threading.current_thread():
        thread.join()


def _python_exit() -> None:
    global _exiting
    _exiting = True
    # A forked worker runs this too when it exits: the pools it inherited are
    # not its own (and their lock may have been held at the fork).
    cores = [core for core in list(_pools) if core.pid == os.getpid()]
    for core in cores:
        _shutdown_core(core, False)
    try:
        _join_dispatchers(cores)
    except KeyboardInterrupt:
        # Ctrl-C while waiting for a backlog: cancel every task's token and
        # wait for the cooperative ones; a second Ctrl-C stops waiting.
        for core in cores:
            log_cancel_errors(core.gen, KeyboardInterrupt())
        _join_dispatchers(cores)


def _join_dispatchers(cores: list[_Core]) -> None:
    for core in cores:
        thread = core.thread
        if thread is not None:
            thread.join()


# Before non-daemon threads are joined, as the stdlib's own pool does.
threading._register_atexit(_python_exit)  # type: ignore[attr-defined]
