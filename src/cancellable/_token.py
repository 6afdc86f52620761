"""Cancellation token sources, tokens and callback registrations.

A `CancellationToken` holds all the state; its `CancellationTokenSource` is
the handle that may cancel it. Each token keeps its callback registrations in
a dict used as an ordered set, so registering and unregistering are O(1) and
cancelling pops them latest first, without the token's lock: once a token is
cancelled its dicts only shrink, and every remover takes from them with one
atomic pop (relying on the GIL; see `_cancel_steps`).

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
run outside every lock. So the children of one parent made with that parent
alone may share locks (the parent's ``_family``): siblings never take each
other's, and a child per request then costs no lock object of its own. A
submit token used by one pool task holds that task in its ``_solo`` slot
rather than in a dict. Nothing recurses along links: cancelling, and making
parents hold a child strongly or weakly, walk explicit work lists, so a chain
of any depth takes no stack. Those walks are written to be resumed after a
`KeyboardInterrupt` lands in them (see "finishing what an interrupt broke
off" below).

The rest of the package uses the small internal API at the end of this
module (`resolve`, `raise_cancelled`, `is_none`, `ambient_is_none`,
`ambient_or_none`) rather than the token's fields.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
import weakref
from _thread import LockType, allocate_lock
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from operator import attrgetter
from threading import TIMEOUT_MAX, get_ident
from types import TracebackType
from typing import (
    Any,
    Final,
    NamedTuple,
    NoReturn,
    Protocol,
    Self,
    TypeVarTuple,
    Unpack,
    cast,
    final,
)

from . import _timer
from ._checks import check_callable, check_seconds, check_token
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


def _log_callback_errors(errors: Sequence[BaseException]) -> None:
    """Log errors from callbacks of a cancel that has no caller to raise them to."""
    for error in errors:
        _log.error("error in a cancellation callback", exc_info=error)


def _split_errors(
    errors: list[BaseException],
) -> tuple[list[Exception], BaseException | None]:
    """Separate the ordinary errors from the first one that must propagate as itself.

    A `KeyboardInterrupt`, `SystemExit` or any other `BaseException` that is
    not an `Exception` is never wrapped in a group nor logged away.
    """
    ordinary: list[Exception] = []
    fatal: BaseException | None = None
    for error in errors:
        if isinstance(error, Exception):
            ordinary.append(error)
        elif fatal is None:
            fatal = error
        else:
            _log.error("another interrupt during a cancel", exc_info=error)
    return ordinary, fatal


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


class _Watcher(Protocol):
    """What `CancellationToken._watch` takes: an object shaped like a registration."""

    _token: CancellationToken | None
    _fn: Callable[..., object] | None
    _args: tuple[object, ...]

    def __hash__(self) -> int: ...


class _SoloWatcher(Protocol):
    """What `CancellationToken._watch_solo` takes: ``_fn(*_args)`` runs on cancel."""

    _token: CancellationToken | None

    @property
    def _args(self) -> tuple[object, ...]: ...

    def _fn(self) -> object: ...


_Registration = CancellationTokenRegistration | _Link


# -- finishing what an interrupt broke off ----------------------------------------
#
# A `KeyboardInterrupt` can land between any two lines of Python code on the
# main thread. The operations below that change more than one object (cancel,
# close, link, and register/unregister on a linked token) are therefore
# written as *steps* that can be run again after an interruption and finish
# the job without repeating what was done: every state change is one
# statement (so no line boundary falls inside it) and the work still to do is
# kept in lists that outlive the interrupted call. `_complete` runs a step
# until it returns, collecting what was raised meanwhile; its caller re-raises
# it once the job is done. What remains is documented in the README: a second
# interrupt landing inside `_complete`'s own handler, and a signal landing
# just after a C call returns inside the one statement that uses its result.


def _complete(errors: list[BaseException], step: Callable[..., object], *args: object) -> None:
    """Run ``step(*args)`` again after every exception until it returns; collect them."""
    while True:
        try:
            step(*args)
        except BaseException as error:
            errors.append(error)
            continue
        return


def _until_done(step: Callable[..., object], *args: object) -> None:
    """Run a resumable step to its end, then re-raise the first exception that landed in it."""
    first: BaseException | None = None
    while True:
        try:
            step(*args)
        except BaseException as error:
            if first is None:
                first = error
            continue
        break
    if first is not None:
        raise first


def _each_link(links: _Link | tuple[_Link, ...]) -> tuple[_Link, ...]:
    """The links of a token's ``_links`` field: one link is kept without a tuple."""
    return (links,) if links.__class__ is _Link else links  # type: ignore[return-value]


