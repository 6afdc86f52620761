"""`DaskExecutor`: cancellation tokens for tasks on a Dask ``distributed`` cluster.

Needs the ``dask`` extra (``pip install "cancellable[dask]"``). Importing this
module without ``distributed`` raises `ModuleNotFoundError` (an `ImportError`).

How a cancel travels. Tasks submitted with the same token (and in the same
generation of `DaskExecutor.cancel_all`) form a group with one
`distributed.Event`, named after the group; its reason goes in a
`distributed.Variable` of the same name, set just before the event. On each
worker the first task of a group checks the event once (``is_set``, one
scheduler round trip) and starts one watcher thread that blocks on
``Event.wait``; every task of that group on that worker runs under a child of
the worker-local token the watcher cancels, so `current_token()` is an
ordinary local token there. A token cancel ends every unfinished future of
the group cancelled at once, drops the queued tasks (``client.cancel``) and
sets the event so running tasks see their token fire; a task that reaches a
worker afterwards sees the cancel at its start check and never runs ``fn``.

What is left on the scheduler. An event exists there only while a watcher
waits on it or once it was set. Watchers wait in leases of ``_LEASE`` seconds
and stop once their worker has had no task of the group for a lease, so an
unset event disappears then; a set event and its variable are removed
``_LINGER`` seconds after the cancel (long enough for tasks still in flight
to meet the start check). Task keys are released as soon as a future is
settled.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import pickle
import queue
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import _base as _futures_base
from typing import Any, Final, Literal, TypeVar, final

try:
    # Imported dynamically: ``distributed`` ships no type information, and the
    # type checker must pass without the extra installed.
    distributed: Any = importlib.import_module("distributed")
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ModuleNotFoundError(
        "cancellable.dask needs the 'distributed' package: pip install 'cancellable[dask]'",
        name="distributed",
    ) from exc

from ._errors import OperationCancelledError
from ._remote import (
    SHUT_DOWN,
    ExecutorState,
    MapResults,
    RemoteFuture,
    dump_reason,
    end_cancelled,
    end_unstarted,
    executor_token,
    log_cancel_errors,
    map_source,
    submit_token,
)
from ._token import CancellationToken, CancellationTokenSource, use_token

__all__ = ["DaskExecutor", "DaskFuture"]

_R = TypeVar("_R")
_log = logging.getLogger("cancellable")

_LEASE: Final = 1.0
_LINGER: Final = 2.0
_CLAIM_TTL: Final = 300.0
_IDLE: Final = 0.5


class _Cancelled:
    """What a task returns from a worker when it ended cancelled (or never started).

    A return value, not an exception, so workers do not log a failed task.
    """

    __slots__ = ()

    def __reduce__(self) -> str:
        return "_CANCELLED"


_CANCELLED: Final = _Cancelled()


# -- the worker side ----------------------------------------------------------
# Module state of each worker process, under _wlock. A group's entry lives
# while its watcher runs; a cancelled group stays as a tombstone (``dead``)
# for the linger time, so late starts on this worker still see the cancel.


class _LocalGroup:
    __slots__ = ("dead", "last_used", "ready", "refs", "source")

    def __init__(self) -> None:
        self.source = CancellationTokenSource()
        self.refs = 0
        self.last_used = time.monotonic()
        self.ready = threading.Event()
        self.dead = 0.0


_wlock = threading.Lock()
_groups: dict[str, _LocalGroup] = {}
_running: dict[str, CancellationTokenSource] = {}
_claimed: dict[str, float] = {}


def _read_reason(client: Any, name: str) -> object:
    try:
        data = distributed.Variable(name, client=client).get(timeout=_LINGER / 2)
        return pickle.loads(data)
    except Exception:
        return "the task's token was cancelled"


def _watch(client: Any, name: str, group: _LocalGroup) -> None:
    """Worker watcher thread: one per group per worker, leases of _LEASE seconds."""
    event = distributed.Event(name, client=client)
    while True:
        try:
            fired = event.wait(timeout=_LEASE)
        except Exception:  # the worker's client is closing
            fired = False
            with _wlock:
                _groups.pop(name, None)
            return
        if fired:
            log_cancel_errors(group.source, _read_reason(client, name))
            with _wlock:
                group.dead = time.monotonic()
            return
        with _wlock:
            if group.refs == 0 and time.monotonic() - group.last_used >= _LEASE:
                if _groups.get(name) is group:
                    del _groups[name]
                return


def _purge(now: float) -> None:
    """Drop old tombstones and claims. _wlock held."""
    for name in [n for n, g in _groups.items() if g.dead and now - g.dead > _LINGER * 4]:
        del _groups[name]
    for key in [k for k, t in _claimed.items() if now - t > _CLAIM_TTL]:
        del _claimed[key]


def _run_task(
    task_id: str, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The wrapper every task runs on a worker."""
    client = distributed.get_client()
    with _wlock:
        group = _groups.get(name)
        fresh = group is None
        if group is None:
            _purge(time.monotonic())
            group = _groups[name] = _LocalGroup()
        group.refs += 1
    try:
        if fresh:
            try:
                if distributed.Event(name, client=client).is_set():
                    log_cancel_errors(group.source, _read_reason(client, name))
                    group.dead = time.monotonic()
                else:
                    threading.Thread(
                        target=_watch,
                        args=(client, name, group),
                        name="cancellable-dask-watcher",
                        daemon=True,
                    ).start()
            finally:
                group.ready.set()
        else:
            group.ready.wait()
        with _wlock:
            if _claimed.pop(task_id, None) is not None:
                return _CANCELLED
            source = _running[task_id] = CancellationTokenSource(group.source.token)
        try:
            # The start check: a group cancelled before this task began.
            if source.is_cancellation_requested:
                return _CANCELLED
            try:
                with use_token(source.token):
                    return fn(*args, **kwargs)
            except OperationCancelledError:
                if source.is_cancellation_requested:
                    return _CANCELLED
                raise
        finally:
            with _wlock:
                _running.pop(task_id, None)
            source.close()
    finally:
        with _wlock:
            group.refs -= 1
            group.last_used = time.monotonic()


