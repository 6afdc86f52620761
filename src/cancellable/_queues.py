"""Token-aware `queue.Queue`, `queue.LifoQueue` and `queue.PriorityQueue`.

The classes subclass the stdlib ones and keep their storage hooks (``_init``,
``_qsize``, ``_put``, ``_get``), so subclasses written for the stdlib queues
work unchanged. Their three conditions are `Condition` objects, so ``get``,
``put`` and ``join`` can wait with a token: a cancelled ``get`` takes no item,
a cancelled ``put`` adds none, and a notify handed to a waiter that was being
cancelled is passed on to the next one, so no item or free slot is lost.
"""

from __future__ import annotations

import queue
from _thread import allocate_lock
from time import monotonic
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

from ._primitives import Condition, _check_token, _enter_wait
from ._token import CancellationToken

__all__ = ["LifoQueue", "PriorityQueue", "Queue"]

_T = TypeVar("_T")
_PT = TypeVar("_PT", bound="SupportsRichComparison")


class Queue(queue.Queue[_T]):
    """`queue.Queue` whose ``get``, ``put`` and ``join`` take a token.

    Without a token (and with the ambient token `CancellationToken.NONE`) it
    behaves exactly as `queue.Queue`, ``Full`` and ``Empty`` included.
    """

    __module__ = "cancellable"

    not_empty: Condition
    not_full: Condition
    all_tasks_done: Condition

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
            queue.Full: No room (non-blocking, or after the timeout).
            ValueError: ``timeout`` is negative.
        """
        if timeout is not None or token is not None:
            _enter_wait(timeout, token, block)
        with self.not_full:
            if self.maxsize > 0:
                if not block:
                    if self._qsize() >= self.maxsize:
                        raise queue.Full
                elif timeout is None:
                    while self._qsize() >= self.maxsize:
                        self.not_full.wait(token=token)
                elif timeout < 0:
                    raise ValueError("'timeout' must be a non-negative number")
                else:
                    endtime = monotonic() + timeout
                    while self._qsize() >= self.maxsize:
                        remaining = endtime - monotonic()
                        if remaining <= 0.0:
                            raise queue.Full
                        self.not_full.wait(remaining, token=token)
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
            queue.Empty: No item (non-blocking, or after the timeout).
            ValueError: ``timeout`` is negative.
        """
        if timeout is not None or token is not None:
            _enter_wait(timeout, token, block)
        with self.not_empty:
            if not block:
                if not self._qsize():
                    raise queue.Empty
            elif timeout is None:
                while not self._qsize():
                    self.not_empty.wait(token=token)
            elif timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            else:
                endtime = monotonic() + timeout
                while not self._qsize():
                    remaining = endtime - monotonic()
                    if remaining <= 0.0:
                        raise queue.Empty
                    self.not_empty.wait(remaining, token=token)
            item = self._get()
            self.not_full.notify()
            return item

    def join(self, *, token: CancellationToken | None = None) -> None:
        """Block until every item put has been marked done with ``task_done()``.

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


class LifoQueue(Queue[_T], queue.LifoQueue[_T]):
    """`queue.LifoQueue` (last in, first out) whose blocking calls take a token."""

    __module__ = "cancellable"


class PriorityQueue(Queue[_PT], queue.PriorityQueue[_PT]):
    """`queue.PriorityQueue` (lowest first) whose blocking calls take a token."""

    __module__ = "cancellable"