def _holds_wrongly(token: CancellationToken) -> bool:
    """Whether a parent holds ``token`` otherwise than its count says (its lock held)."""
    links = token._links
    if links is None or token._cancelled or token._closed:
        return False
    want = token._nstrong > 0
    if links.__class__ is _Link:
        return (links.strong is not None) is not want
    return any((link.strong is not None) is not want for link in links)  # type: ignore[union-attr]


def _fix_holds(token: CancellationToken) -> list[CancellationToken]:
    """Make ``token``'s parents hold it as its count says (its lock held).

    Returns the parents whose own parents must now change how they hold them.
    Idempotent: run again, it changes nothing and returns the same parents.
    A cancelled or closed token is being detached: nothing to hold then.
    """
    links = token._links
    if links is None or token._cancelled or token._closed:
        return []
    want = token._nstrong > 0
    held = token if want else None
    delta = 1 if want else -1
    stale = []
    for link in _each_link(links):
        parent = link.parent
        with parent._lock:  # type: ignore[union-attr]
            if (link.strong is not None) is not want:
                link.strong, parent._nstrong = held, parent._nstrong + delta
            if _holds_wrongly(parent):
                stale.append(parent)
    return stale


def _sync_holds(stack: list[CancellationToken], held: CancellationToken | None) -> None:
    """Fix the holds of every token on ``stack`` and of their ancestors, with no recursion.

    ``held`` is a token whose lock the caller holds. Resumable: the stack keeps
    what is left to do.
    """
    while stack:
        token = stack[-1]
        if token is held:
            stack[-1:] = _fix_holds(token)
        else:
            with token._lock:  # type: ignore[union-attr]
                stack[-1:] = _fix_holds(token)


def _detach_link(link: _Link) -> CancellationToken | None:
    """Remove a link from its parent; return the parent if its own holds must change."""
    parent = link.parent
    with parent._lock:  # type: ignore[union-attr]
        regs = parent._regs
        if regs is not None:
            regs.pop(link, None)
            if not regs:
                parent._regs = None
        if link.strong is not None:
            link.strong, parent._nstrong = None, parent._nstrong - 1
        if _holds_wrongly(parent):
            return parent
    return None


def _add_linked(
    token: CancellationToken, reg: CancellationTokenRegistration, stack: list[CancellationToken]
) -> None:
    # A resumable register on a linked token, its lock held.
    regs = token._regs
    if regs is None:
        regs = token._regs = {}
    regs[reg] = None
    if reg._token is not token:
        reg._token, token._nstrong = token, token._nstrong + 1
    _sync_holds(stack, token)


def _remove_linked(
    token: CancellationToken, reg: CancellationTokenRegistration, stack: list[CancellationToken]
) -> None:
    # A resumable unregister on a linked token, its lock held.
    if reg._token is token:
        reg._token, token._nstrong = None, token._nstrong - 1
    regs = token._regs
    if regs is not None:
        regs.pop(reg, None)
        if not regs:
            token._regs = None
    _sync_holds(stack, token)