def _claim(task_id: str) -> bool:
    """On a worker (``client.run``): claim a task that has not started here; False if it has."""
    with _wlock:
        if task_id in _running:
            return False
        now = time.monotonic()
        _purge(now)
        _claimed[task_id] = now
        return True


def _cancel_one(task_id: str, data: bytes) -> None:
    """On a worker (``client.run``): cancel one running task's local token."""
    with _wlock:
        source = _running.get(task_id)
    if source is not None:
        log_cancel_errors(source, pickle.loads(data))


def _worker_state() -> dict[str, int]:
    """On a worker (tests): how much per-group state this worker holds."""
    with _wlock:
        return {
            "groups": sum(1 for g in _groups.values() if not g.dead),
            "running": len(_running),
        }


# -- the client side ----------------------------------------------------------


class _Group:
    """Parent side: the tasks of one submit token in one generation."""

    __slots__ = (
        "__weakref__",
        "cancelled",
        "gen",
        "name",
        "reg",
        "source",
        "submitted",
        "unfinished",
    )

    def __init__(self, name: str, source: CancellationTokenSource, gen: object) -> None:
        self.name = name
        self.source = source
        self.gen = gen
        self.unfinished: dict[str, DaskFuture[Any]] = {}
        self.cancelled = False
        self.submitted = False  # a task of the group may have reached a worker
        self.reg: Any = None


@final
class DaskFuture(RemoteFuture[_R]):
    """The future of a `DaskExecutor` task: a `concurrent.futures.Future` with a token.

    It stays pending until the task ends (Dask does not report when a task
    starts executing).
    """

    __module__ = "cancellable.dask"

    def __init__(self) -> None:
        super().__init__()
        self._executor: DaskExecutor | None = None
        self._task_id = ""
        self._dask: Any = None
        self._token_source: CancellationTokenSource | None = None

    @property
    def token(self) -> CancellationToken:
        """The task's token (client side): a child of the submit token and the executor's."""
        source = self._token_source
        return source.token if source is not None else CancellationToken.NONE

    def cancel(self) -> bool:
        """Cancel the task if it has not started executing; True if it is now cancelled.

        A task already handed to a worker but not started counts as not
        started. Blocks for one round trip to the workers.
        """
        if self.done():
            return self.cancelled()
        ex = self._executor
        if ex is None:
            return Future.cancel(self)
        return ex._cancel_future(self)

    def request_cancel(self, reason: object = None) -> None:
        """Cancel this one task's token: queued, it is dropped; running, it is signalled.

        The future ends cancelled at once either way. Does not block.
        """
        if self.done():
            return
        ex = self._executor
        if ex is not None:
            ex._request_cancel(self, reason)


