"""Structured concurrency for threads: `TaskGroup`, `CancelScope`, `move_on_after`, `fail_after`.

Both are built on the token and executor API, plus two private pieces of
the executor for speed: its argument-packed ``_submit`` and the ``_st`` state
field of its futures. A group owns a `CancellationTokenSource` linked to its
parent; every task is submitted with the group's token, so the executor makes
each task's token a child of it (lazily, when the task first asks for it) and
one cancel of the group reaches every task, pending or running.

How the group knows its tasks ended, cheaply:

- Without a group-side limit, each task runs inside one of the group's
  runners (`_runners`), plain functions that record a failure (and cancel the
  group under ``fail_fast``) before the task's future is final. The group
  holds the futures that may not be done, forgetting done ones as it grows,
  and the exit waits on those it still holds, which also covers tasks that
  ended without running. No done-callback per task: a callback makes the
  future build its condition, which costs more than the whole task. No lock
  per submit either: a submit counts itself under way in a dict (atomic
  under the GIL), and the exit's close reads that count after clearing
  ``_open`` (`TaskGroup._try_close`).
- With ``limit`` and a given executor, tasks wait in a group-side queue and at
  most ``limit`` of them are handed to the executor at once. ``submit`` returns
  a `_QueuedFuture` at once; the executor's future behind it has a
  done-callback that completes it, frees the slot and hands over the next one.
  With ``limit`` and no executor, the group's own pool has ``limit`` workers,
  which is the same cap at no cost.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, FINISHED
from contextlib import AbstractContextManager, suppress
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, final

from ._checks import check_callable, check_seconds
from ._errors import OperationCancelledError
from ._executor import CancellableThreadPoolExecutor
from ._remote import log_cancel_errors
from ._task import CancellableFuture
from ._token import (
    CancellationToken,
    CancellationTokenRegistration,
    CancellationTokenSource,
    current_token,
    use_token,
)

__all__ = ["CancelScope", "TaskGroup", "fail_after", "move_on_after"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")


_GROUP_ERRORS: Final = "unhandled errors in a TaskGroup"

# What a group submits to its executor: (callable, args, kwargs, token).
_Submit = Callable[
    [Callable[..., Any], tuple[Any, ...], dict[str, Any], CancellationToken],
    CancellableFuture[Any],
]
_Runner = Callable[..., Any]

# The final states of a `CancellableFuture`, read from ``_st``, the field its
# transitions publish (`done()` reads the same through two calls, five times
# the cost, which adds up over every task at a group's exit).
_ENDED: Final = (FINISHED, CANCELLED_AND_NOTIFIED)


def _is_base_error(error: BaseException) -> bool:
    return isinstance(error, KeyboardInterrupt | SystemExit)


def _check_token(token: object) -> CancellationToken | None:
    if token is None or token.__class__ is CancellationToken:
        return token
    raise TypeError(f"token must be a CancellationToken or None, got {type(token).__name__!r}")


def _futures_wait(futures: list[CancellableFuture[Any]]) -> None:
    """Block until every future is done (one at a time: cheaper than `wait`)."""
    for future in futures:
        if future._st not in _ENDED:
            with suppress(CancelledError):
                future.exception()


def _runners(failed: Callable[[BaseException], object]) -> tuple[_Runner, _Runner]:
    """The functions a group's tasks run in: they report a failure, then re-raise.

    Plain functions over a cell rather than a bound method, so a submit
    creates nothing for them; the one without ``**kwargs`` spares a task
    the empty dict a call to a ``**kwargs`` function builds.
    """

    def run(fn: Callable[..., Any], /, *args: Any) -> Any:
        try:
            return fn(*args)
        except BaseException as error:
            failed(error)
            raise

    def run_kw(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseException as error:
            failed(error)
            raise

    return run, run_kw


def _not_entered(*args: object, **kwargs: object) -> Any:
    raise RuntimeError("submit() called on a TaskGroup that was not entered")


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


def _run_with_token(
    token: CancellationToken, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    with use_token(token):
        return fn(*args, **kwargs)


# States of a _QueuedFuture, changed under its group's lock.
_QUEUED: Final = 0  # in the group's queue; a canceller or the dispatcher may claim it
_CLAIMED: Final = 1  # taken out of the queue by a canceller: ends cancelled, never runs
_HANDED: Final = 2  # handed to the executor (``_inner`` set once submit returned)


class _QueuedFuture(CancellableFuture[_R]):
    """The future of a task of a limited group, created before the executor's.

    It is a standalone `CancellableFuture` that stays pending until the
    executor's future behind it (``_inner``) ends, then takes its outcome.
    Its token is the task's: a child of the group's token, made current in the
    task, cancelled by `request_cancel`.
    """

    __module__ = "cancellable"

    def __init__(
        self,
        group: TaskGroup,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        super().__init__()
        self._q_group = group
        self._q_source = CancellationTokenSource(group.token)
        self._q_state = _QUEUED
        self._q_inner: CancellableFuture[Any] | None = None
        self._q_call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = (
            fn,
            args,
            kwargs,
        )
        self._q_reg: CancellationTokenRegistration | None = None
        self._q_counted = False  # in its group's count of tasks not ended

    @property
    def token(self) -> CancellationToken:
        """The task's cancellation token (a child of the group's)."""
        return self._q_source.token

    def request_cancel(self, reason: object = None) -> None:
        """Cancel this task's token with ``reason``.

        A queued task ends cancelled at once (it never starts); a running one
        is signalled. Errors from the token's callbacks are logged. Never
        blocks on the task.
        """
        log_cancel_errors(self._q_source, reason)

    def cancel(self) -> bool:
        """Cancel the task if it has not started; return whether it is cancelled.

        As `concurrent.futures.Future.cancel`: a task still waiting for a slot
        of its group, or pending in the executor, ends cancelled; a running or
        finished one is not affected. Never blocks on the task.
        """
        claimed, inner = self._q_group._cancel_queued(self)
        if claimed:
            return True
        if inner is None:
            return self.cancelled()
        return inner.cancel() or self.cancelled()

    def running(self) -> bool:
        """Return True if the task is running now."""
        inner = self._q_inner
        return inner is not None and inner.running() and not self.done()

    def _cancel_error(self) -> CancelledError | None:
        inner = self._q_inner
        if inner is not None and inner.cancelled():
            try:
                inner.result(0)
            except CancelledError as error:
                return error
        token = self._q_source.token
        if token.is_cancellation_requested:
            try:
                token.raise_if_cancellation_requested()
            except OperationCancelledError as error:
                return error
        return None

    def result(self, timeout: float | None = None) -> _R:
        """Return the task's result, blocking until it is done.

        Raises:
            CancelledError: The task was cancelled (an `OperationCancelledError`
                when a token cancelled it).
            TimeoutError: The task was not done within ``timeout``.
            Exception: Whatever the task raised.
        """
        return self._unless_cancelled(super().result, timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Return what the task raised (None if it returned), blocking until done.

        Raises:
            CancelledError: The task was cancelled.
            TimeoutError: The task was not done within ``timeout``.
        """
        return self._unless_cancelled(super().exception, timeout)

    def _unless_cancelled(self, get: Callable[[float | None], _T], timeout: float | None) -> _T:
        # ``get(timeout)``, its CancelledError replaced by the cancellation
        # that ended the task (the executor's, or this task's token).
        try:
            return get(timeout)
        except CancelledError:
            error = self._cancel_error()
            if error is None:
                raise
        raise error

    def _q_end_cancelled(self) -> None:
        # A standalone future: PENDING -> CANCELLED (callbacks run), then
        # CANCELLED_AND_NOTIFIED so the stdlib's wait() hears of it.
        CancellableFuture.cancel(self)
        CancellableFuture.set_running_or_notify_cancel(self)


