"""`CancellableThreadPoolExecutor`: the stdlib thread pool, rebuilt around tokens.

The pool keeps the stdlib's shape (a `SimpleQueue` of work, worker threads
created on demand, a sentinel ``None`` to stop them) and its observable
attributes (``_max_workers``, ``_threads``, ``_broken``, ``_shutdown``), but a
task is its `CancellableFuture` itself, so submitting allocates one object and
one context copy.

Pending tasks live in *groups*, one per submit token, inside the pool's current
*generation* (what `cancel_all` cancels). A group holds its tasks in a dict used
as an ordered set and has ONE registration on its token; a generation has one
on its own token. Whoever pops a task from its group's dict owns it: a worker
runs it, a canceller ends it cancelled. So a cancel of 100,000 pending tasks is
one callback popping them all, and a worker meeting a cancelled task in the
queue just skips it.

State that submit, shutdown and cancellation must agree on (the shutdown
flags, the current generation, a group's membership) changes under the pool's
one lock (``_Core.lock``), which no callback ever runs under. The pool's
workers and futures refer to the `_Core`, never to the executor, so an
executor nobody references is collected and its workers exit, as in the stdlib.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from _thread import allocate_lock
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures._base import FINISHED, LOGGER
from concurrent.futures.thread import BrokenThreadPool
from functools import partial
from itertools import islice
from queue import Empty, SimpleQueue
from types import TracebackType
from typing import Any, Final, Literal, ParamSpec, TypeVar, final, overload

from ._checks import check_seconds
from ._primitives import _check_timeout
from ._stats import ExecutorStatistics, Laggard
from ._task import (
    Board,
    CancellableFuture,
    SignalSafeCondition,
    WorkerRecord,
    cancel_pending,
    context_run_target,
    execute,
    new_task,
    reject,
    unwatch_all,
)
from ._token import (
    CancellationToken,
    CancellationTokenSource,
    _ambient,
)

__all__ = ["CancellableThreadPoolExecutor", "TokenBoundExecutor"]

_log = logging.getLogger("cancellable")

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T1 = TypeVar("_T1")
_T2 = TypeVar("_T2")

_NONE: Final = CancellationToken.NONE

# Every live pool, for the interpreter-exit hook and the fork handler.
_live: weakref.WeakSet[_Core] = weakref.WeakSet()
_exiting = False
# Called with "waiting" just before the exit hook waits for workers and with
# "cancelled" after a Ctrl-C cancelled them (tests use it to time signals).
_exit_wait_hooks: list[Callable[[str], object]] = []


class _Core(Board):
    """What an executor shares with its workers and futures (never the executor)."""

    __slots__ = (
        "alive",
        "broken",
        "exited",
        "full",
        "idle",
        "laggard_grace",
        "launching",
        "queue",
        "shutdown",
        "threads",
        "worker_ids",
    )

    def __init__(
        self, ex_token: CancellationToken | None, max_pending: int | None, laggard_grace: float
    ) -> None:
        queue: SimpleQueue[CancellableFuture[Any] | None] = SimpleQueue()
        super().__init__(ex_token, max_pending, queue.put)
        self.queue = queue
        # One item per finished task while the pool may still grow: the
        # stdlib's idle semaphore, without the semaphore.
        self.idle: SimpleQueue[None] = SimpleQueue()
        self.full = False
        self.threads: set[threading.Thread] = set()
        self.worker_ids: set[int] = set()
        self.shutdown = False
        self.broken: str | bool = False
        # Workers started and not yet finished, and the condition they
        # notify on their way out.
        # The workers started and not yet finished (a dict used as a set:
        # entering and leaving it is one statement, so a signal never leaves
        # a count wrong).
        self.alive: dict[threading.Thread, bool] = {}
        self.exited = SignalSafeCondition(threading.Lock())
        # Threads being started, each already in ``alive``. The
        # thread and its starter each pop it (an atomic dict.pop); whichever
        # gets None knows the other one has settled the count.
        self.launching: dict[threading.Thread, bool] = {}
        self.laggard_grace = laggard_grace

    def wait_for_workers(
        self, threads: list[threading.Thread], reported: set[int] | None = None
    ) -> None:
        """Block until every worker has finished, then join them.

        Waiting on a condition rather than in ``Thread.join`` first keeps a
        Ctrl-C harmless: on 3.11 a ``join`` interrupted by KeyboardInterrupt
        can mark a still-running thread as stopped, and then nobody (not even
        the interpreter at exit) waits for it any more.

        Meanwhile, each task still running ``laggard_grace`` seconds after its
        cancel is logged once (WARNING, the ``cancellable`` logger), with its
        stack: the answer to "why does my program not exit". The wait wakes
        for that at the moment the next known laggard is due, never by
        polling; a cancel made by another thread during the wait is noticed
        when a worker exits or a known deadline passes.
        """
        if threading.get_ident() not in self.worker_ids:
            if reported is None:
                reported = set()
            while True:
                due = self.report_laggards(reported)
                with self.exited:
                    if not self.alive:
                        break
                    # A huge laggard_grace (1e10 for "never report") must
                    # not overflow the C lock's timeout.
                    self.exited.wait(None if due is None else min(due, threading.TIMEOUT_MAX))
        # From one of the pool's own workers this raises the stdlib's
        # "cannot join current thread", as ThreadPoolExecutor does.
        for thread in threads:
            thread.join()

    def must_not_block(self) -> bool:
        """Whether a bounded submit from this thread is admitted over the bound:
        from one of the pool's own workers, or from a thread running an asyncio
        loop (either would deadlock)."""
        return threading.get_ident() in self.worker_ids or _in_event_loop()

    def takes_no_task(self) -> bool:
        """Whether the pool can take no more tasks (a blocked submit stops waiting)."""
        return bool(self.shutdown or self.broken or _exiting)

    def report_laggards(self, reported: set[int]) -> float | None:
        """Log the laggards not reported yet; return seconds until the next is due."""
        found, due = self.laggards(self.laggard_grace)
        for laggard, key in found:
            if key not in reported:
                reported.add(key)
                _log.warning("a cancelled task is still running: %s", laggard)
        return due

    def worker_exited(self, thread: threading.Thread) -> None:
        with self.exited:
            self.alive.pop(thread, None)
            last = not self.alive
            self.exited.notify_all()
        if last and self.shutdown:
            self.release()

    def initializer_failed(self) -> None:
        with self.lock:
            self.broken = "A thread initializer failed, the thread pool is not usable anymore"
            groups = list(self.gen.groups.values())
        first: BaseException | None = None
        try:
            for group in groups:
                try:
                    ended = group.drain(None, BrokenThreadPool(self.broken))
                    with self.lock:
                        self.failed_pending += ended
                except BaseException as error:  # every group ends first
                    first = first or error
            self.wake_blocked_submitters()
            if first is not None:
                raise first
        finally:
            first = None


class _IdleSemaphore:
    """The stdlib's ``_idle_semaphore``, for code that reaches for it."""

    __slots__ = ("_idle",)

    def __init__(self, idle: SimpleQueue[None]) -> None:
        self._idle = idle

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        try:
            self._idle.get(blocking, timeout)
        except Empty:
            return False
        return True

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._idle.put(None)

    __enter__ = acquire

    def __exit__(self, *exc: object) -> None:
        self.release()


