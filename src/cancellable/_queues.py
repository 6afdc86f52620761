"""Token-aware `queue.Queue`, `queue.LifoQueue` and `queue.PriorityQueue`.

The classes subclass the stdlib ones and keep their storage hooks (``_init``,
``_qsize``, ``_put``, ``_get``), so subclasses written for the stdlib queues
work unchanged. Their three conditions are `Condition` objects, so ``get``,
``put`` and ``join`` can wait with a token: a cancelled ``get`` takes no item,
a cancelled ``put`` adds none, and a notify handed to a waiter that was being
cancelled is passed on to the next one, so no item or free slot is lost.

On Python 3.13 and later the queues also have the stdlib's ``shutdown()`` and
``is_shutdown``, with the stdlib's meaning; with a token, a cancelled token
wins over `queue.ShutDown` once the call has blocked (see `Queue.shutdown`).
On 3.11 and 3.12 they have neither, as the stdlib queues there.
"""

from __future__ import annotations

import queue
import sys
from _thread import allocate_lock
from time import monotonic
from typing import TYPE_CHECKING, NoReturn, TypeVar

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

from ._primitives import Condition, _check_token, _enter_wait
from ._token import CancellationToken, current_token

__all__ = ["LifoQueue", "PriorityQueue", "Queue"]

_T = TypeVar("_T")
_PT = TypeVar("_PT", bound="SupportsRichComparison")

# Whether the stdlib queues have shutdown() (3.13 and later): only then do ours.
_HAS_SHUTDOWN = sys.version_info >= (3, 13)


def _raise_shut_down(token: CancellationToken | None) -> NoReturn:
    """Raise for a call that blocked and then found the queue shut down.

    A cancelled token wins: the call raises `OperationCancelledError`, since
    the caller asked for exactly that and nothing is lost (the queue stays
    shut down for the next call). Otherwise `queue.ShutDown`.
    """
    (current_token() if token is None else token).raise_if_cancellation_requested()
    raise queue.ShutDown  # type: ignore[attr-defined,unused-ignore]


