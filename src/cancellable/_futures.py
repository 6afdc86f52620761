"""Token-aware waiting on any `concurrent.futures.Future`: `wait`, `as_completed`, `result`.

Only the public `Future` API is used (``add_done_callback``, ``done()``,
``result()``), so futures of any executor work. A future waited on with a token
gets one done-callback, a `_Watch`, the first time; every later wait on it,
however many are pending at once, adds an entry to that watch instead of
another callback. Each wait blocks on one `_Waiter` that the watches and the
token's cancel release, and unregisters from all of them when it returns.

Without a token (and with the ambient token `CancellationToken.NONE`) these
are the stdlib functions themselves.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
import weakref
from _thread import allocate_lock
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures._base import DoneAndNotDoneFutures
from typing import Any, TypeVar, final

from ._primitives import _enter_wait, _timeout_arg, _Waiter
from ._token import CancellationToken, ambient_is_none, is_none, raise_cancelled, resolve

__all__ = ["as_completed", "result", "wait"]

_T = TypeVar("_T")

_RETURN_WHEN = (cf.FIRST_COMPLETED, cf.FIRST_EXCEPTION, cf.ALL_COMPLETED)


@final
class _Watch:
    """The single done-callback of one future, fanning out to the waits pending on it."""

    __slots__ = ("done", "lock", "waiters")

    def __init__(self) -> None:
        self.lock = allocate_lock()
        self.waiters: dict[Callable[[cf.Future[Any]], object], None] = {}
        self.done = False

    def add(self, wake: Callable[[cf.Future[Any]], object]) -> bool:
        """Enrol ``wake``; False if the future is already done (nothing enrolled)."""
        with self.lock:
            if self.done:
                return False
            self.waiters[wake] = None
            return True

    def discard(self, wake: Callable[[cf.Future[Any]], object]) -> None:
        with self.lock:
            self.waiters.pop(wake, None)

    def __call__(self, future: cf.Future[Any]) -> None:
        with self.lock:
            self.done = True
            waiters, self.waiters = self.waiters, {}
        with _registry_lock:
            _strong.pop(id(future), None)
        for wake in waiters:
            wake(future)


_registry_lock = allocate_lock()
_watches: weakref.WeakKeyDictionary[cf.Future[Any], _Watch] = weakref.WeakKeyDictionary()
# Futures that cannot be weakly referenced, until they are done.
_strong: dict[int, tuple[cf.Future[Any], _Watch]] = {}


def _after_fork_in_child() -> None:
    # Another thread may have held the registry lock at the fork.
    _registry_lock._at_fork_reinit()  # type: ignore[attr-defined]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _watch(future: cf.Future[Any]) -> _Watch:
    """The future's watch, installing its one done-callback the first time."""
    with _registry_lock:
        try:
            watch = _watches.get(future)
        except TypeError:
            entry = _strong.get(id(future))
            watch = None if entry is None else entry[1]
        if watch is not None:
            return watch
        watch = _Watch()
        try:
            _watches[future] = watch
        except TypeError:
            _strong[id(future)] = (future, watch)
    future.add_done_callback(watch)
    return watch


def _enrol(
    futures: Iterable[cf.Future[Any]],
    wake: Callable[[cf.Future[Any]], object],
    watches: list[_Watch],
) -> None:
    """Enrol ``wake`` on each future, noting it in ``watches`` (which the caller
    empties in a ``finally``, so an interrupt half-way leaves nothing behind);
    call it at once for those already done."""
    for future in futures:
        watch = _watch(future)
        watches.append(watch)
        if not watch.add(wake):
            wake(future)


def _satisfied(done: set[cf.Future[_T]], pending: set[cf.Future[_T]], return_when: str) -> bool:
    if not pending:
        return True
    if return_when == cf.FIRST_COMPLETED:
        return bool(done)
    if return_when == cf.FIRST_EXCEPTION:
        # As the stdlib: a cancelled future is done, not an exception.
        return any(not f.cancelled() and f.exception() is not None for f in done)
    return False


def _split(fs: set[cf.Future[_T]]) -> tuple[set[cf.Future[_T]], set[cf.Future[_T]]]:
    done = {f for f in fs if f.done()}
    return done, fs - done


