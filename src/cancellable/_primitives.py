"""Token-aware locks, events, semaphores, conditions, barriers, ``sleep`` and ``join``.

Every blocking wait in this module goes through one mechanism, `_Waiter`: a
fresh locked lock that the thread blocks on once, with its own timeout. Whoever
wakes the thread (a ``notify``, a lock release) releases that lock; so does a
callback registered on the token, which is what makes a cancel wake exactly
that thread, at once, with no polling and no extra thread. The callback is
unregistered after every wait.

A lock released by two parties tells afterwards who did what: releases only
succeed on a locked lock and the blocked acquire only succeeds on an unlocked
one, so they alternate. ``_Waiter.handed(woke)`` counts the releases that were
not the cancel's; when one happened the wake was handed over before the cancel
was seen, and the call succeeds, so no notify, permit or item is ever lost.

With no token and the ambient token `CancellationToken.NONE`, each class runs
the stdlib's own code path: `Condition` defers to ``threading.Condition.wait``
and `Lock`/`RLock` block on the C lock inside them. The ambient token is read
only when a call is about to block; an explicit ``token=`` that is already
cancelled raises up front, even when the call could complete.
"""

from __future__ import annotations

import os
import threading
import time
from _thread import LockType, allocate_lock
from _thread import RLock as _CRLock
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from threading import TIMEOUT_MAX
from typing import Any, Final, Protocol, TypeVar, final

from ._checks import check_seconds, check_timeout, check_token
from ._token import CancellationToken, raise_cancelled, resolve

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Lock",
    "RLock",
    "Semaphore",
    "join",
    "sleep",
]

_T = TypeVar("_T")

# The factory of the lock each blocked call waits on; tests wrap it to count
# blocking acquires.
_allocate_waiter_lock: Callable[[], LockType] = allocate_lock


@final
class _Waiter:
    """One blocked call: a locked lock that a waker or the token's cancel releases."""

    __slots__ = ("cancelled", "lock")

    def __init__(self) -> None:
        lock = _allocate_waiter_lock()
        lock.acquire(False)  # a fresh lock: never blocks
        self.lock = lock
        self.cancelled = False

    def wake(self) -> bool:
        """Release the lock if it is locked; return whether this call did."""
        try:
            self.lock.release()
        except RuntimeError:  # another waker got there first
            return False
        return True

    def _on_cancel(self) -> None:
        if self.wake():
            self.cancelled = True

    def block(self, timeout: float, token: CancellationToken) -> bool:
        """Block once until woken, cancelled or ``timeout`` (-1: none) passes.

        Returns whether the lock was acquired (woken by anyone). Once this
        returns, the cancel callback is unregistered and not running, so
        ``cancelled`` is final.
        """
        reg = None
        try:
            reg = token.register(self._on_cancel)
            return self.lock.acquire(True, timeout)
        finally:
            # Setting the flag is the callback's last act: once it is seen
            # the callback is done, and unregistering has nothing to wait for.
            if reg is not None and not self.cancelled:
                reg.unregister()

    def handed(self, woke: bool) -> bool:
        """Whether a waker other than the cancel released the lock.

        Call it once no waker can still act on this waiter. Each successful
        release left the lock unlocked and the acquire (``woke``) locked it
        again, so the releases number ``woke`` plus one if it is unlocked now.
        """
        return woke + (not self.lock.locked()) > self.cancelled


def _timeout_arg(timeout: float | None) -> float:
    """The C lock form of a stdlib-style timeout: -1 means no limit."""
    if timeout is None:
        return -1
    return min(timeout, TIMEOUT_MAX)


# The names the rest of the package imports from here.
_check_timeout = check_timeout


def _check_token(token: object) -> None:
    """Reject a ``token=`` that is neither None nor a `CancellationToken`."""
    check_token(token, "token")


def _check_wait(timeout: object, token: object) -> None:
    """The argument checks of every timed, token-aware wait."""
    if timeout is not None:
        check_timeout(timeout)
    if token is not None and token.__class__ is not CancellationToken:
        check_token(token, "token")


def _enter_wait(timeout: object, token: object, blocking: bool = True) -> None:
    """`_check_wait`, then raise if an explicit token is already cancelled.

    Only a call that may block raises: non-blocking forms and ``timeout <= 0``
    ignore the token.
    """
    _check_wait(timeout, token)
    if (
        blocking
        and token is not None
        and token._cancelled  # type: ignore[attr-defined]
        and (timeout is None or timeout > 0)  # type: ignore[operator]
    ):
        raise_cancelled(token)  # type: ignore[arg-type]


