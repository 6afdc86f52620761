"""Parent-side bookkeeping shared by the executors whose tasks run elsewhere.

`CancellableProcessPoolExecutor` and `cancellable.dask.DaskExecutor` both keep
the caller's tokens in this process and reach their tasks through messages.
What they do the same way lives here once: the executor's lock, token,
generation (what `cancel_all` replaces) and shut-down flag; the argument
checks of ``token=``; ending a future cancelled from any state; what
``result()`` raises for a task its token cancelled; and the iterator ``map``
returns.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import _base as _futures_base
from typing import Any, Final, TypeVar

from ._checks import check_seconds
from ._errors import OperationCancelledError
from ._futures import result as _result_with_token
from ._token import CancellationToken, CancellationTokenSource, current_token

_R = TypeVar("_R")

SHUT_DOWN: Final = "the executor was shut down"


def log_cancel_errors(source: CancellationTokenSource, reason: object) -> None:
    """Cancel for the library itself: token callback errors go to the logger.

    A `KeyboardInterrupt` or `SystemExit` raised meanwhile propagates as
    itself once every callback ran.
    """
    source.token._cancel_and_log(reason)


def dump_reason(reason: object) -> bytes:
    """Pickle a cancel reason for another process."""
    try:
        return pickle.dumps(reason)
    except Exception:
        # Reasons travel when they pickle, else as their repr.
        return pickle.dumps(repr(reason))


def executor_token(token: CancellationToken | None) -> CancellationToken:
    """The ``token=`` of an executor's constructor: None is `CancellationToken.NONE`.

    Raises:
        TypeError: ``token`` is neither a `CancellationToken` nor None.
    """
    if token is None:
        return CancellationToken.NONE
    if token.__class__ is not CancellationToken:
        raise TypeError(f"token must be a CancellationToken or None, got {type(token).__name__!r}")
    return token


def submit_token(token: CancellationToken | None) -> CancellationToken:
    """The ``token=`` of ``submit`` and ``map``: None is the ambient token.

    Raises:
        TypeError: ``token`` is neither a `CancellationToken` nor None.
    """
    if token is None:
        return current_token()
    if token.__class__ is not CancellationToken:
        raise TypeError(f"token must be a CancellationToken or None, got {type(token).__name__!r}")
    return token


class ExecutorState:
    """An executor's lock, token, current generation and whether it shut down.

    Invariant: ``gen`` and ``shutdown`` change only under ``lock``; once
    ``shutdown`` is True it stays True. The tasks of a generation hold linked
    children of its source, so cancelling it reaches them all.
    """

    __slots__ = ("__weakref__", "gen", "lock", "shutdown", "token")

    def __init__(self, token: CancellationToken) -> None:
        self.token = token
        self.lock = threading.Lock()
        self.gen = CancellationTokenSource()
        self.shutdown = False

    def task_source(
        self, gen: CancellationTokenSource, token: CancellationToken
    ) -> CancellationTokenSource:
        """A new source linked to ``gen``, the submit ``token`` and the executor's token."""
        parents = [gen.token]
        if token.can_be_cancelled:
            parents.append(token)
        if self.token.can_be_cancelled:
            parents.append(self.token)
        return CancellationTokenSource(*parents)

    def refuse_tasks(self) -> CancellationTokenSource:
        """Mark the executor shut down; return the generation to cancel, if asked to."""
        with self.lock:
            self.shutdown = True
            return self.gen

    def new_generation(self) -> CancellationTokenSource:
        """Start a fresh generation for later submits; return the old one."""
        fresh = CancellationTokenSource()
        with self.lock:
            old, self.gen = self.gen, fresh
        return old


# -- futures -------------------------------------------------------------------


def end_unstarted(future: Future[Any]) -> None:
    """End a future that never ran cancelled, as the stdlib pool does (callbacks run now)."""
    Future.cancel(future)
    Future.set_running_or_notify_cancel(future)