class _Block:
    """What `TaskGroup` and `CancelScope` share: a token made ambient for one ``with`` block."""

    __slots__ = ("_entered", "_source", "_use")
    _entered: bool
    _source: CancellationTokenSource
    _use: AbstractContextManager[CancellationToken] | None

    def _enter_block(self) -> None:
        if self._entered:
            raise RuntimeError(f"a {type(self).__name__} can be entered only once")
        self._entered = True
        use = use_token(self._source.token)
        use.__enter__()
        self._use = use

    def _leave_block(self) -> None:
        use, self._use = self._use, None
        if use is not None:
            use.__exit__(None, None, None)


@final
class TaskGroup(_Block):
    """A block that owns the thread tasks started in it and waits for all of them.

    ``with TaskGroup() as tg: tg.submit(fn, ...)``. The group's token is a
    child of ``token`` (None: `current_token()` when the group is created);
    each task's token is a child of the group's, and inside the block
    `current_token()` is the group's token. Leaving the block waits for every
    task, then raises as `asyncio.TaskGroup` does:

    - an exception in the body cancels the group first;
    - the body's exception and the tasks' failures come out together as one
      `ExceptionGroup` (`BaseExceptionGroup` if one is not an `Exception`),
      a body exception alone wrapped too; `KeyboardInterrupt` and
      `SystemExit` propagate on their own;
    - a task whose future ends cancelled is never a failure, nor is an
      `OperationCancelledError` escaping the body while the group's token is
      cancelled;
    - `cancel` ends the group quietly; a cancelled parent token makes the exit
      raise `OperationCancelledError` (failures take precedence).

    Args:
        executor: The pool to run the tasks on, never shut down by the group.
            None: the group creates a pool (``max_workers=limit``, or the
            stdlib default) and shuts it down at exit.
        token: The parent token; None means `current_token()` now.
        limit: At most this many of the group's tasks run at once; the rest
            wait in submit order. ``submit`` never blocks for it.
        fail_fast: True: the first task failure cancels the group's token
            with that error as the reason. False (supervisor): failures are
            collected and the other tasks run on.

    Raises:
        TypeError: ``executor`` is not a `CancellableThreadPoolExecutor`,
            ``token`` not a token, ``limit`` not an int or ``fail_fast`` not
            a bool.
        ValueError: ``limit`` is less than 1.
    """

    __slots__ = (
        "__weakref__",
        "_base_error",
        "_closed",
        "_cond",
        "_errors",
        "_executor",
        "_executor_submit",
        "_exit_waiting",
        "_fail_fast",
        "_limit",
        "_live",
        "_lock",
        "_open",
        "_own_pool",
        "_parent",
        "_pool_workers",
        "_prune_at",
        "_pumping",
        "_queue",
        "_queued_count",
        "_run",
        "_run_kw",
        "_running",
        "_submitting",
        "_tok",
    )
    __module__ = "cancellable"

    def __init__(
        self,
        executor: CancellableThreadPoolExecutor | None = None,
        *,
        token: CancellationToken | None = None,
        limit: int | None = None,
        fail_fast: bool = True,
    ) -> None:
        if executor is not None and not isinstance(executor, CancellableThreadPoolExecutor):
            raise TypeError(
                "executor must be a CancellableThreadPoolExecutor or None, "
                f"got {type(executor).__name__!r}"
            )
        parent = _check_token(token)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError(f"limit must be an int or None, got {type(limit).__name__!r}")
            if limit < 1:
                raise ValueError(f"limit must be at least 1, got {limit!r}")
        if not isinstance(fail_fast, bool):
            raise TypeError(f"fail_fast must be a bool, got {type(fail_fast).__name__!r}")
        self._parent = parent if parent is not None else current_token()
        self._source = CancellationTokenSource(self._parent)
        self._tok = self._source.token
        self._open = False  # entered and not yet closed (read without the lock)
        self._executor_submit: _Submit = _not_entered
        self._executor = executor
        self._own_pool = executor is None
        # A group-side queue only when the pool is shared; a pool of our own
        # with ``limit`` workers already caps the group.
        self._limit = limit if executor is not None else None
        self._pool_workers = limit
        self._fail_fast = fail_fast
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._entered = False
        self._closed = False
        self._exit_waiting = False
        self._errors: list[BaseException] = []
        self._base_error: BaseException | None = None
        # Tasks handed to the executor that may not have ended (a dict used
        # as an ordered set), and one entry per submit under way.
        self._live: dict[CancellableFuture[Any], None] = {}
        self._submitting: dict[int, None] = {}
        self._prune_at = 1024
        self._run: _Runner = _not_entered
        self._run_kw: _Runner = _not_entered
        self._queue: deque[_QueuedFuture[Any]] = deque()
        self._queued_count = 0  # limited mode: tasks submitted and not ended
        self._running = 0  # limited mode: tasks handed to the executor, not ended
        self._pumping = False
        self._use: AbstractContextManager[CancellationToken] | None = None

    @property
    def token(self) -> CancellationToken:
        """The group's token, cancelled by `cancel`, a failure, the body or the parent."""
        return self._source.token

    def cancel(self, reason: object = None) -> None:
        """Cancel every task of the group; the exit is then quiet.

        Pending tasks end cancelled and never start; running ones see their
        token cancelled. Idempotent. Does not block on the tasks.

        Raises:
            ExceptionGroup: Callbacks registered on the group's token (or its
                tasks' tokens) raised; as `CancellationTokenSource.cancel`.
        """
        self._source.cancel(reason)

    # -- submitting ----------------------------------------------------------

    def submit(
        self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> CancellableFuture[_R]:
        """Start ``fn(*args, **kwargs)`` as a task of the group and return its future.

        The task's token is a child of the group's. Never blocks: with
        ``limit``, a task beyond the limit waits in the group, in submit order.
        May be called from the body, from the group's own tasks (also while
        the exit waits) and from any other thread while the group is open. A
        group already cancelled returns a cancelled future; ``fn`` never runs.

        Returns:
            The task's `CancellableFuture`.

        Raises:
            RuntimeError: The group was not entered, or has exited; or its
                executor was shut down.
            TypeError: ``fn`` is not callable.
        """
        if not callable(fn):
            check_callable(fn, "fn")
        if self._limit is not None:
            return self._submit_queued(fn, args, kwargs)
        # Counted as under way until its future is in _live, so the exit never
        # closes in between. The key is this call's own kwargs dict (alive,
        # so its id is unique among the submits under way): wherever an
        # interrupt lands, the finally removes this entry, never another's.
        # Dict operations are atomic under the GIL.
        submitting = self._submitting
        key = id(kwargs)
        try:
            submitting[key] = None
            if not self._open:
                self._check_open()
            run = self._run_kw if kwargs else self._run
            # Concatenation, not (fn, *args): half the cost.
            future = self._executor_submit(run, (fn,) + args, kwargs, self._tok)  # noqa: RUF005
            live = self._live
            live[future] = None  # atomic under the GIL
            if len(live) > self._prune_at:
                self._prune()
        finally:
            # Also on a Ctrl-C: an entry left here would hold the exit forever.
            submitting.pop(key, None)
            if self._exit_waiting:
                self._notify_exit()
        return future

    def _check_open(self) -> None:
        # The slow path of submit: the group is not open now. Under the lock
        # the exit has either closed it for good or reopened it, having seen
        # this submit under way (see _try_close).
        with self._lock:
            if not self._open:
                raise self._not_open_error()

    def _not_open_error(self) -> RuntimeError:
        if not self._entered:
            return RuntimeError("submit() called on a TaskGroup that was not entered")
        return RuntimeError("cannot submit to a TaskGroup that has exited")

    def _prune(self) -> None:
        # Forget the futures that are done, so a long-lived group holds about
        # as many as are outstanding (the bound doubles with them, which keeps
        # this amortised O(1) per submit). No lock: each dict operation is
        # atomic under the GIL, and a future is added only once.
        live = self._live
        for future in list(live):
            if future._st in _ENDED:
                live.pop(future, None)
        self._prune_at = max(1024, 2 * len(live))

    def _notify_exit(self) -> None:
        if self._exit_waiting:
            with self._cond:
                self._cond.notify_all()

    def _task_error(self, error: BaseException) -> None:
        # Called in the task, before its future is final: bookkeeping first.
        self._task_failed(error, current_token())

    def _task_failed(self, error: BaseException, task_token: CancellationToken) -> None:
        # The executor ends a task cancelled when an OperationCancelledError
        # escapes it while its own token is cancelled: never a failure.
        if isinstance(error, OperationCancelledError) and task_token.is_cancellation_requested:
            return
        self._record(error, collect=True, cancel=self._fail_fast)

    def _record(self, error: BaseException, *, collect: bool, cancel: bool) -> None:
        """Note ``error`` for the exit, then cancel the group if it must.

        A `KeyboardInterrupt` or `SystemExit` is kept (the first one) to be
        raised alone, and always cancels; another error is collected for the
        exception group if ``collect`` (a task's, not the body's, which the
        exit puts first), and cancels if ``cancel``.
        """
        base = _is_base_error(error)
        with self._lock:
            if base:
                if self._base_error is None:
                    self._base_error = error
            elif collect:
                self._errors.append(error)
        if cancel or base:
            log_cancel_errors(self._source, error)

    # -- the limited mode (a shared executor and a limit) -----------------------

    def _submit_queued(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> CancellableFuture[Any]:
        if not self._open:
            raise self._not_open_error()
        future: _QueuedFuture[Any] = _QueuedFuture(self, fn, args, kwargs)
        try:
            with self._lock:
                if not self._open:
                    raise self._not_open_error()
                # One statement: no signal lands between the count and the
                # mark that tells the handler below the task must end.
                self._queued_count, future._q_counted = self._queued_count + 1, True
                self._queue.append(future)
            # Outside the lock: a token already cancelled runs this now, here.
            future._q_reg = future.token.register(self._queued_token_cancelled, future)
            self._pump()
        except BaseException:
            # Interrupted (or the pump failed): a counted task must still end,
            # or the exit would wait for it forever. One still queued ends
            # cancelled; one handed over ends as the executor's does.
            if future._q_counted:
                self._cancel_queued(future)
            else:
                future._q_source.close()
            raise
        return future

    def _queued_token_cancelled(self, future: _QueuedFuture[Any]) -> None:
        # The task's token was cancelled: a queued task ends now; a handed one
        # (run with the group's token) gets the cancel passed on.
        claimed, inner = self._cancel_queued(future)
        if not claimed and inner is not None:
            inner.request_cancel(future.token.reason)

    def _cancel_queued(
        self, future: _QueuedFuture[Any]
    ) -> tuple[bool, CancellableFuture[Any] | None]:
        """End ``future`` cancelled if it is still queued (claiming it first).

        Returns whether this call did, and the executor's future behind it
        (None while it has not been handed over).
        """
        with self._lock:
            claimed = future._q_state == _QUEUED
            if claimed:
                future._q_state = _CLAIMED
            inner = future._q_inner
        if claimed:
            self._queued_cancelled(future)
        return claimed, inner

    def _queued_cancelled(self, future: _QueuedFuture[Any]) -> None:
        # This thread claimed ``future`` while it was queued: it never runs.
        future._q_call = None
        reg = future._q_reg
        if reg is not None:
            future._q_reg = None
            reg.unregister()
        future._q_source.close()
        try:
            future._q_end_cancelled()
        finally:
            self._queued_ended()

    def _queued_ended(self) -> None:
        with self._cond:
            self._queued_count -= 1
            if self._queued_count == 0:
                self._cond.notify_all()

    def _pump(self) -> None:
        """Hand queued tasks to the executor while the limit allows.

        One thread pumps at a time; a slot freed meanwhile is seen by its loop,
        which re-reads the state under the lock each turn (so a submit whose
        future ends at once cannot recurse through its done-callback).
        """
        limit: int = self._limit  # type: ignore[assignment]
        with self._lock:
            if self._pumping:
                return
            self._pumping = True
        try:
            while True:
                with self._lock:
                    future = None
                    while self._queue and self._running < limit:
                        candidate = self._queue.popleft()
                        if candidate._q_state == _QUEUED:
                            candidate._q_state = _HANDED
                            self._running += 1
                            future = candidate
                            break
                    if future is None:
                        self._pumping = False
                        return
                self._hand_over(future)
        except BaseException:
            with self._lock:
                self._pumping = False
            raise

    def _hand_over(self, future: _QueuedFuture[Any]) -> None:
        fn, args, kwargs = future._q_call  # type: ignore[misc]
        future._q_call = None
        token = future.token
        try:
            # Submitted with the group's token, which the executor already
            # tracks, not the task's (a new executor-side entry per task);
            # the task's token reaches it through _queued_token_cancelled.
            inner = self._executor_submit(_run_with_token, (token, fn, args, kwargs), {}, self._tok)
        except BaseException as error:
            # The executor was shut down or broke: the task fails with that.
            with self._lock:
                self._running -= 1
            self._drop_queued_reg(future)
            future._q_source.close()
            try:
                self._record(error, collect=True, cancel=self._fail_fast)
                future.set_exception(error)
            finally:
                self._queued_ended()
            if _is_base_error(error):
                raise
            return
        with self._lock:
            future._q_inner = inner
        if token.is_cancellation_requested:
            # Cancelled while it was being handed over: pass it on now.
            inner.request_cancel(token.reason)
        inner.add_done_callback(lambda _: self._inner_done(future, inner))

    def _drop_queued_reg(self, future: _QueuedFuture[Any]) -> None:
        reg = future._q_reg
        if reg is not None:
            future._q_reg = None
            reg.unregister()

    def _inner_done(self, future: _QueuedFuture[Any], inner: CancellableFuture[Any]) -> None:
        try:
            if inner.cancelled():
                future._q_end_cancelled()
            else:
                error = inner.exception()
                if error is None:
                    future.set_result(inner.result())
                else:
                    self._task_failed(error, future.token)
                    future.set_exception(error)
        finally:
            self._drop_queued_reg(future)
            future._q_source.close()
            with self._lock:
                self._running -= 1
            try:
                self._pump()
            finally:
                self._queued_ended()

    # -- the block -------------------------------------------------------------

    def __enter__(self) -> TaskGroup:
        self._enter_block()
        try:
            self._start()
        except BaseException:
            self._leave_block()
            raise
        self._open = True
        return self

    def _start(self) -> None:
        if self._own_pool:
            self._executor = CancellableThreadPoolExecutor(
                max_workers=self._pool_workers, thread_name_prefix="TaskGroup"
            )
        executor: CancellableThreadPoolExecutor = self._executor  # type: ignore[assignment]
        if type(executor).submit is CancellableThreadPoolExecutor.submit and "submit" not in vars(
            executor
        ):
            # The executor's own submit, minus the frame that packs its
            # arguments: a third of what a group adds to a no-op task.
            self._executor_submit = executor._submit
        else:
            # A subclass's (or a patched) submit is honoured.
            public = executor.submit

            def submit(
                fn: Callable[..., Any],
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
                token: CancellationToken,
            ) -> CancellableFuture[Any]:
                return public(_call, fn, args, kwargs, token=token)

            self._executor_submit = submit
        self._run, self._run_kw = _runners(self._task_error)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._leave_block()
        token = self._source.token
        body_error = exc
        if body_error is not None:
            if isinstance(body_error, OperationCancelledError) and token.is_cancellation_requested:
                body_error = None  # a consequence of the group's cancel, not a failure
            else:
                self._record(body_error, collect=False, cancel=True)
        interrupted = False
        try:
            self._wait_all()
        except BaseException:
            interrupted = True
            raise
        finally:
            self._finish(interrupted)
        base = self._base_error
        if base is not None:
            self._base_error = None
            if base is exc:
                return False
            try:
                raise base
            finally:
                del base
        errors = list(self._errors)
        self._errors.clear()
        if body_error is not None:
            errors.insert(0, body_error)
        if errors:
            try:
                raise BaseExceptionGroup(_GROUP_ERRORS, errors) from None
            finally:
                del errors
        if self._parent.is_cancellation_requested:
            self._parent.raise_if_cancellation_requested()
        # Quiet: swallow an OperationCancelledError of the group's own cancel.
        return exc is not None

    def _wait_all(self) -> None:
        """Block until every task of the group has ended.

        A first Ctrl-C cancels the group and waits again (cooperative tasks end
        promptly); a second one stops waiting.
        """
        try:
            self._wait_all_once()
        except (KeyboardInterrupt, SystemExit) as error:
            self._record(error, collect=False, cancel=True)
            self._wait_all_once()

    def _wait_all_once(self) -> None:
        with self._cond:
            self._exit_waiting = True
        if self._limit is not None:
            with self._cond:
                while self._queued_count:
                    self._cond.wait()
                self._closed = True
                self._open = False
            return
        live = self._live
        while True:
            futures = list(live)  # one C call: atomic under the GIL
            if futures:
                _futures_wait(futures)
            if self._try_close(futures):
                return
            for future in futures:
                live.pop(future, None)

    def _try_close(self, waited: list[CancellableFuture[Any]]) -> bool:
        """Close the group if every task it has is among ``waited`` (all done).

        Submits take no lock: each is counted in ``_submitting`` before it
        reads ``_open`` and until its future is in ``_live``. So this clears
        ``_open`` first, then looks: a submit it does not see reads False and
        takes the lock (held here) to find the group closed; one it sees
        makes it reopen, and that submit goes on. Returns whether it closed.
        """
        live = self._live
        with self._cond:
            while self._submitting:
                self._cond.wait()  # a submit under way notifies as it ends
            self._open = False
            try:
                # New futures go to the end of ``live``: none came after
                # ``waited`` if the last of those is still last (or all have
                # been pruned, which only done ones are).
                done = not self._submitting and (
                    not live or (bool(waited) and next(reversed(live)) is waited[-1])
                )
            except BaseException:
                self._open = True  # a Ctrl-C: the group's own tasks may still submit
                raise
            if done:
                # Every future left is in ``waited`` too, so none is freed
                # here, under the lock (a result's __del__ could submit).
                live.clear()
                self._closed = True
                return True
            self._open = True
            return False

    def _finish(self, interrupted: bool) -> None:
        with self._lock:
            self._closed = True
            self._open = False
        if not interrupted:
            # No submit can be under way: let go of the runners' cycle.
            self._run = self._run_kw = _not_entered
        self._source.close()
        if self._own_pool and self._executor is not None:
            if interrupted:
                self._executor.shutdown(wait=False, cancel_futures=True)
            else:
                self._executor.shutdown(wait=True)

    def __repr__(self) -> str:
        if self._closed:
            state = "exited"
        elif self._source.token.is_cancellation_requested:
            state = "cancelled"
        elif self._entered:
            state = "active"
        else:
            state = "new"
        return f"<TaskGroup {state}>"


@final
class CancelScope(_Block):
    """A block whose ambient token can be cancelled on its own, or by a deadline.

    Inside the block `current_token()` is the scope's token: a child of the
    token that was current when the scope was created (of nothing with
    ``shield=True``), cancelled after ``timeout`` seconds from creation if
    given. At the edge, an `OperationCancelledError` escaping the block is
    swallowed exactly when the scope's token is cancelled and the enclosing
    token is not (trio's rule: when both are, the outer scope catches it);
    `cancelled_caught` then becomes True. The scope closes its source at
    exit (detached from the parent, deadline disarmed).

    Args:
        timeout: Seconds until the scope cancels itself (reason: a
            `TimeoutError`); None: no deadline.
        shield: True: the scope's token does not follow the enclosing one, for
            cleanup that must not be cancelled from outside.

    Raises:
        TypeError: ``timeout`` is not a number or ``shield`` not a bool.
        ValueError: ``timeout`` is negative or NaN.
    """

    __slots__ = ("__weakref__", "_caught", "_enclosing", "_fail")
    __module__ = "cancellable"

    def __init__(self, timeout: float | None = None, *, shield: bool = False) -> None:
        seconds = check_seconds(timeout, "timeout")
        if not isinstance(shield, bool):
            raise TypeError(f"shield must be a bool, got {type(shield).__name__!r}")
        self._enclosing = current_token()
        parents = () if shield else (self._enclosing,)
        self._source = CancellationTokenSource(*parents)
        if seconds is not None:
            self._source.cancel_after(seconds)
        self._caught = False
        self._entered = False
        self._fail: float | None = None
        self._use: AbstractContextManager[CancellationToken] | None = None

    @property
    def token(self) -> CancellationToken:
        """The scope's token, current inside the block."""
        return self._source.token

    @property
    def cancelled_caught(self) -> bool:
        """Whether the scope's edge swallowed an `OperationCancelledError`."""
        return self._caught

    @property
    def cancel_called(self) -> bool:
        """Whether the scope's token is cancelled (by `cancel`, its deadline or its parent)."""
        return bool(self._source.token.is_cancellation_requested)

    def cancel(self, reason: object = None) -> None:
        """Cancel the scope's token. Idempotent; callbacks run on this thread.

        Raises:
            ExceptionGroup: Callbacks on the token raised, as
                `CancellationTokenSource.cancel`.
        """
        self._source.cancel(reason)

    def cancel_after(self, seconds: float) -> None:
        """(Re)arm the scope's deadline ``seconds`` from now; infinity removes it.

        Raises:
            TypeError: ``seconds`` is not a number.
            ValueError: ``seconds`` is negative or NaN, or the scope has exited.
        """
        self._source.cancel_after(seconds)

    def __enter__(self) -> CancelScope:
        self._enter_block()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            self._leave_block()
            if (
                isinstance(exc, OperationCancelledError)
                and self._source.token.is_cancellation_requested
                and not self._enclosing.is_cancellation_requested
            ):
                self._caught = True
                if self._fail is not None and isinstance(self._source.token.reason, TimeoutError):
                    raise TimeoutError(f"the fail_after({self._fail!r}) deadline passed") from exc
                return True
            return False
        finally:
            self._source.close()

    def __repr__(self) -> str:
        if self._source.token.is_cancellation_requested:
            state = "cancelled"
        elif self._source.closed:
            state = "exited"
        else:
            state = "active"
        return f"<CancelScope {state}>"


def move_on_after(seconds: float) -> CancelScope:
    """A `CancelScope` that cancels itself ``seconds`` from now.

    ``with move_on_after(5) as scope: ...``: the block stops quietly at the
    deadline (if it cooperates), and ``scope.cancelled_caught`` says whether it
    did. Does not block.

    Raises:
        TypeError: ``seconds`` is not a number.
        ValueError: ``seconds`` is negative or NaN.
    """
    _require_seconds(seconds)
    return CancelScope(timeout=seconds)


def fail_after(seconds: float) -> CancelScope:
    """A `CancelScope` whose deadline raises `TimeoutError` at its edge.

    ``with fail_after(5): ...``: when the deadline cancels the block and the
    resulting `OperationCancelledError` reaches the edge, it becomes a
    `TimeoutError` (with the cancellation as its cause). A block that finishes
    in time, or that ends normally although the deadline passed, raises
    nothing. Does not block.

    Raises:
        TypeError: ``seconds`` is not a number.
        ValueError: ``seconds`` is negative or NaN.
    """
    _require_seconds(seconds)
    scope = CancelScope(timeout=seconds)
    scope._fail = seconds
    return scope


def _require_seconds(seconds: object) -> None:
    if seconds is None:
        raise TypeError("seconds must be a number of seconds, got 'NoneType'")
    check_seconds(seconds, "seconds")


move_on_after.__module__ = "cancellable"
fail_after.__module__ = "cancellable"