# -- locks -------------------------------------------------------------------------


def _c_lock_error(blocking: bool, timeout: float) -> str:
    # The C lock's own wording, which differs between Python versions.
    try:
        allocate_lock().acquire(blocking, timeout)
    except ValueError as error:
        return str(error)
    raise AssertionError("the C lock accepted invalid arguments")  # pragma: no cover


_NON_BLOCKING_TIMEOUT: Final = _c_lock_error(False, 1)
_NEGATIVE_TIMEOUT: Final = _c_lock_error(True, -5)


def _check_lock_args(blocking: bool, timeout: float, capped: bool) -> None:
    # The checks of the C lock's acquire(), in its order and with its texts;
    # with a token (``capped``) any large timeout is allowed.
    if not blocking:
        raise ValueError(_NON_BLOCKING_TIMEOUT)
    if timeout != timeout:  # noqa: PLR0124 (NaN is the one value unequal to itself)
        raise ValueError("Invalid value NaN (not a number)")
    if timeout < 0:
        raise ValueError(_NEGATIVE_TIMEOUT)
    if timeout > TIMEOUT_MAX and not capped:
        raise OverflowError("timeout value is too large")


class _WaitableLock:
    """What `Lock` and `RLock` share: a C lock plus token-aware waiters.

    The C lock ``_block`` is the lock's state. Calls without a live token
    block on it directly. A call with one enrols a `_Waiter` in ``_waiters``;
    ``release()`` wakes the first waiter that is not already cancelled, which
    then tries the C lock again.
    """

    __slots__ = ("__weakref__", "_block", "_mutex", "_waiters")

    _block: LockType
    _mutex: LockType
    _waiters: deque[_Waiter]

    def __init__(self) -> None:
        self._block = allocate_lock()
        self._mutex = allocate_lock()
        self._waiters = deque()

    def acquire(
        self, blocking: bool = True, timeout: float = -1, *, token: CancellationToken | None = None
    ) -> bool:
        """Acquire the lock, blocking until it is free unless ``blocking`` is False.

        An `RLock` that this thread holds is re-entered at once.

        Args:
            blocking: False to return at once instead of blocking.
            timeout: Seconds to block at most; -1 waits without limit.
            token: Cancels the wait; None means `current_token()`, read only
                when the call has to block.

        Returns:
            True if the lock was acquired, False if not (non-blocking or timeout).

        Raises:
            OperationCancelledError: The token was cancelled before the lock
                was acquired; the lock is not held (or, for an `RLock`, not
                one more time).
            ValueError: A timeout with ``blocking=False``, or a negative one.
            OverflowError: ``timeout`` exceeds `threading.TIMEOUT_MAX` and no
                ``token`` was given (as `threading.Lock`); with a token any
                timeout is allowed and waits at most `threading.TIMEOUT_MAX`.
        """
        if timeout != -1:
            check_timeout(timeout)
            _check_lock_args(blocking, timeout, token is not None)
            if timeout == 0:
                blocking = False
            elif timeout > TIMEOUT_MAX:
                timeout = TIMEOUT_MAX
        if token is not None:
            if token.__class__ is not CancellationToken:
                check_token(token, "token")
            if blocking and token._cancelled:
                raise_cancelled(token)
        if self._block.acquire(False):
            return True
        if not blocking:
            return False
        return self._wait_free(timeout, token)

    def __enter__(self) -> bool:
        # As short as it can be: a Ctrl-C can still land between the C
        # acquire's return and this frame's, leaving the lock held (README,
        # known limitations); the contended path is Python either way.
        return self._block.acquire(False) or self._wait_free(-1, None)

    def _wait_free(self, timeout: float, token: CancellationToken | None) -> bool:
        """Block until the C lock is ours, the timeout passes or the token is cancelled."""
        token = resolve(token)
        if token._lock is None:
            return self._block.acquire(True, timeout)
        if token._cancelled:
            raise_cancelled(token)
        deadline = None if timeout < 0 else time.monotonic() + timeout
        while True:
            waiter = _Waiter()
            got = woke = False
            # Everything that changes state is inside the try, so a Ctrl-C
            # anywhere leaves no dead waiter queued, gives back a lock this
            # call took, and passes on a wake it received, so no live waiter
            # sleeps on a free lock.
            try:
                with self._mutex:
                    self._waiters.append(waiter)
                # A release made before we enrolled did not see us: look again.
                got = self._block.acquire(False)
                if not got:
                    woke = waiter.block(timeout, token)
                self._forget(waiter)
                if not got and waiter.handed(woke):
                    got = self._block.acquire(False)
                    # Else someone else took it first; their release wakes us again.
                if got:
                    return True
                if token._cancelled and (waiter.handed(woke) or waiter.cancelled):
                    raise_cancelled(token)
                if not woke:
                    return False
            except BaseException:
                self._forget(waiter)
                if got:
                    self._release_after_error()
                elif waiter.handed(woke) and self._waiters:
                    self._wake_one()
                raise
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return self._block.acquire(False)

    def _release_after_error(self) -> None:
        self._block.release()
        if self._waiters:
            self._wake_one()

    def _forget(self, waiter: _Waiter) -> None:
        # Under the mutex no release is in flight, so handed() is final after it.
        with self._mutex, suppress(ValueError):
            self._waiters.remove(waiter)

    def _wake_one(self) -> None:
        with self._mutex:
            waiters = self._waiters
            while waiters:
                if waiters.popleft().wake():
                    return

    def _reinit(self) -> None:
        self._block._at_fork_reinit()  # type: ignore[attr-defined]
        self._mutex._at_fork_reinit()  # type: ignore[attr-defined]
        self._waiters.clear()


