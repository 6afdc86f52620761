"""The executor driven at random and checked against a sequential model.

Every task blocks on its own gate Event until the test says how it ends
(returns, raises, checks its token, raises a foreign `OperationCancelledError`),
so the model always knows which tasks run and which wait: with ``WORKERS``
workers and a FIFO queue, the first ``WORKERS`` live tasks run and the rest
wait. After every step the test waits for the pool to reach the state the model
predicts (started tasks provably started, finished tasks done) and compares
each future's state, result or exception, and the done-callbacks that ran.

Half of the futures get a done-callback at submit time, so both the
unobserved fast path and the observed path of `CancellableFuture` are driven.
Some done-callbacks call back into the pool (``cancel()`` or
``request_cancel()`` of the next task, whatever its state then), and the model
applies the same call when the task ends. A run draws whether the pool has
``max_pending``: then the model never submits past the bound from the test
thread (that would block), and one rule submits from another thread into a
full pool and checks that cancelling a pending task lets it through. Tasks
also come from ``map``; a rule consumes a map's next result once the model
says it is final, and an error there cancels the rest of that map's calls.
Every call that cancels runs under a bound, so a spin or a deadlock fails
the example instead of hanging the run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from _faults import run_bounded
from cancellable import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancellationTokenSource,
    OperationCancelledError,
    current_token,
)

WORKERS = 2
MAX_PENDING = 3
SOURCES = 3
WAIT = 10  # seconds; only a lost wake-up or a wrong model would need it
_PICK = st.integers(0, 1_000)
_SOURCE = st.none() | st.integers(0, SOURCES - 1)
_HOW = st.sampled_from(["return", "raise", "cooperate", "foreign"])
# What a done-callback does to the next (or previous) task when its own ends.
_REENTRANT = st.sampled_from(
    [None, None, None, "cancel next", "cancel previous", "request next", "request previous"]
)

PENDING, RUNNING, CANCELLED, RETURNED, RAISED = (
    "pending",
    "running",
    "cancelled",
    "returned",
    "raised",
)


class TaskError(Exception):
    """What a task raises when told to fail."""


@dataclass(eq=False)
class _Task:
    index: int
    source: int | None
    gen: int
    future: CancellableFuture[int] | None  # None for map's tasks
    observed: bool
    reentrant: str | None = None
    map_id: int | None = None
    started: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)
    how: str = "return"
    runs: int = 0
    callbacks: int = 0
    state: str = PENDING
    error: type[BaseException] | None = None
    requested: bool = False
    # Ended cancelled while pending: its done-callbacks must have run already.
    at_once: bool = False
    # The model applied the done-callback's call into the pool.
    reentered: bool = False
    ended: threading.Event = field(default_factory=threading.Event)
    callbacks_done: threading.Event = field(default_factory=threading.Event)

    @property
    def has_callback(self) -> bool:
        return self.observed or self.reentrant is not None


@dataclass(eq=False)
class _Map:
    """A ``map`` call: its tasks in order and how far it was consumed."""

    id: int
    tasks: list[_Task]
    results: Iterator[int]
    pos: int = 0
    over: bool = False

    def next_is_final(self) -> bool:
        return not self.over and (
            self.pos == len(self.tasks) or self.tasks[self.pos].state in _FINAL
        )


_FINAL = (CANCELLED, RETURNED, RAISED)


def _body(task: _Task) -> int:
    try:
        return _run(task)
    finally:
        task.ended.set()


def _run(task: _Task) -> int:
    task.runs += 1
    task.started.set()
    task.gate.wait()
    if task.how == "raise":
        raise TaskError(task.index)
    if task.how == "cooperate":
        current_token().raise_if_cancellation_requested()
    elif task.how == "foreign":
        other = CancellationTokenSource()
        other.cancel("not the task's own token")
        other.token.raise_if_cancellation_requested()
    return task.index


class ExecutorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ex_source = CancellationTokenSource()
        self.bounded = False
        self.pool = CancellableThreadPoolExecutor(WORKERS, token=self.ex_source.token)
        self.maps: list[_Map] = []
        self.cancelled_maps: set[int] = set()
        self.sources = [CancellationTokenSource() for _ in range(SOURCES)]
        # Which source each slot holds now (tasks remember the id, not the slot).
        self.source_ids = list(range(SOURCES))
        self.cancelled_sources: set[int] = set()
        self.ex_cancelled = False
        self.gen = 0
        self.cancelled_gens: set[int] = set()
        self.shut = False
        self.tasks: list[_Task] = []

    # -- the model -----------------------------------------------------------

    def _own_cancelled(self, task: _Task) -> bool:
        return (
            task.requested
            or task.map_id in self.cancelled_maps
            or self.ex_cancelled
            or task.gen in self.cancelled_gens
            or (task.source is not None and task.source in self.cancelled_sources)
        )

    def _settle(self) -> None:
        """Apply cancellations and the callbacks' calls, then start tasks on free workers.

        Cancelling and the calls done-callbacks make only ever move pending
        tasks to cancelled and mark tasks requested, so their fixpoint does
        not depend on the order in which the pool ran the callbacks.
        """
        changed = True
        while changed:
            changed = False
            for task in self.tasks:
                if task.state == PENDING and self._own_cancelled(task):
                    task.state = CANCELLED
                    task.at_once = True
                    changed = True
            for task in self.tasks:
                if task.state in _FINAL and task.reentrant and not task.reentered:
                    task.reentered = True
                    changed = True
                    self._reenter_model(task)
        running = sum(task.state == RUNNING for task in self.tasks)
        for task in self.tasks:
            if running == WORKERS:
                break
            if task.state == PENDING:
                task.state = RUNNING
                running += 1

    def _target(self, task: _Task) -> _Task | None:
        """The task a re-entrant callback of ``task`` acts on, as the tasks are now."""
        assert task.reentrant is not None
        index = task.index + (1 if task.reentrant.endswith("next") else -1)
        if not 0 <= index < len(self.tasks):
            return None  # e.g. the callback ran before any later task existed
        target = self.tasks[index]
        return target if target.future is not None else None  # map tasks are out of reach

    def _reenter_model(self, task: _Task) -> None:
        target = self._target(task)
        if target is None:
            return
        if task.reentrant.startswith("cancel"):  # type: ignore[union-attr]
            if target.state == PENDING:
                target.state = CANCELLED
                target.at_once = True
        elif target.state in (PENDING, RUNNING):
            target.requested = True

    def _reenter(self, task: _Task) -> None:
        """What a re-entrant done-callback does (on whichever thread ends ``task``)."""
        target = self._target(task)
        if target is None:
            return
        future = target.future
        assert future is not None
        if task.reentrant.startswith("cancel"):  # type: ignore[union-attr]
            future.cancel()
        else:
            future.request_cancel("from a done-callback")

    def _in_state(self, state: str, pick: int) -> _Task:
        matching = [task for task in self.tasks if task.state == state]
        return matching[pick % len(matching)]

    def _with_future(self, pick: int) -> _Task:
        matching = [task for task in self.tasks if task.future is not None]
        return matching[pick % len(matching)]

    def _count(self, state: str) -> int:
        return sum(task.state == state for task in self.tasks)

    def _full(self, adding: int = 1) -> bool:
        """Whether submitting ``adding`` tasks now would block on ``max_pending``."""
        if not self.bounded:
            return False
        free = WORKERS - self._count(RUNNING)
        return max(0, self._count(PENDING) + adding - free) > MAX_PENDING

    @staticmethod
    def _bounded(what: str, fn: Callable[[], object]) -> object:
        outcome = run_bounded(fn, WAIT)
        assert outcome.finished, f"{what} did not return (deadlock or spin)"
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    def _has(self, state: str) -> bool:
        return any(task.state == state for task in self.tasks)

    # -- rules ---------------------------------------------------------------

    @initialize(
        first=st.lists(st.tuples(_SOURCE, st.booleans()), min_size=1, max_size=2 * WORKERS + 1),
        bounded=st.booleans(),
    )
    def submit_some(self, first: list[tuple[int | None, bool]], bounded: bool) -> None:
        if bounded:
            self.pool.shutdown(wait=True)
            self.bounded = True
            self.pool = CancellableThreadPoolExecutor(
                WORKERS, token=self.ex_source.token, max_pending=MAX_PENDING
            )
        for source, observed in first:
            self.submit(source, observed, None)

    # Two rules that submit, so that runs hold enough tasks to be interesting.
    @rule(source=_SOURCE, observed=st.booleans(), reentrant=_REENTRANT)
    def submit_again(self, source: int | None, observed: bool, reentrant: str | None) -> None:
        self.submit(source, observed, reentrant)

    @rule(source=_SOURCE, observed=st.booleans(), reentrant=_REENTRANT)
    def submit(self, source: int | None, observed: bool, reentrant: str | None) -> None:
        token = None if source is None else self.sources[source].token
        index = len(self.tasks)
        if self._full() and not self.shut:
            return  # it would block this thread: see submit_waits_for_a_slot
        if self.shut:
            with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
                self.pool.submit(_body, None, token=token)
            return
        # The task object must exist before the worker can run the body.
        source_id = None if source is None else self.source_ids[source]
        task = _Task(index, source_id, self.gen, None, observed, reentrant)
        future = self.pool.submit(_body, task, token=token)
        task.future = future
        self._add_callback(task)
        self.tasks.append(task)
        self._settle()

    def _add_callback(self, task: _Task) -> None:
        if not task.has_callback:
            return

        def on_done(_: Future[int], task: _Task = task) -> None:
            task.callbacks += 1
            try:
                if task.reentrant is not None:
                    self._reenter(task)
            finally:
                task.callbacks_done.set()

        assert task.future is not None
        task.future.add_done_callback(on_done)

    @precondition(lambda self: self.bounded and not self.shut and self._full())
    @rule(pick=_PICK)
    def submit_waits_for_a_slot(self, pick: int) -> None:
        # The pool is full: a submit from another thread blocks until
        # cancelling a pending task hands its slot on.
        victims = [t for t in self.tasks if t.state == PENDING and t.future is not None]
        if not victims:
            return  # only map tasks wait: nothing this rule can cancel
        victim = victims[pick % len(victims)]
        task = _Task(len(self.tasks), None, self.gen, None, False)
        box: dict[str, CancellableFuture[int]] = {}
        submitter = threading.Thread(
            target=lambda: box.setdefault("future", self.pool.submit(_body, task)), daemon=True
        )
        submitter.start()
        assert victim.future is not None
        assert self._bounded("future.cancel()", victim.future.cancel) is True
        victim.state = CANCELLED
        victim.at_once = True
        self._settle()  # the victim's callbacks ran before the new task existed
        submitter.join(WAIT)
        assert not submitter.is_alive(), "the freed slot did not reach the blocked submit"
        task.future = box["future"]
        self.tasks.append(task)
        self._settle()

    @rule(source=_SOURCE, count=st.integers(1, 3))
    def map_some(self, source: int | None, count: int) -> None:
        token = None if source is None else self.sources[source].token
        if self.shut:
            probe = _Task(-1, None, self.gen, None, False)
            with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
                self.pool.map(_body, [probe], token=token)
            return
        if self._full(count):
            return
        source_id = None if source is None else self.source_ids[source]
        map_id = len(self.maps)
        start = len(self.tasks)
        tasks = [
            _Task(start + i, source_id, self.gen, None, False, map_id=map_id) for i in range(count)
        ]
        results = self.pool.map(_body, tasks, token=token)
        self.tasks.extend(tasks)
        self.maps.append(_Map(map_id, tasks, results))
        self._settle()

    @precondition(lambda self: any(m.next_is_final() for m in self.maps))
    @rule(pick=_PICK)
    def consume_map(self, pick: int) -> None:
        ready = [m for m in self.maps if m.next_is_final()]
        m = ready[pick % len(ready)]
        if m.pos == len(m.tasks):
            with pytest.raises(StopIteration):
                next(m.results)
            m.over = True
            return
        task = m.tasks[m.pos]
        if task.state == RETURNED:
            assert next(m.results) == task.index
            m.pos += 1
            return
        expected = CancelledError if task.state == CANCELLED else task.error
        assert expected is not None
        with pytest.raises(expected):
            next(m.results)
        # The iterator stopped early: it cancels every call not yielded yet.
        m.over = True
        self.cancelled_maps.add(m.id)
        self._settle()

    @rule(source=st.integers(0, SOURCES - 1))
    def cancel_source(self, source: int) -> None:
        self._bounded("cancel()", lambda: self.sources[source].cancel(f"source {source}"))
        self.cancelled_sources.add(self.source_ids[source])
        self._settle()

    @rule(source=st.integers(0, SOURCES - 1))
    def replace_source(self, source: int) -> None:
        self.sources[source] = CancellationTokenSource()
        self.source_ids[source] = max(self.source_ids) + 1

    @rule()
    def cancel_executor_token(self) -> None:
        self._bounded("the executor token's cancel()", lambda: self.ex_source.cancel("executor"))
        self.ex_cancelled = True
        self._settle()

    @rule()
    def cancel_all(self) -> None:
        self._bounded("cancel_all()", lambda: self.pool.cancel_all("cancel_all"))
        self.cancelled_gens.add(self.gen)
        self.gen += 1
        self._settle()

    @precondition(lambda self: bool(self.tasks))
    @rule(pick=_PICK)
    def future_cancel(self, pick: int) -> None:
        task = self._with_future(pick)
        expected = task.state in (PENDING, CANCELLED)
        assert task.future is not None
        assert self._bounded("future.cancel()", task.future.cancel) is expected
        if task.state == PENDING:
            task.state = CANCELLED
            task.at_once = True
        self._settle()

    @precondition(lambda self: bool(self.tasks))
    @rule(pick=_PICK)
    def request_cancel(self, pick: int) -> None:
        task = self._with_future(pick)
        future = task.future
        assert future is not None
        self._bounded("request_cancel()", lambda: future.request_cancel("one task"))
        if task.state in (PENDING, RUNNING):
            task.requested = True
        self._settle()

    @precondition(lambda self: self._has(RUNNING))
    @rule(pick=_PICK, how=_HOW)
    def finish(self, pick: int, how: str) -> None:
        task = self._in_state(RUNNING, pick)
        task.how = how
        if how == "return":
            task.state = RETURNED
        elif how == "raise":
            task.state, task.error = RAISED, TaskError
        elif how == "cooperate":
            task.state = CANCELLED if self._own_cancelled(task) else RETURNED
        elif self._own_cancelled(task):
            task.state = CANCELLED
        else:
            task.state, task.error = RAISED, OperationCancelledError
        task.gate.set()
        # The worker ends the future and runs its callbacks, then takes the
        # next task: wait for all that.
        if task.future is None:
            assert task.ended.wait(WAIT)
        else:
            with contextlib.suppress(OperationCancelledError):
                task.future.exception(timeout=WAIT)
            if task.has_callback:
                assert task.callbacks_done.wait(WAIT)
        self._settle()

    @rule(cancel_futures=st.booleans())
    def shutdown_nowait(self, cancel_futures: bool) -> None:
        self._bounded(
            "shutdown(wait=False)",
            lambda: self.pool.shutdown(wait=False, cancel_futures=cancel_futures),
        )
        self.shut = True
        if cancel_futures:
            self.cancelled_gens.add(self.gen)
        self._settle()

    @precondition(lambda self: not self._has(RUNNING))
    @rule(cancel_futures=st.booleans())
    def shutdown_wait(self, cancel_futures: bool) -> None:
        # Nothing runs, so only pending tasks could make it wait; there are none
        # either (they would be running), so this returns once workers exit.
        self._bounded(
            "shutdown(wait=True)",
            lambda: self.pool.shutdown(wait=True, cancel_futures=cancel_futures),
        )
        self.shut = True
        if cancel_futures:
            self.cancelled_gens.add(self.gen)
        assert not any(thread.is_alive() for thread in self.pool._threads)
        self._settle()

    # -- checks --------------------------------------------------------------

    @invariant()
    def futures_match_the_model(self) -> None:
        for task in self.tasks:
            self._check(task)

    def _check(self, task: _Task) -> None:
        future = task.future
        if future is None:
            # One of map's tasks: its future is seen only through the iterator.
            if task.state == PENDING:
                assert not task.started.is_set(), task
            elif task.state == RUNNING:
                assert task.started.wait(WAIT), task
            else:
                assert task.runs == (0 if task.at_once else 1), task
            return
        if task.state == PENDING:
            assert not future.done(), task
            assert not task.started.is_set(), task
            return
        if task.state == RUNNING:
            assert task.started.wait(WAIT), task
            assert future.running(), task
            assert not future.done(), task
            return
        if task.at_once:
            # Cancelled while pending: done now, callbacks already run, never started.
            assert future.cancelled(), task
            assert task.runs == 0, task
            assert task.callbacks == task.has_callback, task
            return
        if task.state == CANCELLED:
            assert future.cancelled(), task
            with pytest.raises(OperationCancelledError):
                future.result(timeout=0)
        elif task.state == RETURNED:
            assert future.result(timeout=0) == task.index, task
        else:
            error = future.exception(timeout=0)
            assert type(error) is task.error, (task, error)
        assert task.runs == 1, task

    def teardown(self) -> None:
        try:
            # Everything still live runs to its end and returns, one task at
            # a time as the model predicts (a re-entrant callback of one may
            # still cancel the next).
            while self._has(RUNNING):
                self.finish(0, "return")
            assert not self._has(PENDING)
            self._bounded("shutdown(wait=True)", lambda: self.pool.shutdown(wait=True))
            for task in self.tasks:
                self._check(task)
                if task.future is None:
                    continue
                assert task.callbacks == task.has_callback, task
                done_now: list[Any] = []
                task.future.add_done_callback(done_now.append)  # runs at once: it is done
                assert done_now == [task.future]
            assert not any(thread.is_alive() for thread in self.pool._threads)
        finally:
            for task in self.tasks:
                task.gate.set()
            for m in self.maps:
                m.results.close()  # type: ignore[attr-defined]
            self.pool.shutdown(wait=False, cancel_futures=True)


ExecutorMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_executor_matches_the_sequential_model = pytest.mark.slow(ExecutorMachine.TestCase)
