"""`CancellableFuture`: a `concurrent.futures.Future` that costs little until observed.

The stdlib future builds a `threading.Condition` (with its `RLock`) and two
lists for every task and takes that lock for each state change. Most futures
of a busy pool are never waited on before they finish, so this one builds its
synchronisation (`_Sync`) only when someone blocks on it, adds a done-callback
or installs a waiter through the stdlib's `wait`/`as_completed`.

Who may change the state of an executor task is decided by one atomic
``dict.pop`` of the future from its group's pending dict: the worker that wins
runs it, a canceller that wins cancels it. The finishing step then races only
with the first thread that observes the future (creating its `_Sync`); both
take the group's lock for a few bytecodes, so either the finisher stores a
final marker first (nobody can ever wait: the state is final) or the observer
stores a `_Sync` first (the finisher then takes its condition, exactly as the
stdlib does). A lock rather than an atomic ``dict.setdefault`` on the
future's ``__dict__``: that would materialise a dict per task, and the extra
GC-tracked allocation cost more than the whole lock hold. The stdlib's
`wait`/`as_completed` read ``_condition``, ``_waiters`` and ``_state``; they
are properties here that respect that protocol.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    LOGGER,
    PENDING,
    RUNNING,
)
from contextvars import Context
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._primitives import _check_timeout
from ._token import CancellationToken, CancellationTokenRegistration, _link, _new_token

if TYPE_CHECKING:
    from ._executor import _Group

__all__ = ["CancellableFuture"]

_R = TypeVar("_R")

_DONE_STATES: Final = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
_CANCELLED_STATES: Final = (CANCELLED, CANCELLED_AND_NOTIFIED)
_DESCRIPTION: Final = {
    PENDING: "pending",
    RUNNING: "running",
    CANCELLED: "cancelled",
    CANCELLED_AND_NOTIFIED: "cancelled",
    FINISHED: "finished",
}


class _Sync:
    """The condition, stdlib waiters and done-callbacks of an observed future."""

    __slots__ = ("callbacks", "cond", "waiters")

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.waiters: list[Any] = []
        self.callbacks: list[Callable[[Any], object]] = []


class _Final:
    """Marks a future that reached ``state`` before anyone observed it."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


_FIN: Final = _Final(FINISHED)
_CXL: Final = _Final(CANCELLED_AND_NOTIFIED)


class _FreeCondition:
    """Stands in for the condition of a future whose state is final.

    Nothing can change any more, so there is nothing to lock or wait for.
    """

    __slots__ = ()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        pass

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        pass

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def wait_for(self, predicate: Callable[[], object], timeout: float | None = None) -> object:
        return predicate()

    def notify(self, n: int = 1) -> None:
        pass

    def notify_all(self) -> None:
        pass


_FREE: Final = _FreeCondition()
# Orders the creation of standalone futures' tokens (rare; executor futures
# use their group's lock).
_STANDALONE_LOCK: Final = threading.Lock()


def _notify_all(cond: threading.Condition) -> None:
    with cond:
        cond.notify_all()


def _spin_while_pending(future: CancellableFuture[Any]) -> str:
    # A claim and the state store that follows it are a few bytecodes apart;
    # a thread that lost the claim yields until the winner has published.
    while True:
        sync = future._sync
        if sync.__class__ is _Final:
            return sync.state
        state = future._st
        if state != PENDING:
            return state
        time.sleep(0)


