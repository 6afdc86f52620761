"""Cancellation token sources, tokens and callback registrations.

A `CancellationToken` holds all the state; its `CancellationTokenSource` is
the handle that may cancel it. Each token keeps its callback registrations in
a dict used as an ordered set, so registering and unregistering are O(1) and
cancelling pops them latest first.

Linking a child source to a parent puts a `_Link` into the parent's
registrations. A link is a weak reference to the child token, so a parent
never keeps an unused child alive; it also holds the child strongly (``strong``)
while the child has registrations, waiters or strongly held children of its
own, because then someone expects the child's callbacks to run when the parent
is cancelled, even if nobody else refers to the child. When a weakly linked
child dies, the weak reference's callback removes the link from the parent
with one atomic ``dict.pop``, taking no lock, since the garbage collector may
run it while any lock is held.

Locks are only ever taken upward (a child's, then a parent's), and callbacks
run outside every lock.
"""

from __future__ import annotations

import logging
import sys
import weakref
from _thread import LockType, allocate_lock
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from operator import attrgetter
from threading import get_ident
from types import TracebackType
from typing import Any, Final, NoReturn, Protocol, Self, TypeVarTuple, Unpack, cast, final

from . import _timer
from ._checks import check_callable, check_seconds
from ._errors import OperationCancelledError

__all__ = [
    "CancellationToken",
    "CancellationTokenRegistration",
    "CancellationTokenSource",
    "current_token",
    "use_token",
]

_Ts = TypeVarTuple("_Ts")

_log = logging.getLogger("cancellable")
_new = object.__new__


def _log_callback_errors(errors: list[BaseException]) -> None:
    """Log errors from callbacks of a cancel that has no caller to raise them to."""
    for error in errors:
        _log.error("error in a cancellation callback", exc_info=error)