@final
class _CancelRun:
    """The work of one cancel: the tokens it still has to reach, the callback it took."""

    __slots__ = ("errors", "reason", "thread", "todo", "work")

    def __init__(self, root: CancellationToken, reason: object) -> None:
        self.reason = reason
        self.thread = get_ident()
        # A stack of tokens to cancel, links whose child to cancel, and
        # 1-tuples naming tokens whose parents must re-check their holds.
        self.work: list[CancellationToken | _Link | tuple[CancellationToken]] = [root]
        # The registration taken from a token and not yet started (at most one).
        self.todo: list[_Registration | _SoloWatcher] = []
        self.errors: list[BaseException] = []


def _cancel_steps(run: _CancelRun) -> None:
    """Cancel every token on the work list, depth first; resumable after any exception.

    A callback's own exception comes out of here too; the caller records it and
    calls again, which goes on with the next callback.
    """
    work = run.work
    todo = run.todo
    while True:
        if todo:
            item = todo[-1]
            if item.__class__ is _Link:
                work.append(todo.pop())  # type: ignore[arg-type]
            else:
                owner = item._token  # type: ignore[union-attr]
                if owner is not None:
                    # The interrupt may have landed before the loop named it:
                    # name it now, so that its fields are cleared once it ran.
                    owner._running = item
                # Taking it from the list and starting it is one statement:
                # nothing lands in between, so it runs exactly once.
                todo.pop()._fn(*item._args)  # type: ignore[union-attr,misc]
            continue
        if not work:
            return
        top = work[-1]
        if top.__class__ is _Link:
            child = top.strong or top()
            if child is None:
                work.pop()
                continue
            work[-1] = top = child  # and on with it at once
        elif top.__class__ is tuple:
            parent = top[0]
            with parent._lock:  # type: ignore[union-attr]
                work[-1:] = [(stale,) for stale in _fix_holds(parent)]
            continue
        token: CancellationToken = top  # type: ignore[assignment]
        lock = token._lock
        if token._canceller is not run:
            with lock:  # type: ignore[union-attr]
                if token._cancelled:  # cancelled by another call (or this one, finished)
                    work.pop()
                    continue
                token._cancelled_at = time.monotonic()
                token._reason, token._cancelled, token._canceller = run.reason, True, run
                links = token._links
                if links.__class__ is _Link and links.parent._cancelled:
                    token._links = None  # nothing to detach: see below
        deadline = token._deadline
        if deadline is not None:
            _timer.TIMER.disarm(deadline)
            token._deadline = None
        links = token._links
        if links is not None:
            if links.__class__ is _Link:
                # A cancelled parent has taken the link from its callbacks
                # (it is how this cancel came here) or will, and keeps no
                # count of its children any more: nothing to detach then.
                if not links.parent._cancelled:
                    stale = _detach_link(links)
                    if stale is not None:
                        work.append((stale,))
            else:
                for link in links:  # type: ignore[union-attr]
                    stale = _detach_link(link)
                    if stale is not None:
                        work.append((stale,))
            # Under the lock: an unregister that began while the token still
            # had links (`_remove_linked`) is over before the loop below.
            with lock:  # type: ignore[union-attr]
                token._links = None
            if work[-1] is not token:
                continue  # parents whose holds must change go first
        if token._solo is not None:
            with lock:  # type: ignore[union-attr]
                # Taken and put on the list in one statement; the loop's top
                # runs it, then comes back here for the rest.
                token._solo = todo.append(token._solo)  # type: ignore[func-returns-value]
            continue
        # The callbacks of this token, latest first (its watchers before
        # them), until one is a link (whose child goes on the work list first)
        # or none is left.
        #
        # No lock per callback: once cancelled, nothing is added to the
        # token's watchers or registrations (`register`, `_watch` and
        # `_attach` check the flag under its lock), so both dicts only shrink
        # and reading them once is enough; and every other remover takes from
        # them with one `dict.pop`, which is atomic under the GIL, as this
        # loop's `popitem` is: each entry goes to exactly one of them (the
        # one remover that does more, `_remove_linked`, runs only while the
        # token has links, and the lock above ends that). A registration
        # taken here keeps ``_token`` until it has run, which is how
        # `_unregister` on another thread knows to wait for it.
        regs = token._regs
        pending: dict[Any, None] | None = token._watchers or regs
        append = todo.append
        take = todo.pop
        previous: Any = token._running
        if previous.__class__ is _Link:
            previous = None  # a link has nothing to clear
        while True:
            if previous is not None:
                # It ran. Its ``_token`` first: `_unregister` checks it after
                # queueing its waiter, this loop checks for waiters after it.
                previous._token, previous._fn, previous._args = None, None, ()
            if token._unreg_waiters:
                with lock:  # type: ignore[union-attr]
                    waiters = token._unreg_waiters
                    while waiters:
                        waiters.pop().release()
            if not pending:
                # The watchers are done (or there were none): the registrations.
                pending = regs
                if not pending:
                    with lock:  # type: ignore[union-attr]
                        last = token._unreg_waiters
                        while last:
                            last.pop().release()
                        token._watchers = token._unreg_waiters = None
                        token._regs, token._running, token._canceller = None, None, None
                    break
            try:
                # Taken and put on the list in one statement.
                append(previous := pending.popitem()[0])
            except KeyError:  # another thread took the last one meanwhile
                continue
            token._running = previous
            if previous.__class__ is _Link:
                work.append(take())  # type: ignore[arg-type]
                break
            # Taking it from the list and starting it is one statement:
            # nothing lands in between, so it runs exactly once.
            take()._fn(*previous._args)  # type: ignore[union-attr,misc]
        if token._canceller is None:
            work.pop()


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
        "_cancelled_at",
        "_canceller",
        "_closed",
        "_deadline",
        "_family",
        "_links",
        "_lock",
        "_nstrong",
        "_reason",
        "_regs",
        "_running",
        "_solo",
        "_unreg_waiters",
        "_watchers",
    )
    __module__ = "cancellable"

    NONE: Final[CancellationToken]  # type: ignore[misc]

    _cancelled: bool
    # time.monotonic() when it was cancelled (for the pool's laggard report).
    _cancelled_at: float
    _reason: object
    # Its own lock, or one of the locks its parent shares among its
    # one-parent children (`_family`); None only for `NONE`.
    _lock: LockType | None
    # The locks this token shares among its one-parent children
    # (`_family_lock`): a lock is one object fewer for the collector to
    # track per child (a child per request, say). Siblings never hold each
    # other's lock, and a token never takes a lock below its own (locks are
    # only taken upward), so sharing them among siblings cannot deadlock;
    # it only serialises the short locked sections of siblings that drew
    # the same lock. Several locks, not one: one lock for every child made
    # siblings busy on several threads queue behind it (a TaskGroup with a
    # limit ran 1.7 times as slowly).
    _family: list[LockType] | None
    _regs: dict[_Registration, None] | None
    # While the token has parents (``_links``): its registrations plus its
    # strongly held children, the reasons for the parents to hold it strongly.
    # Not kept up once it has none (a root, or after close or cancel).
    _nstrong: int
    # One link as itself (the common case: no tuple to allocate), several
    # as a tuple; see `_each_link`. Once set, it goes back to None only
    # under the token's lock (cancel, close): an unregister that saw links
    # (`_remove_linked`, which is not one atomic pop) is then over before a
    # cancel takes the callbacks without the lock.
    _links: _Link | tuple[_Link, ...] | None
    _deadline: _timer.Entry | None
    _closed: bool
    _running: _Registration | None
    _canceller: _CancelRun | None
    _unreg_waiters: list[LockType] | None
    # The library's own hooks (`_watch`): run before every registration, so
    # its bookkeeping is final before user callbacks of this token run.
    _watchers: dict[_Watcher, None] | None
    # One more such hook kept without a dict (`_watch_solo`): the pending
    # pool task of a token submitted once, the common case of a token per
    # request. Run before the other watchers.
    _solo: _SoloWatcher | None

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
        reg._token = None
        reg._fn = callback
        reg._args = args
        lock = self._lock
        if lock is None:
            return reg
        try:
            with lock:
                if not self._cancelled:
                    regs = self._regs
                    if regs is None:
                        regs = self._regs = {}
                    if self._links is None:
                        # One dict store commits it; the field only names the token.
                        regs[reg] = None
                        reg._token = self
                        return reg
                    _until_done(_add_linked, self, reg, [self])
                    return reg
        except BaseException:
            # A signal landed as the lock was let go, after the commit: the
            # caller never gets the registration to undo it, so undo it here.
            if reg._token is self:
                self._unregister(reg)
            raise
        callback(*args)
        reg._fn = None
        reg._args = ()
        return reg

    def _watch(self, watcher: _Watcher) -> bool:
        """Add one of the library's own hooks: ``watcher._fn(*watcher._args)`` runs on cancel.

        For an owner that itself keeps this token alive (a pool's group of
        tasks, a pending task): no registration object, the parents are not
        made to hold the token strongly, and watchers run before every
        registration of the token, so user callbacks find the library's
        bookkeeping done. Returns False, adding nothing, if the token is
        already cancelled or is `CancellationToken.NONE`. Remove it with
        `_unwatch`.
        """
        lock = self._lock
        if lock is None:
            return False
        with lock:
            if self._cancelled:
                return False
            # The owner's record first: if a signal lands after it, the
            # owner can still _unwatch (which is idempotent).
            watcher._token = self
            watchers = self._watchers
            if watchers is None:
                watchers = self._watchers = {}
            watchers[watcher] = None
            return True

    def _watch_solo(self, watcher: _SoloWatcher) -> bool:
        """Like `_watch`, in the token's one slot for a hook kept without a dict.

        Returns False, adding nothing, if the token is cancelled, is
        `CancellationToken.NONE`, or already has a solo watcher. Remove it
        with `_unwatch_solo`.
        """
        lock = self._lock
        if lock is None:
            return False
        with lock:
            if self._cancelled or self._solo is not None:
                return False
            watcher._token = self
            self._solo = watcher
            return True

    def _unwatch_solo(self, watcher: _SoloWatcher) -> None:
        """Remove a watcher added by `_watch_solo`, unless a cancel already took it.

        No lock, never waits. Relies on the GIL: the slot only ever goes from
        None to a watcher under the lock, and back to None here or in the
        cancel (which takes it under the lock); so between this test and this
        store nobody else can put a watcher there, and two stores of None
        agree. (A signal landing between the two statements leaves the
        watcher in the slot, where it costs nothing: a cancel that runs it
        finds its task no longer pending.)
        """
        if self._solo is watcher:
            self._solo = None
        watcher._token = None

    def _unwatch(self, watcher: _Watcher) -> None:
        """Remove a watcher added by `_watch`, unless its cancel already took it.

        Never waits for the watcher to finish running.
        """
        with self._lock:  # type: ignore[union-attr]
            watchers = self._watchers
            if watchers is not None and watchers.pop(watcher, False) is None:
                watcher._token = None
                if not watchers:
                    self._watchers = None

    def _unregister(self, reg: CancellationTokenRegistration) -> bool:
        waiter = None
        with self._lock:  # type: ignore[union-attr]
            regs = self._regs
            if self._links is None:
                # One atomic pop (GIL): a cancel on another thread takes its
                # callbacks with `popitem` without this lock.
                if regs is not None and regs.pop(reg, False) is None:
                    reg._token = None
                    if not regs:
                        # A dict never shrinks by deletion: drop the emptied one.
                        self._regs = None
                    return True
            elif regs is not None and reg in regs:
                # Linked, so not cancelling yet: the lock keeps the dict still.
                _until_done(_remove_linked, self, reg, [self])
                return True
            run = self._canceller
            if reg._token is self and run is not None and run.thread != get_ident():
                # Taken by that cancel and not finished: wait until it ran.
                waiter = allocate_lock()
                waiter.acquire()
                if self._unreg_waiters is None:
                    self._unreg_waiters = [waiter]
                else:
                    self._unreg_waiters.append(waiter)
        # Checked again after queueing: the cancel clears ``_token`` once the
        # callback ran, then looks for waiters (each step atomic under the
        # GIL), so either it sees this waiter or this sees the field cleared
        # and need not wait for the next callback to be released.
        if waiter is not None and reg._token is self:
            waiter.acquire()  # released once the running callback returns
        return False

    # -- waiting ---------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the token is cancelled or ``timeout`` seconds pass.

        Args:
            timeout: Seconds to wait at most; ``None`` (or infinity) waits
                without limit, and so does any value beyond
                `threading.TIMEOUT_MAX` in practice. On
                `CancellationToken.NONE` with no timeout this blocks forever.

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
        reg = None
        woke = False
        try:
            reg = self.register(waiter.release)
            woke = waiter.acquire(True, -1 if seconds is None else min(seconds, TIMEOUT_MAX))
        finally:
            if not woke and reg is not None:
                reg.unregister()
        return woke or self._cancelled

    def wait_async(self) -> Coroutine[Any, Any, bool]:
        """Wait in asyncio code, without blocking the loop, until the token is cancelled.

        ``await token.wait_async()`` returns True once the token is cancelled.
        No thread per waiter: one registration, removed if the awaiting task
        is cancelled. On `CancellationToken.NONE` it waits until the awaiting
        task is cancelled.
        """
        from ._asyncio import wait_async  # noqa: PLC0415 (asyncio stays out of import time)

        return wait_async(self)

    # -- cancelling (for the source and the library) ---------------------

    def _cancel(self, reason: object) -> list[BaseException] | None:
        """Cancel the token, run its callbacks and cancel its linked children.

        Returns what the callbacks raised (children's included) and any
        `BaseException` that landed meanwhile, or None; every callback ran.
        A concurrent or repeated call returns None at once. Iterative: a chain
        of linked children of any depth takes no stack.
        """
        if self._lock is None or self._cancelled:
            return None
        run = _CancelRun(self, reason)
        _complete(run.errors, _cancel_steps, run)
        return run.errors or None

    def _cancel_and_log(self, reason: object) -> None:
        """Cancel for the library itself: callback errors go to the logger.

        A `KeyboardInterrupt`, `SystemExit` or other non-`Exception` raised
        meanwhile is re-raised as itself once every callback ran.
        """
        errors = self._cancel(reason)
        if errors:
            ordinary, fatal = _split_errors(errors)
            _log_callback_errors(ordinary)
            if fatal is not None:
                raise fatal

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