def _run_task(
    future: CancellableFuture[Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    # Runs inside the task's own copy of the submitter's context: the future
    # stands in for the task's token until current_token() asks for it.
    _ambient.set(future)
    if type(fn) is partial:
        ctx = context_run_target(fn)
        if ctx is not None:
            # asyncio.to_thread and friends submit partial(ctx.run, func,
            # *args): func runs in ctx, not in the copy set above, so the
            # task's token is made ambient inside ctx for the call's length.
            return ctx.run(
                _run_in, future, fn.args[0], fn.args[1:] + args, {**fn.keywords, **kwargs}
            )
    return fn(*args, **kwargs)


def _run_in(
    future: CancellableFuture[Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    # Like _run_task, inside a context the caller owns: leave it as it was.
    reset = _ambient.set(future)
    try:
        return fn(*args, **kwargs)
    finally:
        _ambient.reset(reset)


def _work(
    core: _Core,
    executor_ref: weakref.ref[CancellableThreadPoolExecutor],
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> None:
    ident = threading.get_ident()
    core.worker_ids.add(ident)
    record = WorkerRecord(ident, threading.current_thread().name)
    core.enrol(record)
    try:
        _serve(core, executor_ref, initializer, initargs, record)
    finally:
        core.retire(record)


def _serve(
    core: _Core,
    executor_ref: weakref.ref[CancellableThreadPoolExecutor],
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    record: WorkerRecord,
) -> None:
    if initializer is not None:
        reset = _ambient.set(core.ex_token or _NONE)
        try:
            initializer(*initargs)
        except BaseException:
            LOGGER.critical("Exception in initializer:", exc_info=True)
            core.initializer_failed()
            return
        finally:
            _ambient.reset(reset)
    get = core.queue.get
    idle_put = core.idle.put
    try:
        while True:
            future = get()
            if future is None:
                if _exiting or core.shutdown or executor_ref() is None:
                    core.shutdown = True
                    core.queue.put(None)
                    return
                continue
            execute(future, _run_task, record)
            # Drop references before blocking again (the stdlib's issue16284).
            del future
            if not core.full:
                idle_put(None)
    except BaseException:
        LOGGER.critical("Exception in worker", exc_info=True)


_cpu_count: Callable[[], int | None] = getattr(os, "process_cpu_count", os.cpu_count)


def _worker(
    core: _Core,
    executor_ref: weakref.ref[CancellableThreadPoolExecutor],
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> None:
    this = threading.current_thread()
    if core.launching.pop(this, None) is None:
        # Thread.start() raised (a Ctrl-C while it waited for this thread to
        # signal) and its caller took this worker out of the pool, not
        # knowing the thread was launched: it is a worker after all.
        core.alive[this] = True
        with core.lock:
            core.threads.add(this)
    try:
        _work(core, executor_ref, initializer, initargs)
    finally:
        # The system reuses a dead thread's id for new threads: one that is
        # not a worker must not pass for one (shutdown would not wait, a
        # bounded submit would not block).
        core.worker_ids.discard(threading.get_ident())
        core.worker_exited(this)


class CancellableThreadPoolExecutor(ThreadPoolExecutor):
    """A `concurrent.futures.ThreadPoolExecutor` whose tasks have cancellation tokens.

    With no token anywhere it behaves as the stdlib pool (same defaults,
    errors, thread names, idle-thread reuse, broken pool when an initializer
    fails, workers joined at interpreter exit). Tokens add: ``submit(...,
    token=)``, `cancel_all`, the executor's own ``token=``, ``max_pending``
    backpressure, and a per-task token (`CancellableFuture.token`,
    `current_token()` in the task) that cancellation reaches whether the task
    is pending (it ends cancelled at once and never starts) or running (a
    cooperative task stops; an `OperationCancelledError` escaping while its
    token is cancelled ends the future cancelled).

    Args:
        max_workers: Most threads at once; default ``min(32, cpus + 4)``, where
            cpus is what the stdlib of this Python counts: the CPUs this
            process may use (``os.process_cpu_count()``) from 3.13 on, else
            ``os.cpu_count()``.
        thread_name_prefix: Prefix of worker thread names.
        initializer: Called in each new worker before any task; its
            `current_token()` is the executor's token.
        initargs: Arguments for ``initializer``.
        token: Cancelling it cancels every task, pending and running, and
            makes later submits return cancelled futures.
        max_pending: Most tasks not yet started; ``submit`` blocks when that
            many are waiting. None means unbounded.
        laggard_grace: Seconds a task may go on running after its token was
            cancelled before ``shutdown(wait=True)``, a ``with`` exit or the
            interpreter-exit wait logs it (WARNING, ``cancellable`` logger,
            with its stack). Infinity never reports.

    Raises:
        ValueError: ``max_workers`` or ``max_pending`` is not greater than 0,
            or ``laggard_grace`` is negative or NaN.
        TypeError: ``initializer`` is not callable, ``token`` is not a
            `CancellationToken`, ``max_workers`` or ``max_pending`` is not
            an integer, or ``laggard_grace`` is not a number.
    """

    __module__ = "cancellable"

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        token: CancellationToken | None = None,
        max_pending: int | None = None,
        laggard_grace: float = 5.0,
    ) -> None:
        grace = check_seconds(laggard_grace, "laggard_grace")
        if max_workers is None:
            # As the stdlib of each version: 3.13 counts the CPUs this process
            # may use (its affinity), earlier versions every CPU.
            max_workers = min(32, (_cpu_count() or 1) + 4)
        elif isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(
                f"max_workers must be an integer or None, got {type(max_workers).__name__!r}"
            )
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if token is not None and token.__class__ is not CancellationToken:
            raise TypeError(
                f"token must be a CancellationToken or None, got {type(token).__name__!r}"
            )
        if max_pending is not None:
            if isinstance(max_pending, bool) or not isinstance(max_pending, int):
                raise TypeError(
                    f"max_pending must be an integer or None, got {type(max_pending).__name__!r}"
                )
            if max_pending <= 0:
                raise ValueError(f"max_pending must be greater than 0, got {max_pending!r}")
        ex_token = token if token is not None and token._lock is not None else None
        core = _Core(ex_token, max_pending, threading.TIMEOUT_MAX if grace is None else grace)
        self._core = core
        self._max_workers = max_workers
        self._work_queue = core.queue  # type: ignore[assignment]
        self._threads = core.threads
        self._thread_name_prefix = thread_name_prefix or (
            f"ThreadPoolExecutor-{self._counter()}"  # type: ignore[attr-defined]
        )
        self._initializer = initializer  # type: ignore[assignment]
        self._initargs = initargs
        self._token = token if token is not None else _NONE
        _live.add(core)

    # The stdlib's attributes, kept with their meanings.

    @property
    def _shutdown(self) -> bool:
        return self._core.shutdown

    @_shutdown.setter
    def _shutdown(self, value: bool) -> None:
        self._core.shutdown = value

    @property  # type: ignore[override]
    def _broken(self) -> str | bool:
        return self._core.broken

    @_broken.setter
    def _broken(self, value: str | bool) -> None:
        self._core.broken = value

    @property
    def _shutdown_lock(self) -> threading.RLock:  # type: ignore[override]
        # The stdlib's lock around submit and shutdown, for code that takes it.
        return self._core.lock

    @property
    def _idle_semaphore(self) -> _IdleSemaphore:  # type: ignore[override]
        return _IdleSemaphore(self._core.idle)

    @property
    def token(self) -> CancellationToken:
        """The executor's token (`CancellationToken.NONE` if none was given)."""
        return self._token

    # -- submitting ------------------------------------------------------------

    def submit(  # type: ignore[override]
        self,
        fn: Callable[..., _R],
        /,
        *args: Any,
        token: CancellationToken | None = None,
        **kwargs: Any,
    ) -> CancellableFuture[_R]:
        """Schedule ``fn(*args, **kwargs)`` and return its future.

        The task runs in a copy of this thread's context, with its own token
        (a child of ``token``, the executor's token and the pool's current
        generation) as `current_token()`. ``token`` is taken by the executor; a
        callable that needs a ``token`` keyword gets it through
        `functools.partial`. For exact argument types use
        ``executor.with_token(token).submit(...)``.

        Blocks only when ``max_pending`` tasks are already waiting (not when
        called from one of this pool's workers or from a thread running an
        asyncio loop: those are admitted over the bound).

        Args:
            fn: The callable.
            *args: Its positional arguments.
            token: Cancels this task; None means the ambient token
                (`current_token()`). Already cancelled: the returned future
                is cancelled and ``fn`` never runs.
            **kwargs: Its keyword arguments.

        Returns:
            The task's `CancellableFuture`.

        Raises:
            RuntimeError: After `shutdown` or interpreter shutdown.
            BrokenThreadPool: An initializer failed.
            TypeError: ``fn`` is not callable or ``token`` is not a token.
            OperationCancelledError: ``token`` was cancelled while this call
                blocked on ``max_pending``.
        """
        return self._submit(fn, args, kwargs, token)

    def _submit(
        self,
        fn: Callable[..., _R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        token: CancellationToken | None,
    ) -> CancellableFuture[_R]:
        if token is None:
            ambient = _ambient.get()
            if ambient is _NONE:
                tok = None
            elif ambient.__class__ is CancellationToken:
                tok = ambient
            else:
                tok = ambient.token  # type: ignore[union-attr]
        elif token.__class__ is CancellationToken:
            tok = token if token._lock is not None else None
        else:
            raise TypeError(
                f"token must be a CancellationToken or None, got {type(token).__name__!r}"
            )
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__!r}")
        core = self._core
        future: CancellableFuture[_R] = new_task(fn, args, kwargs)
        cause = stale = None
        try:
            if core.bounded and not (tok is not None and tok._cancelled):
                core.reserve_slot(future, tok, core.must_not_block, core.takes_no_task)
            with core.lock:
                if core.broken:
                    raise BrokenThreadPool(core.broken)
                if core.shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown")
                if _exiting:
                    raise RuntimeError("cannot schedule new futures after interpreter shutdown")
                cause, stale = core.enqueue(future, tok)
                if cause is None and not core.full:
                    self._adjust_thread_count()
        except BaseException:
            if core.bounded and (future._group is None or future not in future._group):
                # Not queued (or already claimed): give its slot back, if it took one.
                core.free_slots((future,))
            raise
        finally:
            if stale:
                unwatch_all(stale)
        if cause is not None:
            if core.bounded:
                core.free_slots((future,))
            reject(future, cause)
        elif tok is not None and tok._cancelled:
            # Cancelled while it was being queued, after its group's or its
            # own watch ran without finding it: end it now, not when a
            # worker takes it (ending it is idempotent).
            cancel_pending(future, tok)
        return future

    def _adjust_thread_count(self) -> None:
        # Called with the pool's lock held, as in the stdlib.
        core = self._core
        try:
            core.idle.get_nowait()
        except Empty:
            pass
        else:
            return
        num_threads = len(self._threads)
        if num_threads < self._max_workers:
            thread_name = f"{self._thread_name_prefix or self}_{num_threads}"
            queue = core.queue

            def wake_workers(_: object, queue: SimpleQueue[Any] = queue) -> None:
                queue.put(None)

            thread = threading.Thread(
                name=thread_name,
                target=_worker,
                args=(core, weakref.ref(self, wake_workers), self._initializer, self._initargs),
            )
            try:
                # One statement: a signal cannot separate the two entries.
                core.alive[thread] = core.launching[thread] = True
                core.threads.add(thread)
                thread.start()
            except BaseException:
                # The thread may or may not have been launched (a Ctrl-C can
                # land once it runs, while start() waits for its signal).
                if core.launching.pop(thread, None) is not None:
                    # Not running yet, perhaps never: take it out of the pool
                    # (a thread that does run after all puts itself back).
                    with core.exited:
                        core.alive.pop(thread, None)
                        core.exited.notify_all()
                    core.threads.discard(thread)
                raise
            if num_threads + 1 >= self._max_workers:
                core.full = True

    # -- what the pool is doing ----------------------------------------------------

    def statistics(self) -> ExecutorStatistics:
        """Return a snapshot of the pool's counts (see `ExecutorStatistics`).

        Exact whenever the pool is quiescent; cheap enough to poll (it sums
        one small record per worker and takes the pool's lock briefly, never
        blocking on tasks). The submit and run paths take no lock for it.
        """
        return self._core.statistics(len(self._core.alive))

    def laggards(self, grace: float = 0.0) -> list[Laggard]:
        """Return the running tasks whose token was cancelled over ``grace`` seconds ago.

        Each `Laggard` names the worker thread, the callable, the seconds
        since the cancel, the reason and the worker's current stack: the
        tasks that hold up a shutdown because they do not check their token.
        Never blocks on tasks.

        Raises:
            TypeError: ``grace`` is not a number.
            ValueError: ``grace`` is negative or NaN.
        """
        seconds = check_seconds(grace, "grace")
        found, _ = self._core.laggards(threading.TIMEOUT_MAX if seconds is None else seconds)
        return [laggard for laggard, _ in found]

    def with_token(self, token: CancellationToken) -> TokenBoundExecutor:
        """Return a view of this executor whose ``submit``/``map`` use ``token``.

        ``executor.with_token(tok).submit(fn, *args, **kwargs)`` is
        ``executor.submit(fn, *args, token=tok, **kwargs)`` with the exact
        argument types of ``fn`` (a `ParamSpec`), and no keyword taken away
        from ``fn``. Cheap; never blocks.

        Raises:
            TypeError: ``token`` is not a `CancellationToken`.
        """
        return TokenBoundExecutor(self, token)

    @overload
    def map(
        self,
        fn: Callable[[_T1], _R],
        iterable: Iterable[_T1],
        /,
        *,
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        token: CancellationToken | None = None,
    ) -> Iterator[_R]: ...

    @overload
    def map(
        self,
        fn: Callable[[_T1, _T2], _R],
        iterable1: Iterable[_T1],
        iterable2: Iterable[_T2],
        /,
        *,
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        token: CancellationToken | None = None,
    ) -> Iterator[_R]: ...

    @overload
    def map(
        self,
        fn: Callable[..., _R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        token: CancellationToken | None = None,
    ) -> Iterator[_R]: ...

    def map(
        self,
        fn: Callable[..., _R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
        token: CancellationToken | None = None,
    ) -> Iterator[_R]:
        """Return an iterator of ``fn`` applied to the items of ``iterables``, in order.

        Without ``buffersize`` every call is submitted now, as in the stdlib;
        with it, at most ``buffersize`` results are in flight and items are read
        lazily. Closing the iterator, a timeout, or cancelling ``token``
        cancels every call whose result was not yielded yet (pending ones never
        start, running ones are signalled). ``chunksize`` is accepted and
        ignored, as in the stdlib's thread pool. Iterating blocks.

        Args:
            fn: The callable.
            *iterables: One iterable per positional argument of ``fn``.
            timeout: Seconds from this call until all results are due.
            chunksize: Ignored.
            buffersize: Most calls submitted ahead of the consumer.
            token: Cancels the calls; None means the ambient token.

        Raises:
            TypeError: ``buffersize`` is not an integer, ``timeout`` is not a
                number or ``token`` is not a `CancellationToken`.
            ValueError: ``buffersize`` is less than 1, or ``timeout`` is NaN.
            TimeoutError: (while iterating) a result was not ready in time.
            OperationCancelledError: (while iterating) ``token`` was cancelled
                before the next result could be delivered.
            Exception: (while iterating) whatever a call raised.
        """
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        if token is not None and token.__class__ is not CancellationToken:
            raise TypeError(
                f"token must be a CancellationToken or None, got {type(token).__name__!r}"
            )
        if timeout is None:
            deadline = None
        else:
            _check_timeout(timeout)
            deadline = timeout + time.monotonic()
        parent = token if token is not None else _current_token_or_none()
        if parent is not None and parent._lock is None:
            parent = None
        source = CancellationTokenSource() if parent is None else CancellationTokenSource(parent)
        calls = zip(*iterables)  # noqa: B905 (stops at the shortest, as map() does)
        stok = source.token
        # Through self.submit, as the stdlib does: subclasses and instance
        # patches (progress bars, metrics) see every call.
        submit = self.submit
        fs: deque[CancellableFuture[_R]] | list[CancellableFuture[_R]]
        try:
            if buffersize:
                fs = deque(submit(fn, *args, token=stok) for args in islice(calls, buffersize))
            else:
                fs = [submit(fn, *args, token=stok) for args in calls]
        except BaseException:
            source.token._cancel_and_log("map() failed while submitting")
            source.close()
            raise
        return _map_results(weakref.ref(self), fs, fn, calls, buffersize, deadline, source, parent)

    # -- cancelling and shutting down ------------------------------------------

    def cancel_all(self, reason: object = None) -> None:
        """Cancel every task submitted so far; keep the workers for new ones.

        Pending tasks end cancelled at once (their done-callbacks run now, on
        this thread) and never start; running tasks' tokens are cancelled, so
        cooperative tasks stop. Tasks submitted afterwards are unaffected.
        Errors from token callbacks go to the ``cancellable`` logger, except a
        `BaseException` such as KeyboardInterrupt, which propagates as itself
        once every task has ended. Does not wait for running tasks.
        """
        self._core.new_generation(reason)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks and let the workers exit once the queue is done.

        As the stdlib, plus: ``cancel_futures=True`` also cancels running
        tasks' tokens (cooperative tasks stop), and a Ctrl-C while this waits
        cancels every task's token, waits again for the cooperative ones, then
        propagates (a second Ctrl-C stops that wait). Safe to call more than
        once.

        Args:
            wait: Block until every worker has exited.
            cancel_futures: Cancel pending tasks (they never start) and signal
                running ones.

        Raises:
            RuntimeError: ``wait=True`` from one of this pool's own tasks
                (the stdlib's "cannot join current thread").
        """
        core = self._core
        with core.lock:
            core.shutdown = True
            gen = core.gen
        try:
            core.finish_cancels()  # what an interrupted cancel_all left
            if cancel_futures:
                gen.cancel("the executor was shut down")
        finally:
            core.queue.put(None)
            core.wake_blocked_submitters()
            if not core.alive:
                core.release()
        if wait:
            with core.lock:
                threads = list(self._threads)
            reported: set[int] = set()
            try:
                core.wait_for_workers(threads, reported)
            except KeyboardInterrupt:
                core.gen.cancel("interrupted while waiting for tasks")
                # A second Ctrl-C propagates from here and stops the wait.
                core.wait_for_workers(threads, reported)
                raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> Literal[False]:
        """Shut down and wait (through `shutdown`); if the block raised, cancel everything first.

        The reason is a text naming the exception, not the exception itself:
        a token holding it would keep its traceback, and so every local of
        the block's frame, alive until the next garbage collection.
        """
        if exc_type is not None:
            self._core.gen.cancel(f"the executor's with block was left by {exc_val!r}")
            del exc_val, exc_tb
        self.shutdown(wait=True)
        return False


@final
class TokenBoundExecutor:
    """``executor.with_token(token)``: submit and map with a token, exactly typed."""

    __slots__ = ("_executor", "_token")
    __module__ = "cancellable"

    def __init__(self, executor: CancellableThreadPoolExecutor, token: CancellationToken) -> None:
        """Bind ``token`` to ``executor`` (``executor.with_token(token)`` is the usual spelling).

        Raises:
            TypeError: ``executor`` is not a `CancellableThreadPoolExecutor`,
                or ``token`` is not a `CancellationToken`.
        """
        if not isinstance(executor, CancellableThreadPoolExecutor):
            raise TypeError(
                f"executor must be a CancellableThreadPoolExecutor, got {type(executor).__name__!r}"
            )
        if token.__class__ is not CancellationToken:
            raise TypeError(f"token must be a CancellationToken, got {type(token).__name__!r}")
        self._executor = executor
        self._token = token

    @property
    def token(self) -> CancellationToken:
        """The token every task submitted through this view gets."""
        return self._token

    def submit(
        self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> CancellableFuture[_R]:
        """`CancellableThreadPoolExecutor.submit` with this view's token (same errors)."""
        return self._executor._submit(fn, args, kwargs, self._token)

    def map(
        self,
        fn: Callable[..., _R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[_R]:
        """`CancellableThreadPoolExecutor.map` with this view's token (same errors)."""
        return self._executor.map(
            fn,
            *iterables,
            timeout=timeout,
            chunksize=chunksize,
            buffersize=buffersize,
            token=self._token,
        )


def _current_token_or_none() -> CancellationToken | None:
    ambient = _ambient.get()
    if ambient is _NONE:
        return None
    if ambient.__class__ is CancellationToken:
        return ambient
    return ambient.token  # type: ignore[union-attr]


def _in_event_loop() -> bool:
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and asyncio.events._get_running_loop() is not None


def _map_result(
    future: CancellableFuture[_R], deadline: float | None, token: CancellationToken | None
) -> _R:
    try:
        if future._st == FINISHED:
            return future._get_result()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if token is None:
            return future.result(timeout)
        state = future._wait_token(timeout, token)
        if state is None:
            if token._cancelled:
                token._raise_cancelled()
            raise TimeoutError()
        return future.result(0)
    finally:
        del future


def _map_results(  # noqa: PLR0917 (a generator's state, passed once)
    executor_ref: weakref.ref[CancellableThreadPoolExecutor],
    fs: deque[CancellableFuture[_R]] | list[CancellableFuture[_R]],
    fn: Callable[..., _R],
    calls: Iterator[tuple[Any, ...]],
    buffersize: int | None,
    deadline: float | None,
    source: CancellationTokenSource,
    token: CancellationToken | None,
) -> Iterator[_R]:
    finished = False
    try:
        fs.reverse()
        while fs:
            if buffersize:
                executor = executor_ref()
                if executor is not None:
                    args = next(calls, None)
                    if args is not None:
                        fs.appendleft(  # type: ignore[union-attr]
                            executor.submit(fn, *args, token=source.token)
                        )
                del executor
            # Pass the popped future straight on: no reference stays here.
            yield _map_result(fs.pop(), deadline, token)
        finished = True
    finally:
        if not finished:
            source.token._cancel_and_log("the map iterator was closed before its end")
        source.close()


def _python_exit() -> None:
    """Join every pool's workers at interpreter exit, as the stdlib does.

    A backlog nobody cancelled still runs. A first Ctrl-C while waiting
    cancels every task's token and waits again for the cooperative ones; a
    second one stops waiting.
    """
    global _exiting
    _exiting = True
    cores = list(_live)
    threads: list[list[threading.Thread]] = []
    for core in cores:
        with core.lock:
            threads.append(list(core.threads))
        core.queue.put(None)
        core.wake_blocked_submitters()
    reported: list[set[int]] = [set() for _ in cores]
    try:
        for hook in _exit_wait_hooks:
            hook("waiting")
        for core, core_threads, seen in zip(cores, threads, reported, strict=True):
            core.wait_for_workers(core_threads, seen)
    except KeyboardInterrupt:
        for core in cores:
            core.gen.cancel("interrupted while waiting for tasks at exit")
        for hook in _exit_wait_hooks:
            hook("cancelled")
        # A second Ctrl-C propagates from here: the interpreter then exits
        # without waiting for tasks that ignore cancellation.
        for core, core_threads, seen in zip(cores, threads, reported, strict=True):
            core.wait_for_workers(core_threads, seen)


threading._register_atexit(_python_exit)  # type: ignore[attr-defined]


def _after_fork_in_child() -> None:
    # The workers did not survive the fork: the pools inherited are broken,
    # and their locks may have been held by a thread that no longer exists.
    for core in list(_live):
        core.lock = threading.RLock()
        core.gen.lock = allocate_lock()
        for group in list(core.gen.groups.values()):
            group.lock = core.gen.lock
        core.space = SignalSafeCondition(threading.Lock())
        core.broken = "the thread pool was inherited through fork() and is not usable"
        core.threads.clear()
        core.worker_ids.clear()
        core.exited = SignalSafeCondition(threading.Lock())
        core.alive.clear()
        core.launching.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
