"""The asyncio bridge: `to_thread`, `cancel_on` and `CancellationToken.wait_async`.

asyncio is imported inside the functions, never at import time of the
package. No helper threads: a token callback (which runs on whichever thread
cancels) only hands the wake-up to the loop with ``call_soon_threadsafe``.

The other direction for plain asyncio calls: ``loop.run_in_executor(pool, fn)``
and `asyncio.to_thread` (with our pool as the loop's default executor) chain
the pool's future to an asyncio future with ``asyncio.futures._chain_future``,
which on the asyncio side's cancellation calls ``future.cancel()`` on ours.
For a running task that returns False and reaches nothing, so
`CancellableFuture` asks `note_done_callback` whether a done-callback it is
given is that chaining callback, and `cancel_from_asyncio` then cancels the
task's token instead (`CancellableFuture.cancel` still returns False, its
stdlib meaning). Futures nobody awaits from asyncio keep the stdlib
``cancel()``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

from ._executor import CancellableThreadPoolExecutor
from ._token import CancellationToken, current_token

if TYPE_CHECKING:
    import asyncio

    from ._task import CancellableFuture

__all__ = ["cancel_from_asyncio", "cancel_on", "note_done_callback", "to_thread", "wait_async"]

_R = TypeVar("_R")

#: The reason a token gets when the asyncio side awaiting its task was cancelled.
ASYNCIO_CANCELLED: Final = "the awaiting asyncio task was cancelled"

#: The message of the task cancel that `cancel_on` requests.
ASYNCIO_CANCEL_MESSAGE: Final = "cancel_on: the token was cancelled"

# The qualified name of asyncio's chaining done-callback (CPython 3.11-3.13).
_CHAIN_CALLBACK: Final = "_chain_future.<locals>._call_set_state"

_shared_lock = threading.Lock()
_shared_pool: CancellableThreadPoolExecutor | None = None


# -- hook (b): futures awaited from asyncio ----------------------------------------


def note_done_callback(future: CancellableFuture[Any], fn: Callable[..., object]) -> None:
    """Mark ``future`` as awaited from asyncio if ``fn`` is asyncio's chaining callback.

    Called by `CancellableFuture.add_done_callback`; costs one attribute read
    for other callbacks.
    """
    if getattr(fn, "__qualname__", None) == _CHAIN_CALLBACK and (
        getattr(fn, "__module__", None) == "asyncio.futures"
    ):
        future._awaited_from_asyncio = True


def cancel_from_asyncio(future: CancellableFuture[Any]) -> None:
    """Cancel the token of a running task whose asyncio side was cancelled.

    Called by `CancellableFuture.cancel` when it could not cancel a future
    marked by `note_done_callback`.
    """
    if not future.done():
        future.request_cancel(ASYNCIO_CANCELLED)


# -- hook (a): CancellationToken.wait_async ------------------------------------------


def _resolve(waiter: asyncio.Future[Any], value: object = True) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _wake_threadsafe(
    loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[Any], value: object = True
) -> None:
    # Runs on the cancelling (or finishing) thread, maybe the loop's own.
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits any more
        loop.call_soon_threadsafe(_resolve, waiter, value)


async def wait_async(token: CancellationToken) -> bool:
    """Wait, without blocking the event loop, until ``token`` is cancelled.

    One token registration per waiter, no thread; cancelling the awaiting task
    removes the registration. On `CancellationToken.NONE` this waits until the
    awaiting task is cancelled.

    Returns:
        True (once the token is cancelled).
    """
    import asyncio  # noqa: PLC0415 (kept out of the package's import time)

    if token.is_cancellation_requested:
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[bool] = loop.create_future()
    if not token.can_be_cancelled:
        return await waiter  # never resolved: only a cancel of the task ends it
    reg = token.register(_wake_threadsafe, loop, waiter)
    try:
        return await waiter
    finally:
        reg.unregister()


# -- to_thread -------------------------------------------------------------------------


def _default_executor(loop: asyncio.AbstractEventLoop) -> CancellableThreadPoolExecutor:
    # asyncio has no public getter for the default executor; read its
    # attribute where the loop has one.
    executor = getattr(loop, "_default_executor", None)
    if isinstance(executor, CancellableThreadPoolExecutor):
        return executor
    global _shared_pool  # one lazily created pool for the process
    with _shared_lock:
        if _shared_pool is None:
            _shared_pool = CancellableThreadPoolExecutor(thread_name_prefix="cancellable-to_thread")
        return _shared_pool


async def to_thread(
    fn: Callable[..., _R],
    /,
    *args: Any,
    executor: CancellableThreadPoolExecutor | None = None,
    token: CancellationToken | None = None,
    **kwargs: Any,
) -> _R:
    """Run ``fn(*args, **kwargs)`` on a pool thread and await its result.

    `asyncio.to_thread` with tokens. The keywords ``executor`` and ``token``
    are taken by this function (use `functools.partial` to pass them to
    ``fn``). ``executor`` is the `CancellableThreadPoolExecutor` to run on (None: the
    loop's default executor when it is one, else one pool shared by the
    process); the thread task's token is a child of ``token`` (None:
    `current_token()`) and is `current_token()` inside ``fn``.

    Cancelling the awaiting task (``task.cancel()``, `asyncio.timeout`, a
    `asyncio.TaskGroup` abort) cancels the thread task's token, waits until
    the task has ended (a task that had not started never does), then raises
    `asyncio.CancelledError`, even if ``fn`` returned meanwhile. Cancels
    arriving during that wait are absorbed into the one raised at the end.

    Returns:
        What ``fn`` returned.

    Raises:
        asyncio.CancelledError: The awaiting task was cancelled.
        OperationCancelledError: The thread task's token was cancelled
            elsewhere (``token``, the pool's `cancel_all`, ...).
        TypeError: ``executor`` is not a `CancellableThreadPoolExecutor`,
            ``token`` not a token, or ``fn`` not callable.
        Exception: Whatever ``fn`` raised.
    """
    import asyncio  # noqa: PLC0415 (kept out of the package's import time)

    loop = asyncio.get_running_loop()
    if executor is None:
        pool = _default_executor(loop)
    elif isinstance(executor, CancellableThreadPoolExecutor):
        pool = executor
    else:
        raise TypeError(
            "executor must be a CancellableThreadPoolExecutor or None, "
            f"got {type(executor).__name__!r}"
        )
    if token is None:
        token = current_token()
    elif token.__class__ is not CancellationToken:
        raise TypeError(f"token must be a CancellationToken or None, got {type(token).__name__!r}")
    # Submitted from the loop's thread: the task runs in a copy of the
    # awaiting task's context, so its contextvars are visible in fn.
    future = pool.submit(fn, *args, token=token, **kwargs)
    waiter: asyncio.Future[None] = loop.create_future()
    future.add_done_callback(functools.partial(_done_threadsafe, loop, waiter))
    try:
        await asyncio.shield(waiter)
    except asyncio.CancelledError as error:
        future.request_cancel(ASYNCIO_CANCELLED)
        # Wait for the task to end whatever else cancels us meanwhile; a
        # second Ctrl-C under asyncio.run still escapes as KeyboardInterrupt.
        while not waiter.done():
            try:
                await asyncio.shield(waiter)
            except asyncio.CancelledError:
                continue
        try:
            raise error
        finally:
            del error
    return future.result()


def _done_threadsafe(
    loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None], _: object
) -> None:
    _wake_threadsafe(loop, waiter, None)


# -- cancel_on -------------------------------------------------------------------------


@final
class cancel_on:  # lower case: used like a function, as asyncio.timeout
    """``async with cancel_on(token):`` cancels the block when ``token`` is cancelled.

    ``token`` may be cancelled from any thread. The block's task is then
    cancelled (``task.cancel()``), and at the edge the resulting
    `asyncio.CancelledError` becomes `OperationCancelledError` (carrying the
    token and its reason), after undoing this request on the task with
    ``Task.uncancel()`` so ``task.cancelling()`` is back where it was. A
    ``task.cancel()`` from elsewhere stays `asyncio.CancelledError`. No helper
    thread; the token registration is removed at the edge.

    Raises:
        TypeError: ``token`` is not a `CancellationToken`.
        RuntimeError: Entered outside a task, or entered twice.
    """

    __slots__ = ("_cancelling", "_exited", "_loop", "_reg", "_requested", "_task", "_token")
    __module__ = "cancellable"

    def __init__(self, token: CancellationToken) -> None:
        if token.__class__ is not CancellationToken:
            raise TypeError(f"token must be a CancellationToken, got {type(token).__name__!r}")
        self._token = token
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reg: Any = None
        self._requested = False
        self._exited = False
        self._cancelling = 0

    async def __aenter__(self) -> cancel_on:
        import asyncio  # noqa: PLC0415 (kept out of the package's import time)

        if self._task is not None:
            raise RuntimeError("cancel_on() can be entered only once")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("cancel_on() must be used inside a task")
        self._task = task
        self._loop = asyncio.get_running_loop()
        self._cancelling = task.cancelling()
        # Already cancelled: the callback runs now and schedules the cancel.
        self._reg = self._token.register(self._on_token)
        return self

    def _on_token(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._cancel_task)  # type: ignore[union-attr]

    def _cancel_task(self) -> None:
        if self._exited or self._requested:
            return
        self._requested = True
        self._task.cancel(ASYNCIO_CANCEL_MESSAGE)  # type: ignore[union-attr]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import asyncio  # noqa: PLC0415 (kept out of the package's import time)

        self._exited = True
        reg, self._reg = self._reg, None
        if reg is not None:
            reg.unregister()
        if not self._requested:
            return
        remaining = self._task.uncancel()  # type: ignore[union-attr]
        if remaining <= self._cancelling and isinstance(exc, asyncio.CancelledError):
            # The CancelledError becomes the context; the cause stays the reason.
            self._token.raise_if_cancellation_requested()

    def __repr__(self) -> str:
        return f"<cancel_on {self._token!r}>"


to_thread.__module__ = "cancellable"