@final
class CancellationTokenRegistration:
    """A callback registered on a token with `CancellationToken.register`.

    Use `unregister()` to remove it, or use it as a context manager to remove it
    when the block ends.
    """

    __slots__ = ("__weakref__", "_args", "_fn", "_token")
    __module__ = "cancellable"

    _token: CancellationToken | None
    _fn: Callable[..., object] | None
    _args: tuple[object, ...]

    def __init__(self) -> None:
        raise TypeError("registrations are created by CancellationToken.register()")

    def unregister(self) -> bool:
        """Remove the callback so it never runs.

        Returns True if it was removed before it ran, False if it already ran,
        is running, or was removed before. If it is running on another thread,
        this blocks until it has finished (so once this returns the callback is
        not running); called from inside the callback itself, it returns False
        at once.
        """
        token = self._token
        if token is None:
            return False
        return token._unregister(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unregister()

    def __repr__(self) -> str:
        state = "registered" if self._token is not None else "inactive"
        return f"<CancellationTokenRegistration {state} callback={self._fn!r}>"


def _inactive_registration() -> CancellationTokenRegistration:
    reg: CancellationTokenRegistration = _new(CancellationTokenRegistration)
    reg._token = None
    reg._fn = None
    reg._args = ()
    return reg


class _Link(weakref.ref):  # type: ignore[type-arg]
    """A parent's registration that cancels a linked child token."""

    __slots__ = ("parent", "strong")
    # Identity semantics: two links to the same child are different registrations.
    __hash__ = object.__hash__
    __eq__ = object.__eq__

    parent: CancellationToken
    strong: CancellationToken | None


def _link_died(link: _Link) -> None:
    # Runs when a weakly linked child token is collected, maybe inside any
    # locked section of this thread: one atomic pop, no lock.
    regs = link.parent._regs
    if regs is not None:
        regs.pop(link, None)


_Registration = CancellationTokenRegistration | _Link


@final
class CancellationToken:
    """A read-only view of a source's cancellation state.

    Get one from `CancellationTokenSource.token`; `CancellationToken.NONE` is a
    token that is never cancelled. Tokens are cheap to pass around, compare
    equal when they come from the same source, and are thread-safe. They do not
    pickle (except `NONE`).
    """

    __slots__ = (
        "__weakref__",
        "_cancelled",
        "_closed",
        "_deadline",
        "_links",
        "_lock",
        "_nstrong",
        "_reason",
        "_regs",
        "_running",
        "_running_thread",
        "_unreg_waiters",
    )
    __module__ = "cancellable"

    NONE: Final[CancellationToken]  # type: ignore[misc]

    _cancelled: bool
    _reason: object
    _lock: LockType | None
    _regs: dict[_Registration, None] | None
    _nstrong: int
    _links: tuple[_Link, ...] | None
    _deadline: _timer.Entry | None
    _closed: bool
    _running: _Registration | None
    _running_thread: int
    _unreg_waiters: list[LockType] | None

    def __init__(self) -> None:
        raise TypeError(
            "CancellationToken cannot be created directly; "
            "use CancellationTokenSource().token or CancellationToken.NONE"
        )

    # -- reading ---------------------------------------------------------

    # A property whose getter is C code: no Python frame, so reading the flag
    # costs about what ``threading.Event.is_set()`` does.
    is_cancellation_requested = property(
        attrgetter("_cancelled"),
        doc="Whether the token has been cancelled. Never blocks, takes no lock.",
    )

    @property
    def can_be_cancelled(self) -> bool:
        """False only for `CancellationToken.NONE`, which is never cancelled."""
        return self._lock is not None

    @property
    def reason(self) -> object:
        """Why the token was cancelled.

        ``None`` until it is cancelled; then the reason given to ``cancel()``
        (``None`` if none was given), a `TimeoutError` for a deadline, or the
        reason of the parent whose cancellation reached it.
        """
        return self._reason if self._cancelled else None

    def raise_if_cancellation_requested(self) -> None:
        """Raise `OperationCancelledError` if the token has been cancelled.

        Never blocks. Use it at the points where a cooperative loop can stop.
        """
        if self._cancelled:
            self._raise_cancelled()

    def _raise_cancelled(self) -> NoReturn:
        reason = self._reason
        message = "the operation was cancelled"
        if reason is not None:
            message = (
                f"{message}: {reason!r}" if not isinstance(reason, str) else f"{message}: {reason}"
            )
        raise OperationCancelledError(message, token=self, reason=reason)

    # -- registering -----------------------------------------------------

    def register(
        self, callback: Callable[[Unpack[_Ts]], object], /, *args: *_Ts
    ) -> CancellationTokenRegistration:
        """Run ``callback(*args)`` once when the token is cancelled.

        Callbacks run synchronously on the thread that cancels, latest
        registered first, outside every internal lock; they must not block. If
        the token is already cancelled, the callback runs now, on this thread,
        and its exception (if any) propagates from here. On
        `CancellationToken.NONE` nothing is registered.

        Returns:
            A registration whose ``unregister()`` removes the callback.

        Raises:
            TypeError: ``callback`` is not callable.
        """
        if not callable(callback):
            check_callable(callback, "callback")
        reg: CancellationTokenRegistration = _new(CancellationTokenRegistration)
        reg._fn = callback
        reg._args = args
        lock = self._lock
        if lock is None:
            reg._token = None
            return reg
        with lock:
            if not self._cancelled:
                reg._token = self
                regs = self._regs
                if regs is None:
                    regs = self._regs = {}
                regs[reg] = None
                self._nstrong += 1
                if self._nstrong == 1 and self._links:
                    self._hold_links(True)
                return reg
        reg._token = None
        callback(*args)
        reg._fn = None
        reg._args = ()
        return reg

    def _unregister(self, reg: CancellationTokenRegistration) -> bool:
        waiter = None
        with self._lock:  # type: ignore[union-attr]
            regs = self._regs
            if regs is not None and reg in regs:
                del regs[reg]
                reg._token = None
                if not regs:
                    # A dict never shrinks by deletion: drop the emptied one.
                    self._regs = None
                self._nstrong -= 1
                if self._nstrong == 0 and self._links:
                    self._hold_links(False)
                return True
            if self._running is reg and self._running_thread != get_ident():
                waiter = allocate_lock()
                waiter.acquire()
                if self._unreg_waiters is None:
                    self._unreg_waiters = [waiter]
                else:
                    self._unreg_waiters.append(waiter)
        if waiter is not None:
            waiter.acquire()  # released once the running callback returns
        return False

    def _hold_links(self, strong: bool) -> None:
        # Called with self._lock held when the count of reasons to keep this
        # token alive crosses zero: make the parents hold it strongly, or not.
        for link in self._links:  # type: ignore[union-attr]
            parent = link.parent
            with parent._lock:  # type: ignore[union-attr]
                if strong:
                    if link.strong is None:
                        link.strong = self
                        parent._nstrong += 1
                        if parent._nstrong == 1 and parent._links:
                            parent._hold_links(True)
                elif link.strong is not None:
                    link.strong = None
                    parent._nstrong -= 1
                    if parent._nstrong == 0 and parent._links:
                        parent._hold_links(False)

    @staticmethod
    def _detach(links: tuple[_Link, ...]) -> None:
        # Remove this token's links from its parents (on close or cancel).
        for link in links:
            parent = link.parent
            with parent._lock:  # type: ignore[union-attr]
                regs = parent._regs
                if regs is not None:
                    regs.pop(link, None)
                    if not regs:
                        parent._regs = None
                if link.strong is not None:
                    link.strong = None
                    parent._nstrong -= 1
                    if parent._nstrong == 0 and parent._links:
                        parent._hold_links(False)

    # -- waiting ---------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the token is cancelled or ``timeout`` seconds pass.

        Args:
            timeout: Seconds to wait at most; ``None`` (or infinity) waits
                without limit. On `CancellationToken.NONE` with no timeout this
                blocks forever.

        Returns:
            True if the token is cancelled, False if the timeout passed first.

        Raises:
            TypeError: ``timeout`` is not a number.
            ValueError: ``timeout`` is negative or NaN.
        """
        if self._cancelled:
            return True
        seconds = check_seconds(timeout, "timeout")
        waiter = allocate_lock()
        waiter.acquire()
        reg = self.register(waiter.release)
        woke = False
        try:
            woke = waiter.acquire(True, -1 if seconds is None else seconds)
        finally:
            if not woke:
                reg.unregister()
        return woke or self._cancelled

    # -- asyncio bridge hook (a) ------------------------------------------

    def wait_async(self) -> Coroutine[Any, Any, bool]:
        """Wait in asyncio code, without blocking the loop, until the token is cancelled.

        ``await token.wait_async()`` returns True once the token is cancelled.
        No thread per waiter: one registration, removed if the awaiting task
        is cancelled. On `CancellationToken.NONE` it waits until the awaiting
        task is cancelled.
        """
        from ._asyncio import wait_async  # noqa: PLC0415 (asyncio stays out of import time)

        return wait_async(self)

    # -- end of hook (a) ---------------------------------------------------

    # -- cancelling (for the source and the library) ---------------------

    def _cancel(self, reason: object) -> list[BaseException] | None:
        """Cancel the token, run its callbacks and cancel its linked children.

        Returns the errors the callbacks raised (children's included), or None.
        A concurrent or repeated call returns None at once.
        """
        lock = self._lock
        if lock is None:
            return None
        with lock:
            if self._cancelled:
                return None
            self._reason = reason
            self._cancelled = True
            links, self._links = self._links, None
            deadline, self._deadline = self._deadline, None
            self._running_thread = get_ident()
        if deadline is not None:
            _timer.TIMER.disarm(deadline)
        if links:
            self._detach(links)
        errors: list[BaseException] | None = None
        waiters: list[LockType] | None = None
        while True:
            with lock:
                if self._unreg_waiters is not None:
                    waiters, self._unreg_waiters = self._unreg_waiters, None
                regs = self._regs
                if not regs:
                    self._regs = None
                    self._running = None
                    reg = None
                else:
                    reg = regs.popitem()[0]
                    self._running = reg
            if waiters is not None:
                for waiter in waiters:
                    waiter.release()
                waiters = None
            if reg is None:
                return errors
            if reg.__class__ is _Link:
                child = reg.strong or reg()
                if child is not None:
                    child_errors = child._cancel(reason)
                    if child_errors:
                        if errors is None:
                            errors = child_errors
                        else:
                            errors.extend(child_errors)
                continue
            try:
                reg._fn(*reg._args)  # type: ignore[union-attr,misc]
            except BaseException as error:
                if errors is None:
                    errors = [error]
                else:
                    errors.append(error)
            # Only now, so that unregister() from another thread meanwhile
            # parks until the callback has finished.
            reg._token = None  # type: ignore[union-attr]
            reg._fn = None  # type: ignore[union-attr]
            reg._args = ()  # type: ignore[union-attr]

    def _cancel_and_log(self, reason: object) -> None:
        """Cancel for the library itself: callback errors go to the logger."""
        errors = self._cancel(reason)
        if errors:
            _log_callback_errors(errors)

    def _deadline_passed(self) -> None:
        self._cancel_and_log(TimeoutError("the deadline passed"))

    # -- dunder ----------------------------------------------------------

    def __repr__(self) -> str:
        if self._lock is None:
            return "<CancellationToken NONE>"
        if self._cancelled:
            return f"<CancellationToken cancelled reason={self._reason!r}>"
        return "<CancellationToken active>"

    def __reduce__(self) -> tuple[Callable[[], CancellationToken], tuple[()]]:
        if self._lock is None:
            return (_none_token, ())
        raise TypeError(
            "cannot pickle a CancellationToken: it is tied to threads of this process; "
            "only CancellationToken.NONE pickles"
        )

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: object) -> Self:
        return self


def _new_token() -> CancellationToken:
    token: CancellationToken = _new(CancellationToken)
    token._cancelled = False
    token._reason = None
    token._lock = allocate_lock()
    token._regs = None
    token._nstrong = 0
    token._links = None
    token._deadline = None
    token._closed = False
    token._running = None
    token._running_thread = 0
    token._unreg_waiters = None
    return token


def _make_none() -> CancellationToken:
    token = _new_token()
    token._lock = None
    return token


CancellationToken.NONE = _make_none()  # type: ignore[misc]
_NONE: Final = CancellationToken.NONE


def _none_token() -> CancellationToken:
    return _NONE


def _check_parent(parent: object) -> CancellationToken:
    if parent.__class__ is CancellationToken:
        return parent
    if isinstance(parent, CancellationTokenSource):
        raise TypeError(
            "parents must be CancellationToken objects; pass source.token, not the source"
        )
    raise TypeError(f"parents must be CancellationToken objects, got {type(parent).__name__!r}")


def _link(child: CancellationToken, parents: tuple[object, ...]) -> None:
    """Link a new token to its parents, or cancel it if one already is."""
    unique: list[CancellationToken] = []
    for candidate in parents:
        parent = _check_parent(candidate)
        if parent._lock is not None and parent not in unique:
            unique.append(parent)
    for parent in unique:
        if parent._cancelled:
            child._cancel_and_log(parent._reason)
            return
    if not unique:
        return
    links = []
    for parent in unique:
        link = _Link(child, _link_died)
        link.parent = parent
        link.strong = None
        links.append(link)
    child._links = tuple(links)
    for link in links:
        parent = link.parent
        with parent._lock:  # type: ignore[union-attr]
            if not parent._cancelled:
                # A child cancelled meanwhile (through an earlier parent) has
                # already detached; adding its link now would leave it behind.
                if not child._cancelled:
                    regs = parent._regs
                    if regs is None:
                        regs = parent._regs = {}
                    regs[link] = None
                continue
            reason = parent._reason
        child._cancel_and_log(reason)
        return


@final
class CancellationTokenSource:
    """Creates and cancels a `CancellationToken`.

    ``CancellationTokenSource(*parents, timeout=None)`` makes a source whose
    token is also cancelled when any of ``parents`` is (with that parent's
    reason), or when ``timeout`` seconds have passed (with a `TimeoutError`
    reason). Leaving a ``with`` block closes the source; it never cancels it.

    Raises:
        TypeError: A parent is not a `CancellationToken`, or ``timeout`` is
            not a number.
        ValueError: ``timeout`` is negative or NaN.
    """

    __slots__ = ("__weakref__", "_token")
    __module__ = "cancellable"

    def __init__(self, *parents: CancellationToken, timeout: float | None = None) -> None:
        token = _new_token()
        self._token = token
        if parents:
            _link(token, parents)
        if timeout is not None:
            self.cancel_after(timeout)

    @property
    def token(self) -> CancellationToken:
        """The token this source cancels. Always the same object."""
        return self._token

    @property
    def is_cancellation_requested(self) -> bool:
        """Whether the token has been cancelled."""
        return self._token._cancelled

    @property
    def closed(self) -> bool:
        """Whether `close()` has been called."""
        return self._token._closed

    def cancel(self, reason: object = None) -> None:
        """Cancel the token, run its callbacks and cancel its linked children.

        Idempotent: the first call's reason wins; a later or concurrent call
        returns at once without waiting for the first to finish. Callbacks run
        on this thread, so this blocks while they run. Works after `close()`.

        Raises:
            ExceptionGroup: One or more callbacks (of this token or of linked
                children) raised; every callback still ran. If this call is
                made while another exception is propagating, the errors are
                logged to the ``cancellable`` logger instead.
        """
        errors = self._token._cancel(reason)
        if errors:
            if sys.exception() is not None:
                _log_callback_errors(errors)
                return
            raise BaseExceptionGroup("errors in cancellation callbacks", errors)

    def cancel_after(self, delay: float) -> None:
        """Cancel the token ``delay`` seconds from now, replacing any earlier deadline.

        All deadlines of all sources share one timer thread. A ``delay`` of 0
        cancels now; infinity removes the deadline. Callback errors of a
        deadline cancel go to the ``cancellable`` logger. Does not block. Does
        nothing if the token is already cancelled.

        Raises:
            TypeError: ``delay`` is not a number.
            ValueError: ``delay`` is negative or NaN, or the source is closed.
        """
        seconds = check_seconds(delay, "delay")
        token = self._token
        with token._lock:  # type: ignore[union-attr]
            if token._closed:
                raise ValueError("cancel_after() called on a closed CancellationTokenSource")
            if token._cancelled:
                return
            old, token._deadline = token._deadline, None
            if seconds is not None and seconds > 0:
                token._deadline = _timer.TIMER.arm(_timer.now() + seconds, token._deadline_passed)
        if old is not None:
            _timer.TIMER.disarm(old)
        if seconds == 0:
            token._deadline_passed()

    def close(self) -> None:
        """Detach the source from its parents and disarm its deadline.

        The token is not cancelled, and can still be cancelled with `cancel()`.
        Idempotent; never blocks on callbacks.
        """
        token = self._token
        with token._lock:  # type: ignore[union-attr]
            if token._closed:
                return
            token._closed = True
            links, token._links = token._links, None
            deadline, token._deadline = token._deadline, None
        if deadline is not None:
            _timer.TIMER.disarm(deadline)
        if links:
            token._detach(links)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        token = self._token
        if token._cancelled:
            state = f"cancelled reason={token._reason!r}"
        elif token._closed:
            state = "closed"
        else:
            state = "active"
        return f"<CancellationTokenSource {state}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "cannot pickle a CancellationTokenSource: it is tied to threads of this process"
        )


# -- the ambient token ---------------------------------------------------------


class _TokenProvider(Protocol):
    """Something that stands for a token until one is needed (an executor task)."""

    @property
    def token(self) -> CancellationToken: ...


_ambient: ContextVar[CancellationToken | _TokenProvider] = ContextVar(
    "cancellable.current_token", default=_NONE
)


def current_token() -> CancellationToken:
    """Return the ambient token of this thread's context.

    Inside a task of `CancellableThreadPoolExecutor` it is the task's token;
    inside a `use_token` block, the token given; otherwise
    `CancellationToken.NONE`. Never blocks.
    """
    value = _ambient.get()
    if value.__class__ is CancellationToken:
        return value
    return cast(_TokenProvider, value).token


@contextmanager
def use_token(token: CancellationToken) -> Iterator[CancellationToken]:
    """Make ``token`` the ambient token (`current_token()`) for a block.

    ``use_token(CancellationToken.NONE)`` shields cleanup code from
    cancellation. Yields the token.

    Raises:
        TypeError: ``token`` is not a `CancellationToken`.
    """
    if token.__class__ is not CancellationToken:
        raise TypeError(f"token must be a CancellationToken, got {type(token).__name__!r}")
    reset = _ambient.set(token)
    try:
        yield token
    finally:
        _ambient.reset(reset)


current_token.__module__ = "cancellable"
use_token.__module__ = "cancellable"