def _new_token(lock: LockType | None = None) -> CancellationToken:
    """A new token, with its own lock or with ``lock`` (one of its parent's `_family`)."""
    token: CancellationToken = _new(CancellationToken)
    token._cancelled = False
    token._reason = None
    token._lock = allocate_lock() if lock is None else lock
    token._family = None
    token._regs = None
    token._nstrong = 0
    token._links = None
    token._deadline = None
    token._closed = False
    token._running = None
    token._canceller = None
    token._unreg_waiters = None
    token._watchers = None
    token._solo = None
    token._cancelled_at = 0.0
    return token


# How many locks a parent shares among its one-parent children, at most.
_FAMILY_LOCKS: Final = 16
# Deals the family locks out in turn (one C call: atomic under the GIL).
_dealer = itertools.count()


def _family_lock(parent: CancellationToken) -> LockType:
    """A lock for a new one-parent child of ``parent``, shared with some siblings.

    The first children get new locks, later ones share those (in turn), so a
    parent with a child per request keeps at most `_FAMILY_LOCKS` locks
    rather than one per child, and siblings used from several threads at
    once rarely wait for one another. Two children made at once may both
    add a lock, or share one: either way each token keeps the lock it got.
    """
    family = parent._family
    if family is None:
        family = parent._family = []
    if len(family) < _FAMILY_LOCKS:
        lock = allocate_lock()
        family.append(lock)
        return lock
    return family[next(_dealer) % _FAMILY_LOCKS]


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


