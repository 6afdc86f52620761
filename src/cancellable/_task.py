"""A task's lifecycle: its future, its states, and who may change them.

This module is the one owner of an executor task's state. The pool
(`_executor.py`) creates tasks with `Board.enqueue`, and then only calls the
named transitions below: `execute` (a worker's turn: claim, start, run,
finish), `cancel_pending` (anyone ending one pending task), `reject` (a task
cancelled before it was queued) and `Group.drain` (a token's cancel ending
every pending task of a submit token). `claim` and `start` are `execute`'s
first steps, also used by `set_running_or_notify_cancel`.

States, with the stdlib's names: PENDING -> RUNNING -> FINISHED, PENDING ->
CANCELLED_AND_NOTIFIED (never started), RUNNING -> CANCELLED_AND_NOTIFIED (a
cooperative task stopped). CANCELLED is used only by standalone futures,
which follow the stdlib's protocol.

Claims. A pending executor task is a key of its *group* (one per submit token
and generation, a dict used as an ordered set). Whoever pops it, with one
atomic ``dict.pop`` (atomic under the GIL: a free-threaded port needs a lock or
a compare-and-swap here), owns its next transition: a worker starts it, a
canceller ends it cancelled. Losers never wait on user code, only on the few
bytecodes of bookkeeping that follow the winner's pop.

Invariants:

- ``future in group`` exactly while the task is PENDING and unclaimed.
- Between a claim and the publication of the new state only library code
  runs: no user callback, no blocking. So a loser's wait is bounded.
- Every transition frees the task's ``max_pending`` slot, notes its group's
  emptiness and publishes its state before any user code (done-callbacks)
  runs. A batch drain publishes every task it popped before the first
  callback.
- Once a cancel is *seen*, the task never starts. A canceller sets its
  token's flag, then tries the claim; `start` publishes RUNNING, then reads
  the flags. One of the two sees the other's write: either the canceller's
  claim fails after the task is already RUNNING (it then stops cooperatively
  through its token), or the worker sees the flag and ends the task cancelled
  without calling it.
- A `BaseException` (a Ctrl-C on the main thread, or one raised by a
  callback) landing inside a transition is caught, the transition is
  completed, and the exception then propagates as itself. Statement-level
  windows are closed this way; a signal delivered between two bytecodes of
  one statement (for instance between a ``dict.pop`` and the store of its
  result) is the one window left (README, known limitations).

Most futures of a busy pool are never waited on before they finish, so a
future builds its condition (`_Sync`) only when someone observes it. The first
observer and the finisher order themselves with the group's lock, held for a
few bytecodes: either the finisher stores a final marker first (nobody can
ever wait), or the observer stores a `_Sync` first (the finisher then notifies
through it, as the stdlib does).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from _thread import allocate_lock
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    LOGGER,
    PENDING,
    RUNNING,
)
from contextvars import Context, copy_context
from functools import partial
from operator import attrgetter
from typing import Any, Final, TypeVar

from ._errors import OperationCancelledError
from ._primitives import _check_timeout
from ._stats import ExecutorStatistics, Laggard
from ._token import (
    CancellationToken,
    CancellationTokenSource,
    _link,
    _new_token,
)

__all__ = ["Board", "CancellableFuture", "Group", "SignalSafeCondition"]

_R = TypeVar("_R")
_log = logging.getLogger("cancellable")
_new = object.__new__

_DONE_STATES: Final = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
_CANCELLED_STATES: Final = (CANCELLED, CANCELLED_AND_NOTIFIED)
_DESCRIPTION: Final = {
    PENDING: "pending",
    RUNNING: "running",
    CANCELLED: "cancelled",
    CANCELLED_AND_NOTIFIED: "cancelled",
    FINISHED: "finished",
}
# Pending tasks a drain pops per hold of their group's lock.
_DRAIN_BATCH: Final = 512
# Emptied groups are forgotten in batches of at least this many.
_COLLECT_AT: Final = 32


# -- synchronisation of observed futures -----------------------------------------


class SignalSafeCondition(threading.Condition):
    """A `threading.Condition` whose ``with`` enters and exits in C.

    ``threading.Condition.__exit__`` is a Python frame, and a signal handled
    at its first bytecode (a Ctrl-C raising KeyboardInterrupt) leaves its
    lock held for good. Here ``__enter__`` and ``__exit__`` are the lock's own
    C methods, fetched by a C getter, so the release at the end of a ``with``
    block completes before any signal can be handled.
    """

    __enter__ = property(attrgetter("_lock.__enter__"))
    __exit__ = property(attrgetter("_lock.__exit__"))


class _Sync:
    """The condition, stdlib waiters and done-callbacks of an observed future."""

    __slots__ = ("callbacks", "cond", "told", "waiters")

    def __init__(self) -> None:
        self.cond = SignalSafeCondition()
        self.waiters: list[Any] = []
        self.callbacks: list[Callable[[Any], object]] = []
        # How many waiters `_publish` has told of the final state: a
        # publication a signal broke off goes on with the next one.
        self.told = 0


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


def notify_all(cond: threading.Condition) -> None:
    """Wake every thread waiting on ``cond``."""
    with cond:
        cond.notify_all()


class _Waker:
    """Wakes the threads waiting on a condition when a token is cancelled.

    A watcher (`CancellationToken._watch`) rather than a registration: it
    exists before it is added, so a wait that a signal interrupts anywhere
    can still remove it (a registration lost between ``register()`` and the
    caller's ``try`` would stay on a long-lived token for good). Its
    ``finally`` block pops it from the token's watchers in one C call.
    """

    __slots__ = ("_args", "_fn", "_token")

    def __init__(self, cond: threading.Condition) -> None:
        self._fn: Callable[..., object] | None = notify_all
        self._args: tuple[object, ...] = (cond,)
        self._token: CancellationToken | None = None


# What a waker's removal pops from when the token has no watchers.
_NO_WATCHERS: Final[dict[Any, None]] = {}


def _published(future: CancellableFuture[Any]) -> bool:
    """Whether a task's final state is completely published.

    Letting go of its group is every publication's last step; a task whose
    publication a signal broke off has a final state but still its group.
    """
    return future._group is None and (
        future._sync.__class__ is _Final or future._st in _DONE_STATES
    )


def _await_claim(future: CancellableFuture[Any]) -> str:
    """The state of a future whose claim another thread won, once it is published.

    The winner publishes a few bytecodes after its pop, running no user code
    in between (module invariant), so this yields the GIL a bounded number of
    times.
    """
    while True:
        sync = future._sync
        if sync.__class__ is _Final:
            return sync.state
        state = future._st
        if state != PENDING:
            return state
        time.sleep(0)


# -- the board: what a pool's tasks share --------------------------------------------


class Board:
    """The lifecycle state one pool's tasks share: generations, groups, slots.

    The pool's `_Core` extends it. ``lock`` orders submits against cancels
    and shutdown; no user code ever runs under it.
    """

    __slots__ = (
        "__weakref__",
        "bounded",
        "empties",
        "enqueued",
        "ex_token",
        "failed_pending",
        "forgotten",
        "gen",
        "lock",
        "max_pending",
        "put",
        "records",
        "rejected",
        "retired",
        "retiring",
        "slots",
        "space",
    )

    def __init__(
        self,
        ex_token: CancellationToken | None,
        max_pending: int | None,
        put: Callable[[CancellableFuture[Any]], object],
    ) -> None:
        # Hands a pending task to the pool's workers.
        self.put = put
        self.lock = threading.RLock()
        self.ex_token = ex_token
        self.bounded = max_pending is not None
        self.max_pending = max_pending or 0
        # The tasks holding a max_pending slot: admitted and not yet claimed.
        # A set of tasks, not a count: taking or giving one back is a single
        # statement, idempotent, so a signal can never leak or double one.
        self.slots: dict[CancellableFuture[Any], None] = {}
        self.space = SignalSafeCondition(threading.Lock())
        # Groups seen empty since the last collection (see collect_empties).
        self.empties: list[Group] = []
        # Groups collected and not yet handed to a caller to unwatch (``lock``
        # held): kept here so that a signal between the two loses none.
        self.forgotten: list[Group] = []
        self.gen = Gen(self)
        # Generations `cancel_all` replaced and has not finished cancelling
        # (a signal broke it off), with their reasons: the next cancel_all
        # or shutdown finishes them.
        self.retiring: list[tuple[Gen, object]] = []
        # Counts for statistics(), changed under ``lock``: tasks queued,
        # tasks ended at submit (already cancelled), pending tasks a failed
        # initializer ended, and the counts of workers that exited
        # (completed, failed, cancelled). Live workers count in their records.
        self.enqueued = 0
        self.rejected = 0
        self.failed_pending = 0
        self.retired = [0, 0, 0]
        self.records: dict[int, WorkerRecord] = {}

    # -- slots ---------------------------------------------------------------

    def free_slots(self, futures: Iterable[CancellableFuture[Any]]) -> None:
        """Give back the slots these tasks hold (if they hold one) and wake as many submitters."""
        pop = self.slots.pop
        freed = 0
        for future in futures:
            if pop(future, False) is None:
                freed += 1
        if freed:
            with self.space:
                self.space.notify(freed)

    def reserve_slot(
        self,
        future: CancellableFuture[Any],
        tok: CancellationToken | None,
        admit: Callable[[], bool],
        stopped: Callable[[], bool],
    ) -> bool:
        """Take a max_pending slot for ``future``, blocking while none is free.

        ``admit()`` True admits the task over the bound (a submit that must
        not block); ``stopped()`` True ends the wait without a slot (the pool
        shut down or broke: the caller raises). Returns whether it took one.

        Raises:
            OperationCancelledError: ``tok`` was cancelled while this waited.
        """
        slots = self.slots
        space = self.space
        with space:
            if len(slots) < self.max_pending:
                slots[future] = None
                return True
        if admit():
            slots[future] = None
            return True
        waker = _Waker(space)
        try:
            if tok is not None:
                tok._watch(waker)
            with space:
                while len(slots) >= self.max_pending:
                    if tok is not None and tok._cancelled:
                        tok._raise_cancelled()
                    if stopped():
                        return False
                    space.wait()
                slots[future] = None
                return True
        finally:
            # C operations only, so no signal can
            # land before the waker is gone (a Python call can be interrupted
            # at its entry). One dict pop, atomic under the GIL (and under
            # the dict's own lock on a free-threaded build).
            (tok._watchers or _NO_WATCHERS).pop(waker, None) if tok is not None else None

    def wake_blocked_submitters(self) -> None:
        if self.bounded:
            notify_all(self.space)

    # -- groups ----------------------------------------------------------------

    def collect_empties(self) -> None:
        """Forget the groups that emptied, moving them to ``forgotten``.

        Called with ``lock`` held, by a submit, before it looks up its group.
        Claimers only note an emptied group (one atomic ``list.append``), so
        running a task never takes the pool's lock. The submit hands the
        forgotten groups to its caller (`handoff`), which removes their
        watch on their tokens (`Group.unwatch`) outside the lock.
        """
        empties = self.empties
        forgotten = self.forgotten
        # Pop in place: claimers append concurrently (list.pop and append are
        # atomic under the GIL).
        while empties:
            group = empties.pop()
            groups = group.gen.groups
            if group or groups.get(group.token) is not group:
                # In use again (noted anew when it empties), or forgotten
                # already: a group can be noted empty more than once.
                continue
            # One statement: out of its generation and into the list.
            forgotten.append(groups.pop(group.token))

    def handoff(self) -> list[Group] | None:
        """The forgotten groups for the caller to unwatch, or None; ``lock`` held."""
        if not self.forgotten:
            return None
        stale, self.forgotten = self.forgotten, []
        return stale

    def enqueue(
        self, future: CancellableFuture[Any], tok: CancellationToken | None
    ) -> tuple[CancellationToken | None, list[Group] | None]:
        """Make ``future`` a pending task of the current generation; ``lock`` held.

        Returns ``(cause, stale)``: the token that had already cancelled the
        task (the caller then ends it with `reject`) and forgotten groups
        whose watch the caller must remove outside the lock (those of a
        submit that a signal broke off go to the next one, or to
        `finish_cancels`).
        """
        stale = None
        gen = self.gen
        gen_token = gen.token
        if gen_token._cancelled:
            future._group = gen.default
            self.rejected += 1
            return gen_token, stale
        group: Group | None
        if tok is None:
            group = gen.default
        else:
            if tok._cancelled:
                future._group = gen.default
                self.rejected += 1
                return tok, stale
            if len(self.empties) >= _COLLECT_AT:
                # Before the lookup: the group found below is never one
                # being forgotten.
                self.collect_empties()
            group = gen.groups.get(tok)
        try:
            if group is None and tok is not None:
                if self._solo(future, tok):
                    # The token's only task: it watches the token itself,
                    # from the generation's default group (see `_solo`).
                    group = gen.default
                elif not tok._cancelled:
                    # One statement: a signal cannot separate the group from
                    # its registration.
                    group = gen.groups[tok] = Group.registered(gen, tok)
                if group is None or tok._cancelled:
                    # Cancelled while it registered: its callback ran on
                    # this thread (on the empty group, or on the solo task
                    # not yet queued); the caller ends the task.
                    future._group = gen.default if group is None else group
                    self.rejected += 1
                    return tok, self.handoff() if self.forgotten else None
            future._group = group
            # Not None: set above when ``tok`` is.
            group[future] = True  # type: ignore[index]
            self.put(future)
        except BaseException:
            # A signal before the queueing: this submit did not happen (the
            # caller gives the slot back and raises). A worker that took the
            # task from the queue meanwhile finds it gone from its group and
            # skips it.
            if (
                group is not None
                and group.pop(future, None) is not None
                and group.token is not None
                and not group
            ):
                self.empties.append(group)
            _let_go_of_sub(future)
            raise
        self.enqueued += 1
        # No call on the common path: forgotten groups are rare.
        return None, self.handoff() if self.forgotten else None

    def _solo(self, future: CancellableFuture[Any], tok: CancellationToken) -> bool:
        """Make ``future`` a solo task of ``tok`` if it is the token's first; ``lock`` held.

        A token used for one task (a fresh child token per request, say)
        then costs no group, no watcher dict and no collection later: the
        task watches it alone, in the token's slot for one watcher, until it
        starts or ends. Later tasks of the same token, while this one
        watches, share a group as usual. False, leaving nothing behind, if
        the slot is taken (by another pool's task) or the token cancelled.
        """
        if tok._solo is not None:
            return False
        # The default group first: a cancel that runs the watch at once
        # must find the task's group (it is not in it yet, so it cannot end
        # it, and the caller sees the flag).
        future._group = self.gen.default
        # Before the watch: the caller's undo finds it (`_let_go_of_sub`).
        future._sub = tok
        if tok._watch_solo(future):
            return True
        future._sub = None
        return False

    # -- what the pool reports -----------------------------------------------

    def enrol(self, record: WorkerRecord) -> None:
        # No lock: a new worker must not wait for the submit that started it
        # (readers copy the dict in one C call, atomic under the GIL).
        self.records[record.ident] = record

    def retire(self, record: WorkerRecord) -> None:
        with self.lock:
            if self.records.pop(record.ident, None) is record:
                retired = self.retired
                retired[0] += record.completed
                retired[1] += record.failed
                retired[2] += record.cancelled

    def statistics(self, workers: int) -> ExecutorStatistics:
        """A snapshot of the counts (see `ExecutorStatistics`); takes ``lock`` briefly."""
        with self.lock:
            records = list(self.records.values())
            pending = sum(len(group) for group in self.gen.groups.values())
            enqueued = self.enqueued
            rejected = self.rejected
            failed_pending = self.failed_pending
            completed, failed, cancelled = self.retired
        running = laggards = 0
        for record in records:
            completed += record.completed
            failed += record.failed
            cancelled += record.cancelled
            current = record.current
            if current is not None:
                running += 1
                if cancel_time(current) is not None:
                    laggards += 1
        claimed = completed + failed + cancelled + running
        cancelled += rejected + max(0, enqueued - claimed - pending - failed_pending)
        return ExecutorStatistics(
            workers=workers,
            idle_workers=max(0, workers - running),
            pending=pending,
            running=running,
            completed=completed,
            failed=failed + failed_pending,
            cancelled=cancelled,
            laggards=laggards,
        )

    def laggards(self, grace: float) -> tuple[list[tuple[Laggard, int]], float | None]:
        """The running tasks cancelled at least ``grace`` seconds ago.

        Returns them, each with the id of its future, and the seconds until
        the next running cancelled task reaches ``grace`` (None if none).
        """
        with self.lock:
            records = list(self.records.values())
        now = time.monotonic()
        frames: dict[int, Any] | None = None
        found = []
        next_due: float | None = None
        for record in records:
            current = record.current
            if current is None:
                continue
            cancelled = cancel_time(current)
            fn = current._call
            if cancelled is None or fn is None:
                continue
            since = now - cancelled[0]
            if since < grace:
                due = grace - since
                next_due = due if next_due is None else min(next_due, due)
                continue
            if frames is None:
                frames = sys._current_frames()
            frame = frames.get(record.ident)
            stack = _task_stack(frame) if frame is not None else ""
            laggard = Laggard(
                thread_name=record.name,
                qualname=callable_name(fn),
                seconds_since_cancel=since,
                reason=cancelled[1],
                stack=stack,
            )
            found.append((laggard, id(current)))
        del frames
        return found, next_due

    def new_generation(self, reason: object) -> None:
        """Start a new generation and cancel the old one (`cancel_all`).

        The old one is noted as retiring in the statement that replaces it,
        so a signal landing anywhere after that leaves its cancel to the next
        `finish_cancels` rather than forgetting it (its tasks would stay pending, and
        its groups on their tokens, keeping the pool alive).
        """
        fresh = Gen(self)
        with self.lock:
            # One statement: no signal lands between the swap and the note.
            self.gen, self.retiring[len(self.retiring) :] = fresh, [(self.gen, reason)]
        self.finish_cancels()

    def finish_cancels(self) -> None:
        """Cancel every generation `new_generation` replaced, until none is left.

        Then unwatch the groups a submit collected but a signal kept from
        handing over (`handoff`). A `BaseException` raised by a callback (or
        a signal) propagates once that generation's cancel is complete; the
        next call goes on with the rest.
        """
        retiring = self.retiring
        while retiring:
            entry = retiring[-1]
            try:
                entry[0].cancel(entry[1])  # a finished cancel returns at once
            finally:
                entry[0].sweep()  # what a signal in the cancel's callback left
            with self.lock:
                for i, other in enumerate(retiring):
                    if other is entry:
                        del retiring[i]
                        break
        # Groups forgotten by a submit that a signal broke off.
        with self.lock:
            stale = self.handoff()
        if stale:
            unwatch_all(stale)

    def release(self) -> None:
        """Detach the current generation from the executor's token (pool finished).

        A long-lived executor token must not keep a finished pool alive.
        """
        gen = self.gen
        gen.source.close()
        with self.lock:
            groups = list(gen.groups.values())
        unwatch_all(groups)


class Gen:
    """The tasks submitted since the pool's last `cancel_all` (a generation)."""

    __slots__ = ("board", "default", "groups", "lock", "reg", "source", "token")

    def __init__(self, board: Board) -> None:
        self.board = board
        # Orders a task finishing against the first thread that observes its
        # future, for every group of the generation; held for a few bytecodes
        # at a time. (One lock per group cost an allocation per submit token.)
        self.lock = allocate_lock()
        ex_token = board.ex_token
        self.source = (
            CancellationTokenSource() if ex_token is None else CancellationTokenSource(ex_token)
        )
        self.token = self.source.token
        self.groups: dict[CancellationToken | None, Group] = {}
        self.default = self.groups[None] = Group(self, None)
        self.reg = self.token.register(self._cancelled)

    def cancel(self, reason: object) -> None:
        """Cancel every task of the generation (the library's own cancel: errors logged)."""
        self.token._cancel_and_log(reason)

    def _cancelled(self) -> None:
        self.sweep()

    def sweep(self) -> None:
        """End every pending task of the cancelled generation and unwatch its groups.

        Idempotent: run by the generation token's cancel, and again by
        `Board.finish_cancels` in case a signal broke that run off.
        """
        with self.board.lock:
            groups = list(self.groups.values())
        first: BaseException | None = None
        remaining = iter(groups)
        while True:
            try:
                for group in remaining:
                    group.drain(self.token)
                    # A cancelled generation's groups never take a task again.
                    group.unwatch()
            except BaseException as error:  # every group is drained first
                if first is None:
                    first = error
                else:
                    _log_later_error(error)
                continue
            break
        if first is not None:
            try:
                raise first
            finally:
                first = None


def unwatch_all(groups: list[Group]) -> None:
    """`Group.unwatch` each of ``groups`` (emptying the list), whatever interrupts it.

    A group left watching a long-lived token would keep its pool alive, so
    a `BaseException` landing meanwhile is held until every group is done,
    then raised (later ones are logged).
    """
    first: BaseException | None = None
    while groups:
        try:
            while groups:
                # Unwatching is idempotent: the group leaves the list after.
                groups[-1].unwatch()
                groups.pop()
        except BaseException as error:
            if first is None:
                first = error
            else:
                _log_later_error(error)
    if first is not None:
        try:
            raise first
        finally:
            first = None


class Group(dict["CancellableFuture[Any]", bool]):
    """The pending tasks of one generation submitted with one token.

    The group is itself the dict of its pending tasks, and its own watcher
    on its token (``_fn``, ``_args`` and ``_token`` are what the token's
    cancel reads): no registration object per submit token, and no
    strong-link bookkeeping, since the group holds its token itself.
    """

    __slots__ = ("_args", "_fn", "_token", "board", "gen", "lock", "token", "watch")
    # A key in its token's registrations: identity, not a dict's contents.
    __hash__ = object.__hash__  # type: ignore[assignment]
    __eq__ = object.__eq__

    def __init__(self, gen: Gen, token: CancellationToken | None) -> None:
        self.lock = gen.lock
        self.board = gen.board
        self.gen = gen
        self.token = token
        self._fn: Callable[..., object] | None = None
        self._args: tuple[object, ...] = ()
        self._token: CancellationToken | None = None
        # Whether a claim needs bookkeeping beyond the pop itself.
        self.watch = token is not None or self.board.bounded

    @classmethod
    def registered(cls, gen: Gen, token: CancellationToken) -> Group:
        """A new, empty group watching ``token`` (unless it is already cancelled)."""
        group = cls(gen, token)
        group._fn = group
        try:
            if not token._watch(group):
                group._fn = None
            return group
        except BaseException:
            # Interrupted: never leave a watcher that nothing refers to (it
            # would keep the whole pool alive from a long-lived token).
            group.unwatch()
            raise

    def unwatch(self) -> None:
        """Stop watching the token (the group is forgotten or dead)."""
        token = self._token
        if token is not None:
            token._unwatch(self)
        self._fn = None

    @property
    def parents(self) -> tuple[CancellationToken, ...]:
        """The parents of its tasks' tokens."""
        token = self.token
        return (self.gen.token,) if token is None else (token, self.gen.token)

    def cancel_seen(self, future: CancellableFuture[Any]) -> CancellationToken | None:
        """The first token whose cancel reaches ``future`` and is already flagged."""
        token = self.token
        if token is not None and token._cancelled:
            return token
        gen_token = self.gen.token
        if gen_token._cancelled:
            return gen_token
        own = future._tok
        if own is not None and own._cancelled:
            return own
        sub = future._sub
        if sub is not None and sub._cancelled:
            return sub
        return None

    def settle(self, futures: Sequence[CancellableFuture[Any]]) -> bool:
        """Bookkeeping after ``futures`` left the group (started or ended): their
        slots go back, and an emptied group is noted for collection.

        Idempotent. Returns True, so that ``settled = group.settle(...)``
        records it in one statement (no signal lands between the call and the
        store).
        """
        board = self.board
        if self.token is not None and not self:
            board.empties.append(self)
        if board.bounded:
            board.free_slots(futures)
        return True

    def __call__(self) -> None:
        self.drain(self.token)

    def drain(self, cause: CancellationToken | None, error: BaseException | None = None) -> int:
        """End every pending task: cancelled by ``cause``, or failed with a copy of ``error``.

        Each batch's tasks are popped and their final states published before
        the first of their done-callbacks runs, so a callback may cancel,
        submit or wait on any sibling. A `BaseException` raised meanwhile (by
        a callback, or a signal) is held until every task of the group has
        ended, then raised as itself; later ones are logged.

        ``error`` is an exception used as a template: each task gets its own
        instance (a shared one would grow one traceback with every
        ``result()``). Returns how many tasks this call ended.
        """
        first: BaseException | None = None
        total = 0
        pop = self.popitem
        bounded = self.board.bounded
        while self:
            observed: list[CancellableFuture[Any]] = []
            # Every task popped, for their slots (only a bounded pool has any).
            popped: list[CancellableFuture[Any]] = []
            count = 0
            settled = False
            future = None
            try:
                try:
                    with self.lock:
                        for _ in range(_DRAIN_BATCH):
                            # One statement: a signal cannot separate the pop from the count.
                            future, count = pop()[0], count + 1
                            if bounded:
                                popped.append(future)
                            future._call = None
                            future._cargs = ()
                            future._ckwargs = None
                            future._ctx = None
                            sub = future._sub
                            if sub is not None:
                                # A solo task's watch of its submit token.
                                sub._unwatch_solo(future)
                            if error is None and future._sync is None and future._treg is None:
                                future._cause = cause
                                future._st = CANCELLED_AND_NOTIFIED
                                future._sync = _CXL
                                future._sub = None
                                future._group = None
                            else:
                                observed.append(future)
                            future = None
                except KeyError:
                    pass
                settled = self.settle(popped)
                for future in observed:
                    if error is None:
                        _publish(future, _CXL, None, None, cause)
                    else:
                        _publish(future, _FIN, None, _fresh(error), None)
            except BaseException as raised:  # a signal: what was popped still ends below
                first = first or raised
            finally:
                # Whatever interrupted the lines above, every task popped ends.
                if future is not None and not _published(future) and future not in observed:
                    observed.append(future)
                    if bounded and future not in popped:
                        popped.append(future)
                if not settled:
                    self.settle(popped)
                for future in observed:
                    if not _published(future):
                        _repair(future, None if error is None else _fresh(error), cause)
                total += count
            for future in observed:
                try:
                    _unregister_task_token(future)
                    _run_callbacks(future)
                except BaseException as raised:
                    if first is None:
                        first = raised
                    else:
                        _log_later_error(raised)
            del future
        if self.token is not None:
            self.board.empties.append(self)
        if first is not None:
            try:
                raise first
            finally:
                first = None
        return total


def _fresh(error: BaseException) -> BaseException:
    """A new instance like ``error``, for one future."""
    try:
        return type(error)(*error.args)
    except Exception:
        return error


def _log_later_error(error: BaseException) -> None:
    _log.error(
        "a further BaseException raised while ending tasks (only the first propagates)",
        exc_info=error,
    )


# -- transitions -----------------------------------------------------------------


_NO_KWARGS: Final[dict[str, Any]] = {}


def new_task(
    fn: Callable[..., _R], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> CancellableFuture[_R]:
    """A new task's future, holding its call and a copy of this thread's context."""
    future: CancellableFuture[_R] = _new(CancellableFuture)
    future._call = fn
    future._cargs = args
    # Share one empty dict rather than keep the call's own alive until the
    # task runs (``**`` copies it for the callee anyway).
    future._ckwargs = kwargs or _NO_KWARGS
    ctx = copy_context()
    if ctx:
        # Kept only if it holds something: a thread that never set a
        # context variable (most) gives each task a fresh empty context when
        # it runs, one less object per pending task for the collector.
        future._ctx = ctx
    return future


def claim(future: CancellableFuture[Any]) -> bool:
    """Take ownership of a pending task; False if someone else has it (or it ended)."""
    group = future._group
    return group is not None and group.pop(future, None) is not None


def start(future: CancellableFuture[Any]) -> bool:
    """Move a task this worker claimed to RUNNING; False if a cancel was seen.

    Frees its slot and settles its group first. Then it publishes RUNNING and
    reads the cancel flags (the module's Dekker-style argument): a task whose
    cancel has been seen never starts; it ends cancelled here instead.
    """
    group: Group = future._group  # type: ignore[assignment]
    if group.watch:
        group.settle((future,))
    future._st = RUNNING
    cause = group.cancel_seen(future)
    if cause is not None:
        _drop_call(future)
        end(future, _CXL, None, None, cause)
        return False
    _unregister_task_token(future)
    sub = future._sub
    if sub is not None:
        sub._unwatch_solo(future)
    return True


class WorkerRecord:
    """What one worker counts and runs, for `Board.statistics` and laggard reports.

    Only its worker writes it (no lock); readers sum the counts of every
    record, so the figures are exact whenever the pool is quiescent.
    """

    __slots__ = ("cancelled", "completed", "current", "failed", "ident", "name")

    def __init__(self, ident: int, name: str) -> None:
        self.ident = ident
        self.name = name
        # The task running now, else None.
        self.current: CancellableFuture[Any] | None = None
        self.completed = 0
        self.failed = 0
        # Ended cancelled by this worker: a cancel seen as it started, or an
        # OperationCancelledError escaping while its token was cancelled.
        self.cancelled = 0


def execute(future: CancellableFuture[Any], run: Callable[..., Any], record: WorkerRecord) -> None:
    """A worker's whole turn with one task it took from the queue.

    `claim`, `start`, the call and the finish, written out inline because
    this is the pool's hot path (each function call saved is about 5% of a
    no-op task). ``run(future, fn, args, kwargs)`` calls the task in its
    context.
    """
    group = future._group
    if group is None or group.pop(future, None) is None:
        return  # cancelled while pending
    if group.watch:
        group.settle((future,))
    future._st = RUNNING
    token = group.token
    own = future._tok
    sub = future._sub
    if (
        (token is not None and token._cancelled)
        or group.gen.token._cancelled
        or (own is not None and own._cancelled)
        or (sub is not None and sub._cancelled)
    ):
        # A cancel was seen before the task started: it never starts.
        _drop_call(future)
        record.cancelled += 1
        end(future, _CXL, None, None, group.cancel_seen(future))
        return
    hook = future._treg
    if hook is not None:
        future._treg = None
        hook.unwatch()
    if sub is not None:
        # As `_unwatch_solo`, written out: it is the token's one statement
        # per solo task on this path.
        if sub._solo is future:
            sub._solo = None
        future._token = None
    # The call stays on the future while it runs (a laggard report names it).
    record.current = future
    try:
        ctx = future._ctx
        if ctx is None:
            ctx = Context()
        result = ctx.run(run, future, future._call, future._cargs, future._ckwargs)
    except BaseException as error:
        record.current = None
        _drop_call(future)
        if isinstance(error, OperationCancelledError) and own_token_cancelled(future):
            record.cancelled += 1
            end(future, _CXL, None, None, future.token)
        else:
            record.failed += 1
            end(future, _FIN, None, error, None)
        del error
        return
    record.current = None
    record.completed += 1
    future._call = None
    future._cargs = ()
    future._ckwargs = None
    future._ctx = None
    if future._sync is None:
        with group.lock:
            if future._sync is None:
                # Nobody observes it: no condition, no waiters, no callbacks.
                future._result = result
                future._st = FINISHED
                future._sync = _FIN
                future._sub = None
                future._group = None
                return
    end(future, _FIN, result, None, None)


def context_run_target(fn: partial[Any]) -> Context | None:
    """The context ``fn`` runs its first argument in, if it is ``partial(ctx.run, f, ...)``.

    That is how `asyncio.to_thread` hands a call to an executor.
    """
    run = fn.func
    ctx = getattr(run, "__self__", None)
    if type(ctx) is Context and getattr(run, "__name__", None) == "run" and fn.args:
        return ctx
    return None


def callable_name(fn: Callable[..., Any]) -> str:
    """``fn``'s qualified name, seen through `functools.partial` and `Context.run` wrappers."""
    for _ in range(100):  # a bound on a pathological chain of partials
        if type(fn) is not partial:
            break
        fn = fn.args[0] if context_run_target(fn) is not None else fn.func
    qualname = getattr(fn, "__qualname__", None)
    return qualname if isinstance(qualname, str) else repr(fn)


def _task_stack(frame: Any) -> str:
    """A worker's stack from the task's own frames on (the pool's frames left out)."""
    entries = traceback.extract_stack(frame)
    for index, entry in enumerate(entries):
        if entry.name == "_run_task" and entry.filename.endswith("_executor.py"):
            entries = traceback.StackSummary.from_list(entries[index + 1 :])
            break
    return "".join(entries.format())


def cancel_time(future: CancellableFuture[Any]) -> tuple[float, object] | None:
    """When the earliest cancel that reaches a running task happened, and its reason."""
    group = future._group
    if group is None:
        return None
    seen = [
        token
        for token in (group.token, group.gen.token, future._tok, future._sub)
        if token is not None and token._cancelled
    ]
    if not seen:
        return None
    first = min(seen, key=lambda token: token._cancelled_at)
    return first._cancelled_at, first._reason


def own_token_cancelled(future: CancellableFuture[Any]) -> bool:
    """Whether a running task's own token is cancelled (or will be: a parent is)."""
    token = future._tok
    if token is not None:
        return token._cancelled
    group = future._group
    return group is not None and group.cancel_seen(future) is not None


def cancel_pending(future: CancellableFuture[Any], cause: CancellationToken | None) -> bool:
    """End ``future`` cancelled if it is pending and unclaimed; True if this call did.

    Its callbacks run on this thread, after the bookkeeping.
    """
    group = future._group
    if group is None:
        return False
    won = settled = False
    try:
        won = group.pop(future, None) is not None
        if not won:
            return False
        _drop_call(future)
        settled = group.settle((future,))
        end(future, _CXL, None, None, cause)
    except BaseException:
        if won:
            if not settled:
                group.settle((future,))
            _repair(future, None, cause)
        raise
    return True


def reject(future: CancellableFuture[Any], cause: CancellationToken) -> None:
    """End a task that `Board.enqueue` found already cancelled (it was never queued)."""
    _drop_call(future)
    end(future, _CXL, None, None, cause)


def _drop_call(future: CancellableFuture[Any]) -> None:
    # What the task would have run: let it go as soon as the task cannot start.
    future._call = None
    future._cargs = ()
    future._ckwargs = None
    future._ctx = None


def end(
    future: CancellableFuture[Any],
    final: _Final,
    result: Any,
    exception: BaseException | None,
    cause: CancellationToken | None,
) -> None:
    """Publish a final state, then remove the task token's hook, then run callbacks."""
    try:
        _publish(future, final, result, exception, cause)
    except BaseException:
        _repair(future, exception, cause, final)
        raise
    _unregister_task_token(future)
    _run_callbacks(future)


def _repair(
    future: CancellableFuture[Any],
    error: BaseException | None,
    cause: CancellationToken | None,
    final: _Final | None = None,
) -> None:
    """Finish a publication that a signal interrupted (the future must end).

    A publication is complete once the task has let go of its group (its
    last step); `_publish` resumes one that a signal broke off half-way.
    """
    if _published(future):
        return
    if final is None:
        final = _CXL if error is None else _FIN
    _publish(future, final, None, error, cause)


def _publish(
    future: CancellableFuture[Any],
    final: _Final,
    result: Any,
    exception: BaseException | None,
    cause: CancellationToken | None,
) -> None:
    """Store the final state and notify waiters; done-callbacks are left to run."""
    sync = future._sync
    if sync is None:
        group = future._group
        if group is not None:
            with group.lock:
                if future._sync is None:
                    # Nobody observes it: no condition, no waiters, no callbacks.
                    future._result = result
                    future._exception = exception
                    future._cause = cause
                    future._st = final.state
                    future._sync = final
                    _let_go_of_sub(future)
                    future._group = None
                    return
        sync = future._sync
    if sync.__class__ is _Final:
        if future._group is not None and future._st == sync.state:
            _let_go_of_sub(future)
            future._group = None  # the last step of an interrupted publication
            return
        raise InvalidStateError(f"{future._state}: {future!r}")
    cond = sync.cond  # type: ignore[union-attr]
    with cond:
        state = future._st
        if state in _DONE_STATES and not (state == CANCELLED and final is _CXL):
            if future._group is None or state != final.state:
                raise InvalidStateError(f"{state}: {future!r}")
            # Published by a call that a signal broke off: go on from where
            # it stopped (the state and its fields are written).
        else:
            future._result = result
            future._exception = exception
            future._cause = cause
            future._st = final.state
        waiters = sync.waiters  # type: ignore[union-attr]
        if waiters:
            if final is _CXL:
                tell = "add_cancelled"
            elif future._exception is None:
                tell = "add_result"
            else:
                tell = "add_exception"
            while sync.told < len(waiters):  # type: ignore[union-attr]
                # One statement: a waiter told is counted (never told twice).
                sync.told = getattr(waiters[sync.told], tell)(future) or sync.told + 1  # type: ignore[union-attr]
        cond.notify_all()
    _let_go_of_sub(future)
    future._group = None


def _let_go_of_sub(future: CancellableFuture[Any]) -> None:
    # An ended solo task stops watching its submit token and lets it go.
    sub = future._sub
    if sub is not None:
        sub._unwatch_solo(future)
        future._sub = None


def _unregister_task_token(future: CancellableFuture[Any]) -> None:
    hook = future._treg
    if hook is not None:
        future._treg = None
        hook.unwatch()


class _PendingHook:
    """A pending task's watcher on its own token: its cancel ends the task.

    A watcher (`CancellationToken._watch`), not a registration, so it runs
    before any callback a user registered on the task's token: those find
    the task ended and its slot free.
    """

    __slots__ = ("_args", "_fn", "_token")

    def __init__(self, future: CancellableFuture[Any]) -> None:
        self._fn: Callable[..., object] | None = _own_token_cancelled
        self._args: tuple[object, ...] = (future,)
        self._token: CancellationToken | None = None

    def unwatch(self) -> None:
        token = self._token
        if token is not None:
            token._unwatch(self)
        self._args = ()


def _own_token_cancelled(future: CancellableFuture[Any]) -> None:
    cancel_pending(future, future._tok)


def _run_callbacks(future: CancellableFuture[Any]) -> None:
    """Run (and forget) a done future's callbacks.

    Exceptions are logged to the ``concurrent.futures`` logger, as the stdlib
    does. A `BaseException` (KeyboardInterrupt, SystemExit) does not stop the
    other callbacks: the first is raised once they all ran, later ones are
    logged to the ``cancellable`` logger.
    """
    sync = future._sync
    if sync is None or sync.__class__ is _Final:
        return
    callbacks = sync.callbacks  # type: ignore[union-attr]
    if not callbacks:
        return
    sync.callbacks = []  # type: ignore[union-attr]
    first: BaseException | None = None
    remaining = iter(callbacks)
    while True:
        try:
            for callback in remaining:
                try:
                    callback(future)
                except Exception:
                    LOGGER.exception("exception calling callback for %r", future)
        except BaseException as error:  # a callback's, or a signal between two
            if first is None:
                first = error
            else:
                _log_later_error(error)
            continue  # with the next callback
        break
    if first is not None:
        try:
            raise first
        finally:
            first = None


# -- the future --------------------------------------------------------------------


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
    _group: Group | None = None
    _tok: CancellationToken | None = None
    # The task token's hook while the task is pending.
    _treg: _PendingHook | None = None
    _cause: CancellationToken | None = None
    # The task's call, until it runs or cannot.
    _call: Callable[..., Any] | None = None
    _cargs: tuple[Any, ...] = ()
    _ckwargs: dict[str, Any] | None = None
    _ctx: Context | None = None
    # A solo task: the submit token it watches itself (no group), kept
    # until the task ends. The watch is the future itself, with the fields a
    # token's cancel reads (`CancellationToken._watch_solo`): ``_token``
    # while it watches, and ``_fn(*_args)``, which ends it cancelled.
    _sub: CancellationToken | None = None
    _token: CancellationToken | None = None
    _args: tuple[Any, ...] = ()
    # Set when asyncio chains this future (wrap_future): then a cancel() of
    # the asyncio side that cannot cancel a running task cancels its token.
    _awaited_from_asyncio: bool = False

    def __init__(self) -> None:
        """Create a standalone future (executors create theirs themselves)."""
        self._sync = _Sync()

    def _fn(self) -> None:
        # A solo task's watch (see ``_sub``): its submit token was cancelled.
        cancel_pending(self, self._sub)

    # -- what the stdlib's wait() and as_completed() read ----------------------

    def _ensure_sync(self) -> _Sync | _Final:
        sync = self._sync
        if sync is None:
            # Only executor futures start without one; their group's lock
            # orders this against _publish.
            group = self._group
            if group is None:
                # _publish stores the final state before letting the group go.
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

    # Code written before ``shutdown(cancel_futures=True)`` drained the
    # stdlib's ``_work_queue`` and called ``item.future.cancel()``; here the
    # queue holds the futures themselves.
    @property
    def future(self) -> CancellableFuture[_R]:
        """This future (what the stdlib's work items call ``future``)."""
        return self

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
        run now, on this thread. Never blocks on the task. To signal a running
        task, use `request_cancel`.
        """
        if self._group is None:
            # A standalone future, or an executor task that has ended.
            return self._cancel_standalone()
        if cancel_pending(self, None):
            return True
        cancelled = _await_claim(self) in _CANCELLED_STATES
        if not cancelled and self._awaited_from_asyncio:
            from ._asyncio import cancel_from_asyncio  # noqa: PLC0415 (import cycle)

            cancel_from_asyncio(self)
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
        _run_callbacks(self)
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
            timeout = min(timeout, threading.TIMEOUT_MAX)
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
        waker = _Waker(cond)
        try:
            token._watch(waker)
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
                        cond.wait(min(remaining, threading.TIMEOUT_MAX))
        finally:
            # C operations only (see Board.reserve_slot).
            (token._watchers or _NO_WATCHERS).pop(waker, None)

    def add_done_callback(self, fn: Callable[[Future[_R]], object]) -> None:
        """Call ``fn(future)`` when the task is done (now, on this thread, if it is).

        Callbacks run in the order added, on the thread that finishes or
        cancels the task, after every piece of the pool's bookkeeping for that
        step; an exception from one is logged and ignored, a `BaseException`
        propagates once the other callbacks ran.
        """
        if getattr(fn, "__name__", None) == "_call_set_state":
            # asyncio's wrap_future chaining callback (see _asyncio.py).
            from ._asyncio import note_done_callback  # noqa: PLC0415 (import cycle)

            note_done_callback(self, fn)
        sync = self._ensure_sync()
        if sync.__class__ is not _Final:
            with sync.cond:  # type: ignore[union-attr]
                if self._st not in _DONE_STATES:
                    sync.callbacks.append(fn)  # type: ignore[union-attr]
                    return
        try:
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    def set_running_or_notify_cancel(self) -> bool:
        """Mark the future running, or report that it was cancelled (for executors).

        Returns:
            False if it was cancelled, True if it is now running.

        Raises:
            RuntimeError: It is neither pending nor cancelled.
        """
        if self._group is not None:
            if claim(self):
                return start(self)
            if _await_claim(self) in _CANCELLED_STATES:
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
        end(self, _FIN, result, None, None)

    def set_exception(self, exception: BaseException | None) -> None:
        """Set the exception (for executors and tests).

        Raises:
            InvalidStateError: The future is already done.
        """
        if self._state in _DONE_STATES:
            raise InvalidStateError(f"{self._state}: {self!r}")
        end(self, _FIN, None, exception, None)

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
            sub = self._sub
            _link(token, group.parents if sub is None else (sub, group.gen.token))
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
            hook = _PendingHook(self)
            self._treg = hook
            if not token._watch(hook):
                # Born cancelled (a parent already was): the task ends now.
                self._treg = None
                cancel_pending(self, token)
            elif self._st != PENDING:
                # Started (or ended) meanwhile: a worker may have missed the
                # hook still being added. Removing it twice is harmless.
                self._treg = None
                hook.unwatch()
        return token

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
