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
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cancellable import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancellationTokenSource,
    OperationCancelledError,
    current_token,
)

WORKERS = 2
SOURCES = 3
WAIT = 10  # seconds; only a lost wake-up or a wrong model would need it
_PICK = st.integers(0, 1_000)
_SOURCE = st.none() | st.integers(0, SOURCES - 1)
_HOW = st.sampled_from(["return", "raise", "cooperate", "foreign"])

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
    future: CancellableFuture[int]
    observed: bool
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


def _body(task: _Task) -> int:
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
        self.pool = CancellableThreadPoolExecutor(WORKERS, token=self.ex_source.token)
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
            or self.ex_cancelled
            or task.gen in self.cancelled_gens
            or (task.source is not None and task.source in self.cancelled_sources)
        )

    def _settle(self) -> None:
        """Apply cancellations to pending tasks, then start tasks on free workers."""
        for task in self.tasks:
            if task.state == PENDING and self._own_cancelled(task):
                task.state = CANCELLED
                task.at_once = True
        running = sum(task.state == RUNNING for task in self.tasks)
        for task in self.tasks:
            if running == WORKERS:
                break
            if task.state == PENDING:
                task.state = RUNNING
                running += 1

    def _in_state(self, state: str, pick: int) -> _Task:
        matching = [task for task in self.tasks if task.state == state]
        return matching[pick % len(matching)]

    def _has(self, state: str) -> bool:
        return any(task.state == state for task in self.tasks)

    # -- rules ---------------------------------------------------------------

    @initialize(
        first=st.lists(st.tuples(_SOURCE, st.booleans()), min_size=1, max_size=2 * WORKERS + 1)
    )
    def submit_some(self, first: list[tuple[int | None, bool]]) -> None:
        for source, observed in first:
            self.submit(source, observed)

    # Two rules that submit, so that runs hold enough tasks to be interesting.
    @rule(source=_SOURCE, observed=st.booleans())
    def submit_again(self, source: int | None, observed: bool) -> None:
        self.submit(source, observed)

    @rule(source=_SOURCE, observed=st.booleans())
    def submit(self, source: int | None, observed: bool) -> None:
        token = None if source is None else self.sources[source].token
        index = len(self.tasks)
        if self.shut:
            with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
                self.pool.submit(_body, None, token=token)
            return
        # The task object must exist before the worker can run the body.
        source_id = None if source is None else self.source_ids[source]
        task = _Task(index, source_id, self.gen, None, observed)  # type: ignore[arg-type]
        future = self.pool.submit(_body, task, token=token)
        task.future = future
        if observed:

            def count(_: Future[int], task: _Task = task) -> None:
                task.callbacks += 1

            future.add_done_callback(count)
        self.tasks.append(task)
        self._settle()

    @rule(source=st.integers(0, SOURCES - 1))
    def cancel_source(self, source: int) -> None:
        self.sources[source].cancel(f"source {source}")
        self.cancelled_sources.add(self.source_ids[source])
        self._settle()

    @rule(source=st.integers(0, SOURCES - 1))
    def replace_source(self, source: int) -> None:
        self.sources[source] = CancellationTokenSource()
        self.source_ids[source] = max(self.source_ids) + 1

    @rule()
    def cancel_executor_token(self) -> None:
        self.ex_source.cancel("executor")
        self.ex_cancelled = True
        self._settle()

    @rule()
    def cancel_all(self) -> None:
        self.pool.cancel_all("cancel_all")
        self.cancelled_gens.add(self.gen)
        self.gen += 1
        self._settle()

    @precondition(lambda self: bool(self.tasks))
    @rule(pick=_PICK)
    def future_cancel(self, pick: int) -> None:
        task = self.tasks[pick % len(self.tasks)]
        expected = task.state in (PENDING, CANCELLED)
        assert task.future.cancel() is expected
        if task.state == PENDING:
            task.state = CANCELLED
            task.at_once = True
        self._settle()

    @precondition(lambda self: bool(self.tasks))
    @rule(pick=_PICK)
    def request_cancel(self, pick: int) -> None:
        task = self.tasks[pick % len(self.tasks)]
        task.future.request_cancel("one task")
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
        # The worker ends the future, then takes the next task: wait for the end.
        with contextlib.suppress(OperationCancelledError):
            task.future.exception(timeout=WAIT)
        self._settle()

    @rule(cancel_futures=st.booleans())
    def shutdown_nowait(self, cancel_futures: bool) -> None:
        self.pool.shutdown(wait=False, cancel_futures=cancel_futures)
        self.shut = True
        if cancel_futures:
            self.cancelled_gens.add(self.gen)
        self._settle()

    @precondition(lambda self: not self._has(RUNNING))
    @rule(cancel_futures=st.booleans())
    def shutdown_wait(self, cancel_futures: bool) -> None:
        # Nothing runs, so only pending tasks could make it wait; there are none
        # either (they would be running), so this returns once workers exit.
        self.pool.shutdown(wait=True, cancel_futures=cancel_futures)
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
            assert task.callbacks == task.observed, task
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
        for task in self.tasks:
            task.gate.set()
        self.pool.shutdown(wait=True)
        # Everything still live runs to its end and returns.
        for task in self.tasks:
            if task.state in (PENDING, RUNNING):
                task.state = RETURNED
            self._check(task)
            assert task.callbacks == task.observed, task
            done_now: list[Any] = []
            task.future.add_done_callback(done_now.append)  # runs at once: it is done
            assert done_now == [task.future]
        assert not any(thread.is_alive() for thread in self.pool._threads)


ExecutorMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_executor_matches_the_sequential_model = pytest.mark.slow(ExecutorMachine.TestCase)