def _attach(child: CancellationToken, links: list[_Link]) -> None:
    # Resumable: put the child's links into its parents, or cancel the child
    # if one of them was cancelled meanwhile.
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


def _link(child: CancellationToken, parents: tuple[object, ...]) -> None:
    """Link a new token to its parents, or cancel it if one already is.

    The one-parent path is not resumable, and need not be: the token is new,
    so if an interrupt lands in here nobody has it yet (the caller never gets
    it). All the parent can be left with is the weak link, which goes when the
    token is collected.
    """
    if len(parents) == 1:
        # One parent (a child of a long-lived token per request, say): no
        # lists, one link kept without a tuple.
        parent: CancellationToken = parents[0]  # type: ignore[assignment]
        if parent.__class__ is not CancellationToken:
            parent = _check_parent(parent)
        lock = parent._lock
        if lock is None:
            return
        if parent._cancelled:
            child._cancel_and_log(parent._reason)
            return
        link = _Link(child, _link_died)
        link.parent = parent
        link.strong = None
        child._links = link
        with lock:
            if not parent._cancelled:
                regs = parent._regs
                if regs is None:
                    regs = parent._regs = {}
                regs[link] = None
                return
            reason = parent._reason
        # Cancelled meanwhile: the cancel detaches the link (never added).
        child._cancel_and_log(reason)
        return
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
    _until_done(_attach, child, links)