def wait(
    fs: Iterable[cf.Future[_T]],
    timeout: float | None = None,
    return_when: str = cf.ALL_COMPLETED,
    *,
    token: CancellationToken | None = None,
) -> DoneAndNotDoneFutures[_T]:
    """Wait for futures as `concurrent.futures.wait` does, or until the token is cancelled.

    Args:
        fs: Futures of any executor (duplicates are ignored).
        timeout: Seconds to block at most; None waits without limit.
        return_when: ``FIRST_COMPLETED``, ``FIRST_EXCEPTION`` or
            ``ALL_COMPLETED`` from `concurrent.futures`.
        token: Cancels the wait; None means `current_token()`, which then
            raises only if the call has to block. With
            `CancellationToken.NONE` this is `concurrent.futures.wait`.

    Returns:
        A named tuple ``(done, not_done)`` of sets.

    Raises:
        OperationCancelledError: The token was cancelled before the futures
            got there (or an explicit token already was).
        ValueError: ``return_when`` is not one of the three constants.
    """
    if return_when not in _RETURN_WHEN:
        raise ValueError(
            "return_when must be FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED, "
            f"got {return_when!r}"
        )
    _enter_wait(timeout, token)
    futures = set(fs)
    if (token is None and ambient_is_none()) or (token is not None and is_none(token)):
        return cf.wait(futures, timeout, return_when)
    deadline = None if timeout is None else time.monotonic() + timeout
    done, pending = _split(futures)
    if _satisfied(done, pending, return_when) or (timeout is not None and timeout <= 0):
        return DoneAndNotDoneFutures(done, pending)
    token = resolve(token)  # read only now that the call blocks
    if token._cancelled:
        raise_cancelled(token)
    waiter = _Waiter()
    wake = _waker(waiter)
    watches: list[_Watch] = []
    try:
        _enrol(pending, wake, watches)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            waiter.block(_timeout_arg(remaining), token)
            done, pending = _split(futures)
            if _satisfied(done, pending, return_when):
                break
            if token._cancelled:
                raise_cancelled(token)
    finally:
        for watch in watches:
            watch.discard(wake)
    return DoneAndNotDoneFutures(*_split(futures))


def _waker(waiter: _Waiter) -> Callable[[cf.Future[Any]], object]:
    def wake(future: cf.Future[Any]) -> None:
        waiter.wake()

    return wake


def as_completed(
    fs: Iterable[cf.Future[_T]],
    timeout: float | None = None,
    *,
    token: CancellationToken | None = None,
) -> Iterator[cf.Future[_T]]:
    """Yield futures as they complete, as `concurrent.futures.as_completed`, until cancelled.

    Futures already done are yielded first. The token is read when the
    iteration starts (None: `current_token()` of the iterating thread).

    Args:
        fs: Futures of any executor (duplicates are yielded once).
        timeout: Seconds, from the first ``next()``, after which the
            iteration raises `TimeoutError` if futures remain.
        token: Cancels the wait; with `CancellationToken.NONE` this is
            `concurrent.futures.as_completed`.

    Raises:
        OperationCancelledError: The token was cancelled while futures were
            still pending (or an explicit token already was, at the start).
        TimeoutError: The timeout passed with futures still pending.
    """
    _enter_wait(timeout, token)
    if (token is None and ambient_is_none()) or (token is not None and is_none(token)):
        yield from cf.as_completed(fs, timeout)
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    futures = set(fs)
    total = len(futures)
    done, pending = _split(futures)
    yield from done
    if not pending:
        return
    token = resolve(token)  # read only now that the iteration may block
    finished: deque[cf.Future[_T]] = deque()
    waiter = _Waiter()

    def wake(future: cf.Future[Any]) -> None:
        finished.append(future)
        waiter.wake()

    watches: list[_Watch] = []
    try:
        _enrol(pending, wake, watches)
        while pending:
            if not finished:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is None or remaining > 0:
                    if token._cancelled:
                        raise_cancelled(token)
                    waiter.block(_timeout_arg(remaining), token)
                if not finished:
                    if token._cancelled:
                        raise_cancelled(token)
                    if deadline is not None and time.monotonic() >= deadline:
                        raise TimeoutError(f"{len(pending)} (of {total}) futures unfinished")
                    continue
            future = finished.popleft()
            if future in pending:
                pending.discard(future)
                yield future
    finally:
        for watch in watches:
            watch.discard(wake)


def result(
    future: cf.Future[_T], timeout: float | None = None, *, token: CancellationToken | None = None
) -> _T:
    """Return ``future.result(timeout)``, or raise when the token is cancelled first.

    Works with futures of any executor. Does not cancel the future: only this
    wait stops.

    Args:
        future: The future to wait for.
        timeout: Seconds to block at most; None waits without limit.
        token: Cancels the wait; None means `current_token()`, read only when
            the future is not done yet.

    Returns:
        The future's result.

    Raises:
        OperationCancelledError: The token was cancelled before the future
            was done (or an explicit token already was).
        TimeoutError: The timeout passed first.
        concurrent.futures.CancelledError: The future itself was cancelled.
        Exception: Whatever the future's call raised.
    """
    if not isinstance(future, cf.Future):
        raise TypeError(
            f"future must be a concurrent.futures.Future, got {type(future).__name__!r}"
        )
    if timeout is not None or token is not None:
        _enter_wait(timeout, token)
    if future.done() or (timeout is not None and timeout <= 0):
        return future.result(timeout)
    token = resolve(token)
    if is_none(token):
        return future.result(timeout)
    if token._cancelled:
        raise_cancelled(token)
    waiter = _Waiter()
    wake = _waker(waiter)
    watch = _watch(future)
    if watch.add(wake):
        try:
            # One completion or the cancel releases the waiter: one wait suffices.
            waiter.block(_timeout_arg(timeout), token)
        finally:
            watch.discard(wake)
    if not future.done() and token._cancelled:
        raise_cancelled(token)
    return future.result(0)  # TimeoutError if the timeout passed first


for _fn in (wait, as_completed, result):
    _fn.__module__ = "cancellable"
del _fn