def end_cancelled(future: Future[Any]) -> bool:
    """End a future cancelled, whether pending or running; False if it was already done."""
    # The stdlib Future's own fields, under its own condition: these are the
    # transitions Future.cancel() and set_running_or_notify_cancel() make,
    # allowed here from RUNNING too.
    with future._condition:
        state = future._state
        if state in (_futures_base.CANCELLED_AND_NOTIFIED, _futures_base.FINISHED):
            return False
        future._state = _futures_base.CANCELLED_AND_NOTIFIED
        for waiter in future._waiters:
            waiter.add_cancelled(future)
        future._condition.notify_all()
    future._invoke_callbacks()  # type: ignore[attr-defined]
    return True


class RemoteFuture(Future[_R]):
    """A `concurrent.futures.Future` whose task's token says why it was cancelled."""

    @property
    def token(self) -> CancellationToken:
        """The task's token in this process."""
        raise NotImplementedError

    def result(self, timeout: float | None = None) -> _R:
        """As `concurrent.futures.Future.result`; blocks.

        Raises:
            OperationCancelledError: The task's token cancelled it (a
                `CancelledError`, with the token and reason).
            concurrent.futures.CancelledError: ``cancel()`` cancelled it.
            TimeoutError: Not done within ``timeout``.
        """
        try:
            return super().result(timeout)
        except _futures_base.CancelledError as exc:
            self._raise_why(exc)
            raise

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """As `concurrent.futures.Future.exception`, raising as `result` does; blocks."""
        try:
            return super().exception(timeout)
        except _futures_base.CancelledError as exc:
            self._raise_why(exc)
            raise

    def _raise_why(self, exc: _futures_base.CancelledError) -> None:
        """For the stdlib's plain `CancelledError`, raise what a cancelled task's future raises."""
        if exc.__class__ is not _futures_base.CancelledError:
            return
        token = self.token
        err: _futures_base.CancelledError
        if token.is_cancellation_requested:
            err = OperationCancelledError(token=token, reason=token.reason)
        else:
            err = _futures_base.CancelledError()
        err.__suppress_context__ = True
        raise err


# -- map -------------------------------------------------------------------------


def map_source(
    timeout: float | None, token: CancellationToken | None
) -> tuple[CancellationToken, float | None, CancellationTokenSource]:
    """Check ``map``'s ``timeout`` and ``token``; return the token, deadline and calls' source.

    Raises:
        TypeError: ``token`` is not a token, or ``timeout`` is not a number.
        ValueError: ``timeout`` is negative or NaN.
    """
    token = submit_token(token)
    seconds = check_seconds(timeout, "timeout")
    deadline = None if seconds is None else time.monotonic() + seconds
    source = CancellationTokenSource(token) if token.can_be_cancelled else CancellationTokenSource()
    return token, deadline, source


class MapResults(Iterator[Any]):
    """The iterator ``map`` returns: closing it (even before the first item) cancels the rest."""

    def __init__(
        self,
        fs: list[Future[Any]],
        chunked: bool,
        deadline: float | None,
        source: CancellationTokenSource | None,
        token: CancellationToken,
    ) -> None:
        fs.reverse()
        self._fs = fs
        self._chunked = chunked
        self._deadline = deadline
        self._source = source
        self._token = token
        self._chunk: Iterator[Any] = iter(())

    def __next__(self) -> Any:
        for value in self._chunk:
            return value
        if not self._fs:
            self.close()
            raise StopIteration
        deadline = self._deadline
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            value = _result_with_token(self._fs.pop(), remaining, token=self._token)
        except BaseException:
            self.close()
            raise
        if not self._chunked:
            return value
        self._chunk = iter(value)
        return next(self)

    def close(self) -> None:
        """Cancel every call whose result was not yielded yet."""
        fs, self._fs = self._fs, []
        for f in fs:
            f.cancel()
        source, self._source = self._source, None
        if source is not None:
            log_cancel_errors(source, None)
            source.close()

    def __del__(self) -> None:
        self.close()