def _close_steps(token: CancellationToken, stale: list[CancellationToken]) -> None:
    # Resumable: mark closed, disarm the deadline, detach from every parent.
    with token._lock:  # type: ignore[union-attr]
        token._closed = True
        deadline = token._deadline
        if deadline is not None:
            _timer.TIMER.disarm(deadline)
            token._deadline = None
    links = token._links
    if links is not None:
        if links.__class__ is _Link:
            parent = _detach_link(links)
            if parent is not None:
                stale.append(parent)
        else:
            for link in links:  # type: ignore[union-attr]
                parent = _detach_link(link)
                if parent is not None:
                    stale.append(parent)
        with token._lock:  # type: ignore[union-attr]
            token._links = None  # under the lock: see the field's comment
    if stale:
        _sync_holds(stale, None)


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
        seconds = None if timeout is None else check_seconds(timeout, "timeout")
        lock = None
        if len(parents) == 1:
            parent = parents[0]
            if parent.__class__ is CancellationToken and parent._lock is not None:
                family = parent._family
                # Once the parent has all its family locks, one in turn
                # (written out: this is every child's path).
                lock = (
                    family[next(_dealer) % _FAMILY_LOCKS]
                    if family is not None and len(family) == _FAMILY_LOCKS
                    else _family_lock(parent)
                )
        token = _new_token(lock)
        self._token = token
        if parents:
            _link(token, parents)
        if seconds is not None:
            self._arm(seconds)

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
        Linked children of any depth are reached without recursion.

        Raises:
            ExceptionGroup: One or more callbacks (of this token or of linked
                children) raised; every callback still ran. If this call is
                made while another exception is propagating, the errors are
                logged to the ``cancellable`` logger instead.
            BaseException: A callback raised `KeyboardInterrupt`,
                `SystemExit` or another non-`Exception` (or one landed while
                the callbacks ran): it is re-raised as itself after every
                other callback ran; their errors are then logged.
        """
        errors = self._token._cancel(reason)
        if errors:
            ordinary, fatal = _split_errors(errors)
            if fatal is not None:
                _log_callback_errors(ordinary)
                raise fatal
            if sys.exception() is not None:
                _log_callback_errors(ordinary)
                return
            raise ExceptionGroup("errors in cancellation callbacks", ordinary)

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
        self._arm(check_seconds(delay, "delay"))

    def _arm(self, seconds: float | None) -> None:
        token = self._token
        with token._lock:  # type: ignore[union-attr]
            if token._closed:
                raise ValueError("cancel_after() called on a closed CancellationTokenSource")
            if token._cancelled:
                return
            old = token._deadline
            if old is not None:
                _timer.TIMER.disarm(old)
                token._deadline = None
            if seconds is not None and seconds > 0:
                token._deadline = _timer.TIMER.arm(_timer.now() + seconds, token._deadline_passed)
        if seconds == 0:
            token._deadline_passed()

    def close(self) -> None:
        """Detach the source from its parents and disarm its deadline.

        The token is not cancelled, and can still be cancelled with `cancel()`.
        Idempotent; never blocks on callbacks.
        """
        token = self._token
        if token._closed and token._links is None and token._deadline is None:
            return
        _until_done(_close_steps, token, [])

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


# -- the internal token API (for the rest of the package) ------------------------


def resolve(token: CancellationToken | None) -> CancellationToken:
    """The token a ``token=`` argument stands for: itself, or the ambient token for None.

    The argument must have been checked (`_checks.check_token`). Never blocks.
    """
    return current_token() if token is None else token


def ambient_is_none() -> bool:
    """Whether the ambient token is `CancellationToken.NONE` (no token anywhere).

    Cheaper than ``current_token() is NONE``: it never makes an executor task's
    token exist just to look at it.
    """
    return _ambient.get() is _NONE


def ambient_or_none() -> CancellationToken | None:
    """The ambient token, or None when it is `CancellationToken.NONE`."""
    return None if _ambient.get() is _NONE else current_token()


def is_none(token: CancellationToken) -> bool:
    """Whether ``token`` can never be cancelled (it is `CancellationToken.NONE`)."""
    return token._lock is None


def raise_cancelled(token: CancellationToken) -> NoReturn:
    """Raise the `OperationCancelledError` of a cancelled ``token`` (its reason as cause)."""
    token._raise_cancelled()


class TokenStats(NamedTuple):
    """What a token holds, for tests and debugging (`_token_stats`)."""

    registrations: int
    """Callbacks (waiters included) registered and not yet run or removed."""
    children: int
    """Linked children whose links are still in this token."""
    strong_children: int
    """Those of them held strongly (they have registrations of their own)."""
    parents: int
    """Parents this token is still linked to."""
    held_strongly: bool
    """Whether its parents hold it strongly."""
    watchers: int = 0
    """The library's own hooks on it (a pool's pending tasks)."""


def _token_stats(token: CancellationToken) -> TokenStats:
    """Count what ``token`` holds, under its lock: a private hook for tests."""
    lock = token._lock
    if lock is None:
        return TokenStats(0, 0, 0, 0, False)
    with lock:
        regs = list(token._regs or ())
        links = _each_link(token._links) if token._links is not None else ()
        children = [reg for reg in regs if reg.__class__ is _Link]
        return TokenStats(
            registrations=len(regs) - len(children),
            children=len(children),
            strong_children=sum(link.strong is not None for link in children),
            parents=len(links),
            held_strongly=any(link.strong is not None for link in links),
            watchers=len(token._watchers or ()) + (token._solo is not None),
        )


@contextmanager
def use_token(token: CancellationToken) -> Iterator[CancellationToken]:
    """Make ``token`` the ambient token (`current_token()`) for a block.

    ``use_token(CancellationToken.NONE)`` shields cleanup code from
    cancellation. Yields the token.

    Raises:
        TypeError: ``token`` is not a `CancellationToken`.
    """
    if token.__class__ is not CancellationToken:
        check_token(token, "token", allow_none=False)
    reset = _ambient.set(token)
    try:
        yield token
    finally:
        _ambient.reset(reset)


current_token.__module__ = "cancellable"
use_token.__module__ = "cancellable"