@final
class Lock(_WaitableLock):
    """A non-reentrant lock, like `threading.Lock`, whose ``acquire`` takes a token.

    Any thread may release it. Use it anywhere a `threading.Lock` goes,
    including as the lock of a `threading.Condition` or `Condition`.
    """

    __slots__ = ()
    __module__ = "cancellable"

    def release(self) -> None:
        """Release the lock; any thread may. Never blocks.

        Raises:
            RuntimeError: The lock is not locked.
        """
        self._block.release()
        if self._waiters:
            self._wake_one()

    def __exit__(self, *exc_info: object) -> None:
        # Kept to two statements: see __enter__ about the window that remains.
        self._block.release()
        if self._waiters:
            self._wake_one()

    def locked(self) -> bool:
        """Whether the lock is held by some thread."""
        return self._block.locked()

    def _is_owned(self) -> bool:
        return self._block.locked()

    def _release_save(self) -> None:
        self.release()

    def _acquire_restore(self, state: object) -> None:
        # Condition.wait re-takes its lock this way, cancelled or not.
        self._block.acquire()

    def _at_fork_reinit(self) -> None:
        self._reinit()

    def __repr__(self) -> str:
        state = "locked" if self._block.locked() else "unlocked"
        return f"<{state} cancellable.Lock object at {id(self):#x}>"


@final
class RLock(_WaitableLock):
    """A reentrant lock, like `threading.RLock`, whose ``acquire`` takes a token.

    The thread that acquired it must release it, as often as it acquired it.
    Its state is a C ``RLock``, so re-entering and releasing cost what they
    cost on `threading.RLock`.
    """

    __slots__ = ()
    __module__ = "cancellable"

    _block: Any  # a _thread.RLock

    def __init__(self) -> None:
        super().__init__()
        self._block = _CRLock()

    def release(self) -> None:
        """Release the lock once; the last release frees it. Never blocks.

        Raises:
            RuntimeError: This thread does not hold the lock.
        """
        block = self._block
        block.release()
        if self._waiters and not block._is_owned():
            self._wake_one()

    def __exit__(self, *exc_info: object) -> None:
        self._block.release()
        if self._waiters and not self._block._is_owned():
            self._wake_one()

    def locked(self) -> bool:
        """Whether the lock is held by any thread, this one included (as 3.14's `RLock.locked`)."""
        block = self._block
        if block._is_owned():
            return True
        if block.acquire(False):
            self.release()  # wakes a waiter that failed to get it meanwhile
            return False
        return True

    def _release_after_error(self) -> None:
        self.release()

    def _is_owned(self) -> bool:
        return bool(self._block._is_owned())

    def _recursion_count(self) -> int:
        return int(self._block._recursion_count())

    def _release_save(self) -> object:
        state = self._block._release_save()
        if self._waiters:
            self._wake_one()
        return state

    def _acquire_restore(self, state: object) -> None:
        # Condition.wait re-takes its lock this way, cancelled or not.
        self._block._acquire_restore(state)

    def _at_fork_reinit(self) -> None:
        self._reinit()

    def __repr__(self) -> str:
        inner = repr(self._block)  # "<locked _thread.RLock object owner=... count=... at ...>"
        head = inner[: inner.rindex(" at ")].replace("_thread.RLock", "cancellable.RLock")
        return f"{head} at {id(self):#x}>"