class Queue(queue.Queue[_T]):
    """`queue.Queue` whose ``get``, ``put`` and ``join`` take a token.

    Without a token (and with the ambient token `CancellationToken.NONE`) it
    behaves exactly as `queue.Queue`, ``Full`` and ``Empty`` included, and on
    Python 3.13 and later ``shutdown()``, ``is_shutdown`` and ``ShutDown`` too.
    """

    __module__ = "cancellable"

    not_empty: Condition
    not_full: Condition
    all_tasks_done: Condition
    # Set (and read) only on 3.13 and later, where the stdlib queue has it.
    is_shutdown: bool

    def __init__(self, maxsize: int = 0) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int | float):
            raise TypeError(f"maxsize must be an integer, got {type(maxsize).__name__!r}")
        self.maxsize = maxsize
        self._init(maxsize)
        self.mutex = allocate_lock()
        self.not_empty = Condition(self.mutex)
        self.not_full = Condition(self.mutex)
        self.all_tasks_done = Condition(self.mutex)
        self.unfinished_tasks = 0
        if _HAS_SHUTDOWN:
            self.is_shutdown = False

    def put(
        self,
        item: _T,
        block: bool = True,
        timeout: float | None = None,
        *,
        token: CancellationToken | None = None,
    ) -> None:
        """Put ``item`` in the queue, blocking while it is full.

        Args:
            item: What to add.
            block: False to raise `queue.Full` at once instead of blocking.
            timeout: Seconds to block at most; None waits without limit.
            token: Cancels the wait; None means `current_token()`, read only
                when the queue is full.

        Raises:
            OperationCancelledError: The token was cancelled before there was
                room (or an explicit token already was); the item is not added.
                Also when the queue was shut down while this call blocked and
                the token is cancelled by then.
            queue.Full: No room (non-blocking, or after the timeout).
            queue.ShutDown: (3.13+) The queue is shut down, or was shut down
                while this call blocked; the item is not added.
            ValueError: ``timeout`` is negative.
        """
        if timeout is not None or token is not None:
            _enter_wait(timeout, token, block)
        with self.not_full:
            if _HAS_SHUTDOWN and self.is_shutdown:
                raise queue.ShutDown  # type: ignore[attr-defined,unused-ignore]
            if self.maxsize > 0:
                if not block:
                    if self._qsize() >= self.maxsize:
                        raise queue.Full
                elif timeout is None:
                    while self._qsize() >= self.maxsize:
                        self.not_full.wait(token=token)
                        if _HAS_SHUTDOWN and self.is_shutdown:
                            _raise_shut_down(token)
                elif timeout < 0:
                    raise ValueError("'timeout' must be a non-negative number")
                else:
                    endtime = monotonic() + timeout
                    while self._qsize() >= self.maxsize:
                        remaining = endtime - monotonic()
                        if remaining <= 0.0:
                            raise queue.Full
                        self.not_full.wait(remaining, token=token)
                        if _HAS_SHUTDOWN and self.is_shutdown:
                            _raise_shut_down(token)
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()

    def get(
        self,
        block: bool = True,
        timeout: float | None = None,
        *,
        token: CancellationToken | None = None,
    ) -> _T:
        """Remove and return an item, blocking while the queue is empty.

        Args:
            block: False to raise `queue.Empty` at once instead of blocking.
            timeout: Seconds to block at most; None waits without limit.
            token: Cancels the wait; None means `current_token()`, read only
                when the queue is empty.

        Returns:
            The item.

        Raises:
            OperationCancelledError: The token was cancelled before an item
                was taken (or an explicit token already was); no item is lost.
                Also when the queue was shut down while this call blocked and
                the token is cancelled by then.
            queue.Empty: No item (non-blocking, or after the timeout).
            queue.ShutDown: (3.13+) The queue is shut down and empty, or was
                shut down while this call blocked and no item is left.
            ValueError: ``timeout`` is negative.
        """
        if timeout is not None or token is not None:
            _enter_wait(timeout, token, block)
        with self.not_empty:
            if _HAS_SHUTDOWN and self.is_shutdown and not self._qsize():
                raise queue.ShutDown  # type: ignore[attr-defined,unused-ignore]
            if not block:
                if not self._qsize():
                    raise queue.Empty
            elif timeout is None:
                while not self._qsize():
                    self.not_empty.wait(token=token)
                    if _HAS_SHUTDOWN and self.is_shutdown and not self._qsize():
                        _raise_shut_down(token)
            elif timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            else:
                endtime = monotonic() + timeout
                while not self._qsize():
                    remaining = endtime - monotonic()
                    if remaining <= 0.0:
                        raise queue.Empty
                    self.not_empty.wait(remaining, token=token)
                    if _HAS_SHUTDOWN and self.is_shutdown and not self._qsize():
                        _raise_shut_down(token)
            item = self._get()
            self.not_full.notify()
            return item

    def join(self, *, token: CancellationToken | None = None) -> None:
        """Block until every item put has been marked done with ``task_done()``.

        On 3.13+, ``shutdown(immediate=True)`` counts the items it discards as
        done, which releases ``join`` once every item taken was marked done;
        ``join`` never raises `queue.ShutDown`, as in the stdlib.

        Args:
            token: Cancels the wait; None means `current_token()`, read only
                when there are unfinished tasks.

        Raises:
            OperationCancelledError: The token was cancelled first (or an
                explicit token already was).
        """
        if token is not None:
            if token.__class__ is not CancellationToken:
                _check_token(token)
            if token._cancelled:
                token._raise_cancelled()
        with self.all_tasks_done:
            while self.unfinished_tasks:
                self.all_tasks_done.wait(token=token)

    if sys.version_info >= (3, 13):

        def shutdown(self, immediate: bool = False) -> None:
            """Shut the queue down: ``put`` raises `queue.ShutDown` from now on.

            ``get`` keeps returning the items left and raises `queue.ShutDown`
            once the queue is empty. With ``immediate`` true the items left are
            discarded first (each counted as done for ``join``), so ``get``
            raises at once. Every blocked ``get`` and ``put`` wakes to check
            again; ``join`` wakes when nothing is left unfinished. Calling it
            again is allowed (``immediate=True`` after a plain shutdown still
            discards). Python 3.13 and later only, as in the stdlib.

            A call blocked with a token that finds the queue shut down raises
            `OperationCancelledError` instead of `queue.ShutDown` if its token
            is cancelled by then: the cancel wins, whichever came first. An
            item or free slot already handed to it still wins over both.

            Does not block beyond taking the queue's lock; takes no token.
            """
            with self.mutex:
                self.is_shutdown = True
                try:
                    if immediate:
                        drained = 0
                        try:
                            while self._qsize():
                                self._get()
                                drained += 1
                        finally:
                            # Only the items still counted can be discarded ones:
                            # never below zero (task_done() may have run ahead).
                            self.unfinished_tasks = max(0, self.unfinished_tasks - drained)
                            self.all_tasks_done.notify_all()
                finally:
                    # Even if a storage hook or Ctrl-C interrupted the drain, no
                    # blocked get or put may sleep through the shutdown.
                    self.not_empty.notify_all()
                    self.not_full.notify_all()


class LifoQueue(Queue[_T], queue.LifoQueue[_T]):
    """`queue.LifoQueue` (last in, first out) whose blocking calls take a token."""

    __module__ = "cancellable"


class PriorityQueue(Queue[_PT], queue.PriorityQueue[_PT]):
    """`queue.PriorityQueue` (lowest first) whose blocking calls take a token."""

    __module__ = "cancellable"