class CancellableFuture(Future[_R]):
    """The result of a task of `CancellableThreadPoolExecutor`.

    A `concurrent.futures.Future` (so ``wait``, ``as_completed``,
    ``asyncio.wrap_future`` and done-callbacks work as usual) that also has a
    cancellation `token` and `request_cancel`. ``cancel()`` keeps its stdlib
    meaning: it succeeds only for a task that has not started. Futures are
    created by the executor; creating one directly gives a plain future with
    the stdlib behaviour, for tests.
    """

    __module__ = "cancellable"

    # Class-level defaults keep an executor task's future down to the few
    # attributes it sets; the rest appear only when used.
    _st: str = PENDING
    _result: Any = None
    _exception: BaseException | None = None
    _sync: _Sync | _Final | None = None
    _group: _Group | None = None
    _tok: CancellationToken | None = None
    _treg: CancellationTokenRegistration | None = None
    _cause: CancellationToken | None = None
    _fn: Callable[..., Any] | None = None
    _args: tuple[Any, ...] = ()
    _kwargs: dict[str, Any] | None = None
    _ctx: Context | None = None
    _awaited_from_asyncio: bool = False  # asyncio bridge hook (b)

    def __init__(self) -> None:
        """Create a standalone future (executors create theirs themselves)."""
        self._sync = _Sync()

    # -- what the stdlib's wait() and as_completed() read ----------------------

    def _ensure_sync(self) -> _Sync | _Final:
        sync = self._sync
        if sync is None:
            # Only executor futures start without one; their group's lock
            # orders this against _finish.
            group = self._group
            if group is None:
                # _finish stores the final state before letting the group go.
                return self._sync  # type: ignore[return-value]
            with group.lock:
                sync = self._sync
                if sync is None:
                    sync = self._sync = _Sync()
        return sync

    @property
    def _condition(self) -> threading.Condition | _FreeCondition:  # type: ignore[override]
        sync = self._ensure_sync()
        if sync.__class__ is _Final:
            return _FREE
        return sync.cond  # type: ignore[union-attr]

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        sync = self._ensure_sync()
        if sync.__class__ is _Final:
            # Final before anyone looked: stdlib code still appends and later
            # removes its waiter, so keep one list for it.
            waiters: list[Any] = vars(self).setdefault("_final_waiters", [])
            return waiters
        return sync.waiters  # type: ignore[union-attr]

    @property
    def _state(self) -> str:
        sync = self._sync
        if sync.__class__ is _Final:
            return sync.state
        return self._st

    @_state.setter
    def _state(self, value: str) -> None:
        self._st = value

    @property
    def _done_callbacks(self) -> list[Callable[[Any], object]]:
        sync = self._ensure_sync()
        if sync.__class__ is _Final:
            return []
        return sync.callbacks  # type: ignore[union-attr]

    # -- finishing (only the owner of the claim, or a standalone future's user) --

    def _finish(self, final: _Final, result: Any, exception: BaseException | None) -> None:
        sync = self._sync
        if sync is None:
            with self._group.lock:  # type: ignore[union-attr]
                sync = self._sync
                if sync is None:
                    # Nobody observes it: no condition, no waiters, no callbacks.
                    self._result = result
                    self._exception = exception
                    self._st = final.state
                    self._sync = final
                    # Done: let the group, its token and whatever they hold
                    # go as soon as the pool forgets them.
                    self._group = None
                    return
        if sync.__class__ is _Final:
            raise InvalidStateError(f"{self._state}: {self!r}")
        cond = sync.cond  # type: ignore[union-attr]
        with cond:
            state = self._st
            if state in _DONE_STATES and not (state == CANCELLED and final is _CXL):
                raise InvalidStateError(f"{state}: {self!r}")
            self._result = result
            self._exception = exception
            self._st = final.state
            if final is _CXL:
                for waiter in sync.waiters:  # type: ignore[union-attr]
                    waiter.add_cancelled(self)
            elif exception is None:
                for waiter in sync.waiters:  # type: ignore[union-attr]
                    waiter.add_result(self)
            else:
                for waiter in sync.waiters:  # type: ignore[union-attr]
                    waiter.add_exception(self)
            cond.notify_all()
        self._group = None
        callbacks = sync.callbacks  # type: ignore[union-attr]
        if callbacks:
            sync.callbacks = []  # type: ignore[union-attr]
            for callback in callbacks:
                self._run_callback(callback)

    def _run_callback(self, callback: Callable[[Any], object]) -> None:
        try:
            callback(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    def _cancel_claimed(self, cause: CancellationToken | None) -> None:
        """End a task whose claim this thread won before it started."""
        self._cause = cause
        self._st = CANCELLED
        self._fn = None
        self._args = ()
        self._kwargs = None
        self._ctx = None
        reg = self._treg
        if reg is not None:
            self._treg = None
            reg.unregister()
        self._finish(_CXL, None, None)

    # -- the stdlib Future API ------------------------------------------------

    def __repr__(self) -> str:
        state = self._state
        name = self.__class__.__name__
        if state == FINISHED:
            if self._exception is not None:
                return (
                    f"<{name} at {id(self):#x} state=finished raised "
                    f"{self._exception.__class__.__name__}>"
                )
            return (
                f"<{name} at {id(self):#x} state=finished returned "
                f"{self._result.__class__.__name__}>"
            )
        return f"<{name} at {id(self):#x} state={_DESCRIPTION[state]}>"

    def cancel(self) -> bool:
        """Cancel the task if it has not started; return whether it is cancelled.

        As `concurrent.futures.Future.cancel`: False if the task is running or
        finished. A task cancelled this way never starts and its done-callbacks
        run now. Never blocks on the task. To signal a running task, use
        `request_cancel`.
        """
        group = self._group
        if group is None:
            return self._cancel_standalone()
        if group.pop(self, None) is not None:
            self._cancel_claimed(None)
            group.claimed()
            return True
        cancelled = _spin_while_pending(self) in _CANCELLED_STATES
        # -- asyncio bridge hook (b): a running task awaited from asyncio --
        if not cancelled and self._awaited_from_asyncio:
            from ._asyncio import cancel_from_asyncio  # noqa: PLC0415 (import cycle)

            cancel_from_asyncio(self)
        # -- end of hook (b) --
        return cancelled

    def _cancel_standalone(self) -> bool:
        sync = self._ensure_sync()
        if sync.__class__ is _Final:
            return sync.state == CANCELLED_AND_NOTIFIED
        with sync.cond:  # type: ignore[union-attr]
            state = self._st
            if state in (RUNNING, FINISHED):
                return False
            if state in _CANCELLED_STATES:
                return True
            self._st = CANCELLED
            sync.cond.notify_all()  # type: ignore[union-attr]
            callbacks = sync.callbacks  # type: ignore[union-attr]
            sync.callbacks = []  # type: ignore[union-attr]
        for callback in callbacks:
            self._run_callback(callback)
        return True

    def cancelled(self) -> bool:
        """Return True if the task was cancelled (before or, cooperatively, while running)."""
        return self._state in _CANCELLED_STATES

    def running(self) -> bool:
        """Return True if the task is running now."""
        return self._state == RUNNING

    def done(self) -> bool:
        """Return True if the task finished, failed or was cancelled."""
        return self._state in _DONE_STATES

    def _cancelled_error(self) -> CancelledError:
        cause = self._cause
        if cause is None:
            return CancelledError()
        try:
            cause._raise_cancelled()
        except CancelledError as error:
            return error

    def _get_result(self) -> _R:
        exception = self._exception
        if exception is not None:
            try:
                raise exception
            finally:
                # Break the cycle through the traceback's frames.
                del self, exception
        return self._result  # type: ignore[no-any-return]

    def result(self, timeout: float | None = None) -> _R:
        """Return the task's result, blocking until it is done.

        Args:
            timeout: Seconds to wait at most; None waits without limit.

        Raises:
            CancelledError: The task was cancelled. When a token cancelled it,
                this is an `OperationCancelledError` carrying that token and its
                reason.
            TimeoutError: The task was not done within ``timeout``.
            TypeError: ``timeout`` is not a number (checked only if the task
                is not done yet).
            ValueError: ``timeout`` is NaN (likewise).
            Exception: Whatever the task raised.
        """
        if self._st == FINISHED:
            return self._get_result()
        state = self._wait(timeout)
        if state == FINISHED:
            return self._get_result()
        if state in _CANCELLED_STATES:
            raise self._cancelled_error()
        raise TimeoutError()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Return the exception the task raised (None if it returned), blocking until done.

        Raises:
            CancelledError: The task was cancelled.
            TimeoutError: The task was not done within ``timeout``.
            TypeError: ``timeout`` is not a number (checked only if the task
                is not done yet).
            ValueError: ``timeout`` is NaN (likewise).
        """
        state = self._wait(timeout)
        if state == FINISHED:
            return self._exception
        if state in _CANCELLED_STATES:
            raise self._cancelled_error()
        raise TimeoutError()

    def _wait(self, timeout: float | None) -> str:
        state = self._state
        if state in _DONE_STATES and state != CANCELLED:
            return state
        if timeout is not None:
            # Only here, on the way to blocking: a done future answers at once.
            _check_timeout(timeout)
        sync = self._ensure_sync()
        if sync.__class__ is _Final:
            return sync.state
        cond = sync.cond  # type: ignore[union-attr]
        with cond:
            state = self._st
            if state not in _DONE_STATES:
                cond.wait(timeout)
                state = self._st
        return state

    def _wait_token(self, timeout: float | None, token: CancellationToken) -> str | None:
        """Block until done (return the state), or until ``token`` is cancelled or
        ``timeout`` passes (return None)."""
        state = self._state
        if state in _DONE_STATES and state != CANCELLED:
            return state
        if token._cancelled:
            return None
        sync = self._ensure_sync()
        if sync.__class__ is _Final:
            return sync.state
        cond = sync.cond  # type: ignore[union-attr]
        reg = token.register(_notify_all, cond)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            with cond:
                while True:
                    state = self._st
                    if state in _DONE_STATES:
                        return state
                    if token._cancelled:
                        return None
                    if deadline is None:
                        cond.wait()
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return None
                        cond.wait(remaining)
        finally:
            reg.unregister()

    def add_done_callback(self, fn: Callable[[Future[_R]], object]) -> None:
        """Call ``fn(future)`` when the task is done (now, on this thread, if it is).

        Callbacks run in the order added, on the thread that finishes or
        cancels the task; an exception from one is logged and ignored.
        """
        # -- asyncio bridge hook (b): asyncio's wrap_future chaining callback --
        if getattr(fn, "__name__", None) == "_call_set_state":
            from ._asyncio import note_done_callback  # noqa: PLC0415 (import cycle)

            note_done_callback(self, fn)
        # -- end of hook (b) --
        sync = self._ensure_sync()
        if sync.__class__ is not _Final:
            with sync.cond:  # type: ignore[union-attr]
                if self._st not in _DONE_STATES:
                    sync.callbacks.append(fn)  # type: ignore[union-attr]
                    return
        self._run_callback(fn)

    def set_running_or_notify_cancel(self) -> bool:
        """Mark the future running, or report that it was cancelled (for executors).

        Returns:
            False if it was cancelled, True if it is now running.

        Raises:
            RuntimeError: It is neither pending nor cancelled.
        """
        group = self._group
        if group is not None:
            if group.pop(self, None) is not None:
                self._st = RUNNING
                group.claimed()
                return True
            if _spin_while_pending(self) in _CANCELLED_STATES:
                return False
        else:
            sync = self._ensure_sync()
            if sync.__class__ is _Final:
                if sync.state == CANCELLED_AND_NOTIFIED:
                    return False
            else:
                with sync.cond:  # type: ignore[union-attr]
                    state = self._st
                    if state == CANCELLED:
                        self._st = CANCELLED_AND_NOTIFIED
                        for waiter in sync.waiters:  # type: ignore[union-attr]
                            waiter.add_cancelled(self)
                        return False
                    if state == PENDING:
                        self._st = RUNNING
                        return True
        LOGGER.critical("Future %s in unexpected state: %s", id(self), self._state)
        raise RuntimeError("Future in unexpected state")

    def set_result(self, result: _R) -> None:
        """Set the result (for executors and tests).

        Raises:
            InvalidStateError: The future is already done.
        """
        if self._state in _DONE_STATES:
            raise InvalidStateError(f"{self._state}: {self!r}")
        self._finish(_FIN, result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        """Set the exception (for executors and tests).

        Raises:
            InvalidStateError: The future is already done.
        """
        if self._state in _DONE_STATES:
            raise InvalidStateError(f"{self._state}: {self!r}")
        self._finish(_FIN, None, exception)

    # -- tokens ------------------------------------------------------------

    @property
    def token(self) -> CancellationToken:
        """The task's cancellation token, created on first use.

        It is cancelled by `request_cancel`, and by whatever cancels the task's
        parents: the submit token, the executor's token, `cancel_all` and
        ``shutdown(cancel_futures=True)``. Cancelling it while the task is
        pending ends the task cancelled; while it runs, a cooperative task sees
        it through `current_token()`.
        """
        token = self._tok
        if token is not None:
            return token
        token = _new_token()
        group = self._group
        if group is not None:
            _link(token, group.parents)
        elif self._cause is not None:
            # A task that ended cancelled (its group already let go): its
            # token is cancelled with the same reason.
            _link(token, (self._cause,))
        lock = group.lock if group is not None else _STANDALONE_LOCK
        with lock:
            won = self._tok
            if won is not None:
                return won
            self._tok = token
        if group is not None and self._st == PENDING:
            reg = token.register(self._token_cancelled)
            self._treg = reg
            if self._st != PENDING and self._treg is reg:
                self._treg = None
                reg.unregister()
        return token

    def _token_cancelled(self) -> None:
        group = self._group
        if group is not None and group.pop(self, None) is not None:
            self._cancel_claimed(self._tok)
            group.claimed()

    def request_cancel(self, reason: object = None) -> None:
        """Cancel this task's token with ``reason``.

        A pending task ends cancelled at once (it never starts); a running task
        is signalled and stops if it cooperates; a finished task is unaffected.
        Idempotent. Errors from the token's callbacks go to the ``cancellable``
        logger. Never blocks on the task.
        """
        if self._tok is None and self._state in _DONE_STATES:
            return
        self.token._cancel_and_log(reason)