class DaskExecutor(Executor):
    """A `concurrent.futures.Executor` over a `distributed.Client`, with tokens.

    ``submit``/``map`` take ``token=``; in the task `current_token()` is a
    worker-local token that a cancel of the submit token reaches (one
    `distributed.Event` per submit token, not per task). ``shutdown`` never
    closes the client.
    """

    __module__ = "cancellable.dask"

    def __init__(self, client: Any, *, token: CancellationToken | None = None) -> None:
        """Wrap ``client``; the executor never closes it.

        Args:
            client: A connected `distributed.Client` (synchronous).
            token: Cancelling it cancels every task and makes later submits
                return cancelled futures.

        Raises:
            TypeError: ``client`` is not a `distributed.Client`, or ``token``
                is not a `CancellationToken`.
        """
        if not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client, got {type(client).__name__!r}")
        self._state = ExecutorState(executor_token(token))
        self._client = client
        self._prefix = f"cancellable-{uuid.uuid4().hex[:12]}"
        self._count = itertools.count()
        self._groups: weakref.WeakKeyDictionary[CancellationToken, _Group] = (
            weakref.WeakKeyDictionary()
        )
        self._default: _Group | None = None
        self._all: set[DaskFuture[Any]] = set()
        self._io: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._io_thread: threading.Thread | None = None
        self._lingering: dict[str, CancellationTokenSource] = {}
        self._ready: list[tuple[DaskFuture[Any], Any]] = []
        self._fetching = False
        self._fetch_wake = threading.Semaphore(0)
        self._fetch_thread: threading.Thread | None = None

    @property
    def client(self) -> Any:
        """The client this executor submits through."""
        return self._client

    @property
    def token(self) -> CancellationToken:
        """The executor's token (`CancellationToken.NONE` if none was given)."""
        return self._state.token

    # -- the one background thread for scheduler round trips ---------------------

    def _post(self, action: Callable[[], object]) -> None:
        """Run ``action`` on the executor's I/O thread (callbacks must not block)."""
        with self._state.lock:
            if self._io_thread is None:
                self._io_thread = threading.Thread(
                    target=self._io_loop, name="cancellable-dask-io", daemon=True
                )
                self._io_thread.start()
            # Under the lock, so the thread's idle exit never misses it.
            self._io.put(action)

    def _io_loop(self) -> None:
        while True:
            try:
                # An idle timeout, not a poll: see _fetch_loop.
                action = self._io.get(timeout=_IDLE)
            except queue.Empty:
                with self._state.lock:
                    if self._io.empty():
                        self._io_thread = None
                        return
                continue
            if action is None:
                return
            try:
                action()
            except Exception:
                _log.exception("a Dask scheduler call for cancellation failed")

    # -- groups ---------------------------------------------------------------------

    def _group_for(self, token: CancellationToken) -> _Group:
        """The live group of ``token`` in this generation. Lock held."""
        gen = self._state.gen
        group = self._groups.get(token) if token.can_be_cancelled else self._default
        if group is not None and group.gen is gen and not group.cancelled:
            return group
        name = f"{self._prefix}-{next(self._count)}"
        group = _Group(name, self._state.task_source(gen, token), gen)
        if token.can_be_cancelled:
            self._groups[token] = group
        else:
            self._default = group
        return group

    def _on_group_cancel(self, ref: weakref.ref[_Group]) -> None:
        group = ref()
        if group is None:
            return
        with self._state.lock:
            group.cancelled = True
            futures = list(group.unfinished.values())
            group.unfinished.clear()
            submitted = group.submitted
        dask_futures = [f._dask for f in futures if f._dask is not None]
        for f in futures:
            # Not _settled(): closing the task's source now would detach it
            # before this cancel reaches it (callbacks run before children).
            f._dask = None
            with self._state.lock:
                self._all.discard(f)
            end_cancelled(f)
        if not submitted:
            return  # no worker ever saw this group: nothing to signal or remove
        reason = dump_reason(group.source.token.reason)
        name = group.name
        client = self._client

        def signal() -> None:
            # Drop the queue first, so the scheduler hands out nothing more of
            # the group; then wake the running tasks (reason before event).
            if dask_futures:
                client.cancel(dask_futures)
            distributed.Variable(name, client=client).set(reason)
            distributed.Event(name, client=client).set()

        self._post(signal)
        self._linger(name)

    def _linger(self, name: str) -> None:
        """Remove a set event and its variable once tasks in flight met the start check."""
        timer = CancellationTokenSource(timeout=_LINGER)
        with self._state.lock:
            self._lingering[name] = timer
        timer.token.register(self._post, lambda: self._remove_event(name))

    def _remove_event(self, name: str) -> None:
        with self._state.lock:
            timer = self._lingering.pop(name, None)
        if timer is None:
            return
        timer.close()
        client = self._client
        if client.status not in ("running", "connecting"):
            return
        distributed.Event(name, client=client).clear()
        distributed.Variable(name, client=client).delete()

    # -- submitting -----------------------------------------------------------------

    def submit(  # type: ignore[override]
        self,
        fn: Callable[..., _R],
        /,
        *args: Any,
        token: CancellationToken | None = None,
        **kwargs: Any,
    ) -> DaskFuture[_R]:
        """Submit ``fn(*args, **kwargs)`` to the cluster and return its future.

        In the task, `current_token()` is the task's token. ``token`` is taken
        by the executor (pass a ``token`` keyword through `functools.partial`).
        Blocks only as long as ``client.submit`` does.

        Args:
            fn: The callable (it must pickle, as for ``client.submit``).
            *args: Its positional arguments.
            token: Cancels this task; None means the ambient token
                (`current_token()`). Already cancelled: the returned future
                is cancelled and ``fn`` never runs.
            **kwargs: Its keyword arguments.

        Raises:
            RuntimeError: After `shutdown`.
            TypeError: ``fn`` is not callable or ``token`` is not a token.
        """
        token = submit_token(token)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__!r}")
        future: DaskFuture[_R] = DaskFuture()
        with self._state.lock:
            if self._state.shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        own = self._state.token
        if token.is_cancellation_requested or own.is_cancellation_requested:
            # Cancelled already: no group, no scheduler call; fn never runs.
            future._token_source = CancellationTokenSource(token, own)
            end_unstarted(future)
            future._token_source.close()
            return future
        with self._state.lock:
            group = self._group_for(token)
            new_group = group.reg is None
            if new_group:
                group.reg = True  # the registration follows, outside the lock
        if new_group:
            group.reg = group.source.token.register(self._on_group_cancel, weakref.ref(group))
        source = CancellationTokenSource(group.source.token)
        future._token_source = source
        future._executor = self
        if source.is_cancellation_requested:
            end_unstarted(future)
            source.close()
            return future
        with self._state.lock:
            group.submitted = True
        task_id = f"{group.name}-{next(self._count)}"
        future._task_id = task_id
        name = getattr(fn, "__name__", "task")
        dfut = self._client.submit(
            _run_task, task_id, group.name, fn, args, kwargs, key=f"{name}-{task_id}", pure=False
        )
        future._dask = dfut
        with self._state.lock:
            live = not group.cancelled
            if live:
                group.unfinished[task_id] = future
                self._all.add(future)
        if not live:
            # The group was cancelled while this task was being submitted.
            self._client.cancel([dfut])
            future._dask = None
            end_cancelled(future)
            source.close()
            return future
        gref = weakref.ref(group)
        dfut.add_done_callback(lambda df: self._finished(future, gref, df))
        return future

    def _finished(self, future: DaskFuture[Any], gref: weakref.ref[_Group], df: Any) -> None:
        """Dask's done-callback (on a client thread): queue the result fetch."""
        group = gref()
        if group is not None:
            with self._state.lock:
                group.unfinished.pop(future._task_id, None)
        if future.done():
            self._settled(future)
            return
        with self._state.lock:
            self._ready.append((future, df))
            start = not self._fetching
            self._fetching = True
            if self._fetch_thread is None:
                self._fetch_thread = threading.Thread(
                    target=self._fetch_loop, name="cancellable-dask-results", daemon=True
                )
                self._fetch_thread.start()
        if start:
            self._fetch_wake.release()

    def _fetch_loop(self) -> None:
        """Fetch results in batches: one gather for whatever finished meanwhile."""
        while True:
            # An idle timeout, not a poll: the thread ends after a quiet spell
            # and the next result starts a new one.
            woken = self._fetch_wake.acquire(timeout=_IDLE)
            if not woken:
                with self._state.lock:
                    if not self._ready and not self._fetching:
                        self._fetch_thread = None
                        return
                continue
            while True:
                with self._state.lock:
                    batch, self._ready = self._ready, []
                    if not batch:
                        self._fetching = False
                        break
                try:
                    self._settle_batch(batch)
                except Exception:
                    _log.exception("settling Dask results failed")

    def _settle_batch(self, batch: list[tuple[DaskFuture[Any], Any]]) -> None:
        finished = [(f, df) for f, df in batch if df.status == "finished"]
        values: dict[int, object] = {}
        if finished:
            try:
                got = self._client.gather([df for _, df in finished])
                values = {id(f): v for (f, _), v in zip(finished, got, strict=True)}
            except Exception:
                pass  # each one is fetched on its own below
        for future, df in batch:
            self._settle_one(future, df, values)

    def _settle_one(self, future: DaskFuture[Any], df: Any, values: dict[int, object]) -> None:
        try:
            status = df.status
            if status == "cancelled":
                outcome: tuple[str, Any] = ("cancelled", None)
            elif status == "error":
                outcome = ("error", df.exception())
            else:
                value = values[id(future)] if id(future) in values else df.result()
                outcome = ("cancelled", None) if value.__class__ is _Cancelled else ("ok", value)
        except BaseException as exc:  # any failure to fetch is the task's outcome
            outcome = ("error", exc)
        self._settled(future)
        kind, value = outcome
        try:
            if kind == "cancelled":
                end_cancelled(future)
            elif kind == "error":
                future.set_exception(value)
            else:
                future.set_result(value)
        except _futures_base.InvalidStateError:
            pass  # ended cancelled meanwhile

    def _settled(self, future: DaskFuture[Any]) -> None:
        """Release what a finished future holds: its Dask key and its token."""
        future._dask = None
        with self._state.lock:
            self._all.discard(future)
        source = future._token_source
        if source is not None:
            source.close()

    def _cancel_future(self, future: DaskFuture[Any]) -> bool:
        task_id = future._task_id
        dfut = future._dask
        if dfut is None:
            return Future.cancel(future) if not future.done() else future.cancelled()
        replies = self._client.run(_claim, task_id)
        if not all(replies.values()):
            return False
        self._client.cancel([dfut])
        self._drop(future)
        return end_cancelled(future) or future.cancelled()

    def _drop(self, future: DaskFuture[Any]) -> None:
        with self._state.lock:
            for group in [self._default, *self._groups.values()]:
                if group is not None:
                    group.unfinished.pop(future._task_id, None)
        self._settled(future)

    def _request_cancel(self, future: DaskFuture[Any], reason: object) -> None:
        source = future._token_source
        if source is not None and not source.closed:
            log_cancel_errors(source, reason)
        dfut = future._dask
        task_id = future._task_id
        data = dump_reason(reason)
        client = self._client
        self._drop(future)
        end_cancelled(future)
        if dfut is None:
            return

        def signal() -> None:
            client.run(_cancel_one, task_id, data)
            client.cancel([dfut])

        self._post(signal)

    def map(
        self,
        fn: Callable[..., _R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        token: CancellationToken | None = None,
    ) -> Iterator[_R]:
        """Return an iterator of ``fn`` applied to the items of ``iterables``, in order.

        Every call is submitted now; closing the iterator, a timeout or
        cancelling ``token`` cancels every call not yielded yet.
        ``chunksize`` is accepted and ignored. Iterating blocks.

        Raises:
            TypeError: ``token`` is not a `CancellationToken`.
            ValueError: ``timeout`` is negative or NaN.
            TimeoutError: (while iterating) a result was not ready in time.
            OperationCancelledError: (while iterating) ``token`` was cancelled
                before the next result could be delivered.
        """
        token, deadline, source = map_source(timeout, token)
        fs = [self.submit(fn, *args, token=source.token) for args in zip(*iterables)]  # noqa: B905
        return MapResults(list(fs), False, deadline, source, token)

    def cancel_all(self, reason: object = None) -> None:
        """Cancel every task submitted so far; later submits are unaffected.

        Every unfinished future ends cancelled at once; queued tasks are
        dropped and running ones see their token fire. Does not block.
        """
        old = self._state.new_generation()
        log_cancel_errors(old, reason)
        old.close()

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> Literal[False]:
        """Shut down and wait (through `shutdown`); if the block raised, cancel everything first.

        As the thread and process pools: the reason is a text naming the
        exception, so that its traceback is not kept alive.
        """
        if exc_type is not None:
            self.cancel_all(f"the executor's with block was left by {exc_val!r}")
            del exc_val, exc_tb
        self.shutdown(wait=True)
        return False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; never closes the client.

        Args:
            wait: Block until every task's future is done (a cancelled
                group's event is removed ``_LINGER`` seconds after its cancel).
            cancel_futures: Cancel every task first (as `cancel_all`).
        """
        self._state.refuse_tasks()
        with self._state.lock:
            pending = list(self._all)
        if cancel_futures:
            self.cancel_all(SHUT_DOWN)
        if wait:
            _futures_base.wait(pending)
            # The set events of cancelled groups are removed by their linger
            # timers, not now: a task that reached a worker just before the
            # cancel must still meet its start check.
            done = threading.Event()
            self._post(done.set)
            done.wait()