class _LockLike(Protocol):
    """What a condition needs from its lock (ours, the stdlib's, or another)."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...


# -- condition ---------------------------------------------------------------------


class Condition(threading.Condition):
    """`threading.Condition` whose ``wait``/``wait_for`` take a token.

    The default lock is a cancellable `RLock`. Notifications are never lost to
    a cancel: ``notify(n)`` wakes ``n`` waiters that were not cancelled first.
    """

    __module__ = "cancellable"

    _lock: Any
    _waiters: deque[LockType]
    _is_owned: Callable[[], bool]
    _release_save: Callable[[], Any]
    _acquire_restore: Callable[[Any], None]

    def __init__(self, lock: _LockLike | None = None) -> None:
        if lock is not None and not (
            callable(getattr(lock, "acquire", None)) and callable(getattr(lock, "release", None))
        ):
            raise TypeError(
                f"lock must have acquire() and release() methods, got {type(lock).__name__!r}"
            )
        super().__init__(RLock() if lock is None else lock)  # type: ignore[arg-type]

    def wait(self, timeout: float | None = None, *, token: CancellationToken | None = None) -> bool:
        """Release the lock, block until notified, then re-acquire the lock.

        Args:
            timeout: Seconds to block at most; None waits without limit.
            token: Cancels the wait; None means `current_token()`.

        Returns:
            True if notified, False if the timeout passed first.

        Raises:
            OperationCancelledError: The token was cancelled before a notify
                reached this waiter. The lock is held again when it raises.
            RuntimeError: The calling thread does not hold the lock.
        """
        if timeout is not None or token is not None:
            _check_wait(timeout, token)
        token = resolve(token)
        if token._lock is None or (timeout is not None and timeout <= 0):
            return super().wait(timeout)
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        if token._cancelled:
            raise_cancelled(token)
        waiter = _Waiter()
        woke = released = handed = False
        # All of it inside the try, each change of the lock in one statement
        # with its flag, so a Ctrl-C anywhere unenrols the waiter, holds the
        # lock again, and passes on a notify this waiter received.
        try:
            self._waiters.append(waiter.lock)
            saved, released = self._release_save(), True
            woke = waiter.block(_timeout_arg(timeout), token)
            released, _ = False, self._acquire_restore(saved)  # type: ignore[func-returns-value]
            # Holding the lock again, no notify is in flight: the count is final.
            handed = waiter.handed(woke)
            with suppress(ValueError):
                self._waiters.remove(waiter.lock)
            if handed:
                return True
            if waiter.cancelled:
                raise_cancelled(token)
            return False
        except BaseException:
            if released:
                self._acquire_restore(saved)
            handed = handed or waiter.handed(woke)
            with suppress(ValueError):
                self._waiters.remove(waiter.lock)
            if handed:
                # The notify meant for this waiter goes to another one.
                self.notify(1)
            raise

    def wait_for(
        self,
        predicate: Callable[[], _T],
        timeout: float | None = None,
        *,
        token: CancellationToken | None = None,
    ) -> _T:
        """Wait until ``predicate()`` is true, as `threading.Condition.wait_for`.

        Args:
            predicate: Called with the lock held; its last result is returned.
            timeout: Seconds to block at most; None waits without limit.
            token: Cancels the wait; None means `current_token()`.

        Returns:
            The last value of ``predicate()`` (falsy after a timeout).

        Raises:
            OperationCancelledError: The token was cancelled while waiting (or
                an explicit token already was); the lock is held again.
            RuntimeError: The calling thread does not hold the lock.
        """
        _enter_wait(timeout, token)
        endtime = None
        waittime = timeout
        result = predicate()
        while not result:
            if waittime is not None:
                if endtime is None:
                    endtime = time.monotonic() + waittime
                else:
                    waittime = endtime - time.monotonic()
                    if waittime <= 0:
                        break
            self.wait(waittime, token=token)
            result = predicate()
        return result


# -- events, semaphores, barriers ---------------------------------------------------


class Event(threading.Event):
    """`threading.Event` whose ``wait`` takes a token."""

    __module__ = "cancellable"

    _cond: Condition
    _flag: bool

    def __init__(self) -> None:
        self._cond = Condition(allocate_lock())
        self._flag = False

    def wait(self, timeout: float | None = None, *, token: CancellationToken | None = None) -> bool:
        """Block until the flag is set.

        Args:
            timeout: Seconds to block at most; None waits without limit.
            token: Cancels the wait; None means `current_token()`, read only
                when the flag is not set.

        Returns:
            The flag: True unless the timeout passed first.

        Raises:
            OperationCancelledError: The token was cancelled before the flag
                was set (or an explicit token already was).
        """
        if timeout is not None or token is not None:
            _enter_wait(timeout, token)
        if self._flag:
            return True
        with self._cond:
            signaled: bool = self._flag
            if not signaled:
                signaled = self._cond.wait(timeout, token=token)
            return signaled


class Semaphore(threading.Semaphore):
    """`threading.Semaphore` whose ``acquire`` takes a token."""

    __module__ = "cancellable"

    _cond: Condition

    def __init__(self, value: int = 1) -> None:
        if not isinstance(value, int):
            raise TypeError(f"value must be an integer, got {type(value).__name__!r}")
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._cond = Condition(allocate_lock())
        self._value = value

    def acquire(
        self,
        blocking: bool = True,
        timeout: float | None = None,
        *,
        token: CancellationToken | None = None,
    ) -> bool:
        """Take one permit, blocking while there is none.

        Args:
            blocking: False to return at once instead of blocking.
            timeout: Seconds to block at most; None waits without limit.
            token: Cancels the wait; None means `current_token()`, read only
                when there is no permit.

        Returns:
            True if a permit was taken, False if not (non-blocking or timeout).

        Raises:
            OperationCancelledError: The token was cancelled before a permit
                was taken (or an explicit token already was); none is held.
            ValueError: A timeout with ``blocking=False``.
        """
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        if timeout is not None or token is not None:
            _enter_wait(timeout, token, blocking)
        rc = False
        endtime = None
        with self._cond:
            while self._value == 0:
                if not blocking:
                    break
                if timeout is not None:
                    if endtime is None:
                        endtime = time.monotonic() + timeout
                    else:
                        timeout = endtime - time.monotonic()
                        if timeout <= 0:
                            break
                self._cond.wait(timeout, token=token)
            else:
                self._value -= 1
                rc = True
        return rc

    __enter__ = acquire


class BoundedSemaphore(Semaphore, threading.BoundedSemaphore):
    """`threading.BoundedSemaphore` whose ``acquire`` takes a token."""

    __module__ = "cancellable"

    def __init__(self, value: int = 1) -> None:
        Semaphore.__init__(self, value)
        self._initial_value = value


class Barrier(threading.Barrier):
    """`threading.Barrier` whose ``wait`` takes a token.

    A wait cancelled while the barrier fills breaks the barrier as a timeout
    does: the other waiters get `threading.BrokenBarrierError`, this one
    `OperationCancelledError`. If the barrier was already passed when the
    cancel is seen, the wait returns its index as usual.
    """

    __module__ = "cancellable"

    _cond: Condition
    _state: int
    _count: int
    _timeout: float | None
    _parties: int
    _release: Callable[[], None]
    _break: Callable[[], None]
    _exit: Callable[[], None]

    def __init__(
        self, parties: int, action: Callable[[], None] | None = None, timeout: float | None = None
    ) -> None:
        if isinstance(parties, bool) or not isinstance(parties, int):
            raise TypeError(f"parties must be an integer, got {type(parties).__name__!r}")
        if parties < 1:
            raise ValueError(f"parties must be at least 1, got {parties!r}")
        if action is not None and not callable(action):
            raise TypeError(f"action must be callable or None, got {type(action).__name__!r}")
        if timeout is not None:
            check_timeout(timeout)
        super().__init__(parties, action, timeout)
        self._cond = Condition(allocate_lock())

    def wait(self, timeout: float | None = None, *, token: CancellationToken | None = None) -> int:
        """Wait until ``parties`` threads have called ``wait``.

        Args:
            timeout: Seconds to block at most; None uses the barrier's default.
            token: Cancels the wait; None means `current_token()`.

        Returns:
            This thread's arrival index, from 0 to ``parties - 1``.

        Raises:
            OperationCancelledError: The token was cancelled before the
                barrier was passed (or an explicit token already was).
            threading.BrokenBarrierError: The barrier broke or was reset.
        """
        if timeout is None:
            timeout = self._timeout
        if timeout is not None or token is not None:
            _enter_wait(timeout, token)
        cond = self._cond
        with cond:
            while self._state in (-1, 1):  # draining or resetting
                cond.wait(token=token)
            if self._state < 0:
                raise threading.BrokenBarrierError
            index = self._count
            self._count += 1
            try:
                if index + 1 == self._parties:
                    self._release()
                else:
                    self._wait_filled(timeout, token)
                return index
            finally:
                self._count -= 1
                self._exit()

    def _wait_filled(self, timeout: float | None, token: CancellationToken | None) -> None:
        try:
            passed = self._cond.wait_for(lambda: self._state != 0, timeout, token=token)
        except BaseException:
            # A cancel or a Ctrl-C: break the barrier, as the stdlib does for
            # any exception, unless it was passed before this thread noticed.
            if self._state == 1:
                return
            if self._state == 0:
                self._break()
            raise
        if not passed:
            self._break()
            raise threading.BrokenBarrierError
        if self._state < 0:
            raise threading.BrokenBarrierError


# -- sleep and join ----------------------------------------------------------------


def sleep(seconds: float, *, token: CancellationToken | None = None) -> None:
    """Sleep ``seconds``, or until the token is cancelled.

    Args:
        seconds: How long to sleep; infinity sleeps until the token is cancelled.
        token: Cancels the sleep; None means `current_token()`. With
            `CancellationToken.NONE` this is `time.sleep`.

    Raises:
        OperationCancelledError: The token was cancelled before the time passed.
        TypeError: ``seconds`` is not a number.
        ValueError: ``seconds`` is negative or NaN.
    """
    limit = check_seconds(seconds, "seconds")
    if token is not None and token.__class__ is not CancellationToken:
        check_token(token, "token")
    if limit == 0:
        time.sleep(0)
        return
    token = resolve(token)
    if token._cancelled:
        raise_cancelled(token)
    if token._lock is not None or limit is None:
        # Only the cancel releases the waiter: a wake means cancelled.
        if _Waiter().block(_timeout_arg(limit), token):
            raise_cancelled(token)
        return
    time.sleep(limit)


_join_lock = allocate_lock()
_join_watches: dict[threading.Thread, Event] = {}


def _watch_thread(thread: threading.Thread, ended: Event) -> None:
    thread.join()
    with _join_lock:
        _join_watches.pop(thread, None)
    ended.set()


def join(
    thread: threading.Thread,
    timeout: float | None = None,
    *,
    token: CancellationToken | None = None,
) -> None:
    """Wait until ``thread`` ends, as ``thread.join(timeout)``, or the token is cancelled.

    A thread gives no signal when it ends other than its own ``join``, so the
    first cancellable join of a live thread starts one small daemon thread
    that joins it and wakes every cancellable joiner; later joins of the same
    thread share it, and it exits with the thread. Check ``thread.is_alive()``
    afterwards to tell a timeout from the end, as with `threading.Thread.join`.

    Args:
        thread: The thread to wait for.
        timeout: Seconds to block at most; None waits without limit.
        token: Cancels the wait; None means `current_token()`. With
            `CancellationToken.NONE` this is ``thread.join(timeout)``.

    Raises:
        OperationCancelledError: The token was cancelled before the thread ended.
        RuntimeError: ``thread`` is the current thread or was never started.
    """
    if not isinstance(thread, threading.Thread):
        raise TypeError(f"thread must be a threading.Thread, got {type(thread).__name__!r}")
    _enter_wait(timeout, token)
    thread.join(0)  # the stdlib's checks; returns at once
    if not thread.is_alive() or (timeout is not None and timeout <= 0):
        return
    token = resolve(token)
    if token._lock is None:
        thread.join(timeout)
        return
    if token._cancelled:
        raise_cancelled(token)
    with _join_lock:
        ended = _join_watches.get(thread)
        start = ended is None
        if ended is None:
            ended = _join_watches[thread] = Event()
    if start:
        threading.Thread(
            target=_watch_thread,
            args=(thread, ended),
            name=f"cancellable-join-{thread.name}",
            daemon=True,
        ).start()
    if ended.wait(timeout, token=token):
        thread.join()


def _after_fork_in_child() -> None:
    # Another thread may have held the lock at the fork; no thread of the
    # parent runs here, so no watch is left to finish either.
    _join_lock._at_fork_reinit()  # type: ignore[attr-defined]
    _join_watches.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

for _fn in (sleep, join):
    _fn.__module__ = "cancellable"
del _fn
