"""TaskGroup, CancelScope, move_on_after and fail_after.

What these tests check is raised by a block's exit, so ``pytest.raises`` must
wrap the whole block (PT012 is off for this file).

Tasks are gated with Events and Barriers, deadlines run on the fake clock,
and the limit is checked with a gauge of running tasks, never by timing.
"""

# ruff: noqa: PT012
from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any

import pytest

import cancellable._group as group_module
from cancellable import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancellationToken,
    CancellationTokenSource,
    CancelScope,
    OperationCancelledError,
    TaskGroup,
    current_token,
    fail_after,
    move_on_after,
    sleep,
    use_token,
)
from conftest import FakeClock

WAIT = 10


def regs_of(token: CancellationToken) -> int:
    # No statistics hook on tokens yet: count the private registrations dict
    # (links to children included), which is what a leak would grow.
    regs = token._regs
    return 0 if regs is None else len(regs)


def wait_for_cancel() -> None:
    """A cooperative task: block until its token is cancelled, then stop."""
    current_token().wait()
    current_token().raise_if_cancellation_requested()


def fail(message: str = "boom") -> None:
    raise ValueError(message)


@pytest.fixture
def wide_pool() -> Iterator[CancellableThreadPoolExecutor]:
    ex = CancellableThreadPoolExecutor(max_workers=8)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


class Gauge:
    """Counts tasks running at once and remembers the peak."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.now = 0
        self.peak = 0
        self.started: list[int] = []

    def enter(self, n: int) -> None:
        with self.cond:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.started.append(n)
            self.cond.notify_all()

    def leave(self) -> None:
        with self.cond:
            self.now -= 1
            self.cond.notify_all()

    def wait_for(self, *, started: int, running: int) -> None:
        with self.cond:
            assert self.cond.wait_for(
                lambda: len(self.started) == started and self.now == running, timeout=WAIT
            ), (len(self.started), self.now, started, running)


# -- the basics -----------------------------------------------------------------------


class TestTaskGroupBasics:
    def test_exit_waits_for_every_task_and_results_are_there(self) -> None:
        with TaskGroup() as tg:
            futures = [tg.submit(pow, i, 2) for i in range(20)]
        assert all(f.done() for f in futures)
        assert [f.result() for f in futures] == [i * i for i in range(20)]

    def test_exit_waits_for_a_running_task(self, pool: CancellableThreadPoolExecutor) -> None:
        gate = threading.Event()
        ended = threading.Event()

        def slow() -> None:
            gate.wait()
            ended.set()

        with TaskGroup(pool) as tg:
            tg.submit(slow)
            threading.Timer(0, gate.set).start()
        assert ended.is_set()

    def test_current_token_in_body_is_the_groups_token(self) -> None:
        outer = current_token()
        with TaskGroup() as tg:
            assert current_token() == tg.token
            task_token = tg.submit(current_token).result(timeout=WAIT)
        assert current_token() == outer
        tg_token = tg.token
        assert task_token != tg_token
        assert not task_token.is_cancellation_requested

    def test_task_token_is_a_child_of_the_group_token(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        started = threading.Event()

        def run() -> object:
            started.set()
            return wait_for_cancel()

        with TaskGroup(pool) as tg:
            future = tg.submit(run)
            assert started.wait(WAIT)
            tg.cancel("stop")
        assert future.cancelled()
        with pytest.raises(OperationCancelledError) as info:
            future.result()
        assert info.value.reason == "stop"

    def test_group_token_is_a_child_of_the_given_token(self) -> None:
        parent = CancellationTokenSource()
        group = TaskGroup(token=parent.token)
        parent.cancel("parent")
        assert group.token.is_cancellation_requested
        assert group.token.reason == "parent"

    def test_parent_is_the_current_token_when_the_group_is_created(self) -> None:
        parent = CancellationTokenSource()
        with use_token(parent.token):
            group = TaskGroup()
        parent.cancel()
        assert group.token.is_cancellation_requested

    def test_submit_before_entering_raises(self) -> None:
        with pytest.raises(RuntimeError, match="not entered"):
            TaskGroup().submit(int)

    def test_submit_after_exit_raises(self) -> None:
        with TaskGroup() as tg:
            pass
        with pytest.raises(RuntimeError, match="exited"):
            tg.submit(int)

    @pytest.mark.parametrize("limit", [None, 1])
    def test_submit_of_a_non_callable_raises_type_error(
        self, pool: CancellableThreadPoolExecutor, limit: int | None
    ) -> None:
        with TaskGroup(pool, limit=limit) as tg:
            with pytest.raises(TypeError, match="fn must be callable"):
                tg.submit(42)  # type: ignore[arg-type]
            assert tg.submit(int).result(timeout=WAIT) == 0

    def test_entering_twice_raises(self) -> None:
        tg = TaskGroup()
        with tg, pytest.raises(RuntimeError, match="only once"):
            tg.__enter__()

    def test_a_given_executor_is_not_shut_down(self, pool: CancellableThreadPoolExecutor) -> None:
        with TaskGroup(pool) as tg:
            tg.submit(int)
        assert pool.submit(pow, 2, 5).result(timeout=WAIT) == 32

    @pytest.mark.usefixtures("no_leaked_threads")
    def test_own_pool_is_shut_down_at_exit(self) -> None:
        with TaskGroup(limit=3) as tg:
            for _ in range(10):
                tg.submit(threading.current_thread)
        with pytest.raises(RuntimeError, match="exited"):
            tg.submit(int)

    def test_own_pool_has_limit_workers(self) -> None:
        with TaskGroup(limit=2) as tg:
            names = {tg.submit(lambda: threading.current_thread().name) for _ in range(50)}
        threads = {f.result() for f in names}
        assert 1 <= len(threads) <= 2

    def test_submit_into_a_cancelled_group_returns_a_cancelled_future(self) -> None:
        ran: list[int] = []
        with TaskGroup() as tg:
            tg.cancel()
            future = tg.submit(ran.append, 1)
        assert future.cancelled()
        assert ran == []

    def test_repr_shows_the_state(self) -> None:
        tg = TaskGroup()
        assert "new" in repr(tg)
        with tg:
            assert "active" in repr(tg)
            tg.cancel()
            assert "cancelled" in repr(tg)
        assert "exited" in repr(tg)


# -- failures -------------------------------------------------------------------------------


class TestFailFast:
    def test_first_failure_cancels_running_siblings_and_raises_a_group(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        started = threading.Event()

        def sibling() -> None:
            started.set()
            wait_for_cancel()

        with pytest.raises(ExceptionGroup) as info, TaskGroup(pool) as tg:
            waiting = tg.submit(sibling)
            assert started.wait(WAIT)
            tg.submit(fail, "first")
        assert [str(e) for e in info.value.exceptions] == ["first"]
        assert info.value.message == "unhandled errors in a TaskGroup"
        assert waiting.cancelled()
        with pytest.raises(OperationCancelledError) as cancelled:
            waiting.result()
        assert isinstance(cancelled.value.reason, ValueError)

    def test_pending_tasks_never_start_after_a_failure(self) -> None:
        ran: list[int] = []
        gate = threading.Event()

        def first() -> None:
            gate.wait()
            raise ValueError("stop")

        with pytest.raises(ExceptionGroup), TaskGroup(limit=1) as tg:
            tg.submit(first)
            later = [tg.submit(ran.append, i) for i in range(10)]
            gate.set()
        assert ran == []
        assert all(f.cancelled() for f in later)

    def test_a_task_cancelled_by_the_group_is_not_a_failure(self) -> None:
        with pytest.raises(ExceptionGroup) as info, TaskGroup() as tg:
            tg.submit(wait_for_cancel)
            tg.submit(wait_for_cancel)
            tg.submit(fail)
        assert len(info.value.exceptions) == 1

    def test_an_unrelated_operation_cancelled_error_is_a_failure(self) -> None:
        other = CancellationTokenSource()
        other.cancel("elsewhere")
        with pytest.raises(ExceptionGroup) as info, TaskGroup() as tg:
            tg.submit(other.token.raise_if_cancellation_requested)
        [error] = info.value.exceptions
        assert isinstance(error, OperationCancelledError)
        assert error.reason == "elsewhere"

    def test_request_cancel_of_one_task_is_not_a_failure(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        started = threading.Event()

        def run() -> None:
            started.set()
            wait_for_cancel()

        with TaskGroup(pool) as tg:
            one = tg.submit(run)
            other = tg.submit(pow, 2, 2)
            assert started.wait(WAIT)
            one.request_cancel("just this one")
        assert one.cancelled()
        assert other.result() == 4
        assert not tg.token.is_cancellation_requested

    def test_several_failures_come_out_together(
        self, wide_pool: CancellableThreadPoolExecutor
    ) -> None:
        barrier = threading.Barrier(3)

        def together(n: int) -> None:
            barrier.wait(timeout=WAIT)
            raise ValueError(n)

        with pytest.raises(ExceptionGroup) as info, TaskGroup(wide_pool) as tg:
            for n in range(3):
                tg.submit(together, n)
        assert sorted(e.args[0] for e in info.value.exceptions) == [0, 1, 2]

    def test_supervisor_collects_failures_and_siblings_run_on(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        with pytest.raises(ExceptionGroup) as info, TaskGroup(pool, fail_fast=False) as tg:
            bad = [tg.submit(fail, str(i)) for i in range(3)]
            good = [tg.submit(pow, i, 2) for i in range(10)]
        assert sorted(str(e) for e in info.value.exceptions) == ["0", "1", "2"]
        assert [f.result() for f in good] == [i * i for i in range(10)]
        assert all(isinstance(f.exception(), ValueError) for f in bad)
        assert not tg.token.is_cancellation_requested

    def test_supervisor_still_cancels_on_a_body_exception(self) -> None:
        with pytest.raises(ExceptionGroup) as info, TaskGroup(fail_fast=False) as tg:
            waiting = tg.submit(wait_for_cancel)
            raise KeyError("body")
        assert [type(e) for e in info.value.exceptions] == [KeyError]
        assert waiting.cancelled()

    def test_base_exception_from_a_task_makes_a_base_group(self) -> None:
        class Stop(BaseException):
            pass

        def stop() -> None:
            raise Stop

        with pytest.raises(BaseExceptionGroup) as info, TaskGroup() as tg:
            tg.submit(stop)
        assert not isinstance(info.value, ExceptionGroup)
        assert [type(e) for e in info.value.exceptions] == [Stop]


class TestBodyAndExit:
    def test_body_exception_cancels_the_group_and_is_wrapped(self) -> None:
        with pytest.raises(ExceptionGroup) as info, TaskGroup() as tg:
            waiting = tg.submit(wait_for_cancel)
            raise KeyError("body")
        assert [type(e) for e in info.value.exceptions] == [KeyError]
        assert waiting.cancelled()
        assert isinstance(tg.token.reason, KeyError)

    def test_body_exception_comes_first_with_the_task_failures(self) -> None:
        failed = threading.Event()

        def failing() -> None:
            try:
                fail("task")
            finally:
                failed.set()

        with pytest.raises(ExceptionGroup) as info, TaskGroup(fail_fast=False) as tg:
            tg.submit(failing)
            assert failed.wait(WAIT)
            raise KeyError("body")
        assert [type(e) for e in info.value.exceptions] == [KeyError, ValueError]

    def test_keyboard_interrupt_in_the_body_propagates_alone_after_the_tasks_end(
        self,
    ) -> None:
        with pytest.raises(KeyboardInterrupt), TaskGroup() as tg:
            waiting = tg.submit(wait_for_cancel)
            raise KeyboardInterrupt
        assert waiting.cancelled()

    def test_system_exit_from_a_task_propagates_alone(self) -> None:
        def leave() -> None:
            raise SystemExit(3)

        with pytest.raises(SystemExit) as info, TaskGroup() as tg:
            waiting = tg.submit(wait_for_cancel)
            tg.submit(leave)
            tg.submit(fail)
        assert info.value.code == 3
        assert waiting.cancelled()

    def test_keyboard_interrupt_from_a_task_wins_over_failures_even_in_supervisor_mode(
        self,
    ) -> None:
        def interrupt() -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt), TaskGroup(fail_fast=False) as tg:
            waiting = tg.submit(wait_for_cancel)
            tg.submit(interrupt)
        assert waiting.cancelled()

    def test_cancel_is_quiet(self) -> None:
        with TaskGroup() as tg:
            waiting = tg.submit(wait_for_cancel)
            tg.cancel("enough")
        assert waiting.cancelled()

    def test_cancel_from_a_task_is_quiet(self) -> None:
        with TaskGroup() as tg:
            waiting = tg.submit(wait_for_cancel)
            tg.submit(tg.cancel)
        assert waiting.cancelled()

    def test_body_stopped_by_the_groups_cancel_is_quiet(self) -> None:
        with TaskGroup() as tg:
            tg.submit(tg.cancel)
            current_token().wait()  # the body cooperates with the group's token
            current_token().raise_if_cancellation_requested()
        assert tg.token.is_cancellation_requested

    def test_parent_cancel_makes_exit_raise_operation_cancelled(self) -> None:
        parent = CancellationTokenSource()
        with pytest.raises(OperationCancelledError) as info, TaskGroup(token=parent.token) as tg:
            waiting = tg.submit(wait_for_cancel)
            parent.cancel("caller gave up")
        assert info.value.reason == "caller gave up"
        assert waiting.cancelled()

    def test_parent_cancel_with_the_body_stopped_raises_operation_cancelled(self) -> None:
        parent = CancellationTokenSource()
        with pytest.raises(OperationCancelledError), TaskGroup(token=parent.token) as tg:
            tg.submit(parent.cancel)
            sleep(WAIT)  # the ambient (group) token interrupts it

    def test_failures_take_precedence_over_a_parent_cancel(self) -> None:
        parent = CancellationTokenSource()
        with pytest.raises(ExceptionGroup), TaskGroup(token=parent.token) as tg:
            tg.submit(fail).exception(timeout=WAIT)
            parent.cancel()

    def test_a_first_ctrl_c_while_exit_waits_cancels_and_waits_again(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real_wait = group_module._futures_wait
        calls: list[int] = []

        def interrupted_once(fs: Any) -> Any:
            calls.append(len(fs))
            if len(calls) == 1:
                raise KeyboardInterrupt
            return real_wait(fs)

        monkeypatch.setattr(group_module, "_futures_wait", interrupted_once)
        with pytest.raises(KeyboardInterrupt), TaskGroup() as tg:
            waiting = tg.submit(wait_for_cancel)
        assert waiting.cancelled()  # the group waited again after cancelling
        assert isinstance(tg.token.reason, KeyboardInterrupt)

    def test_a_second_ctrl_c_stops_waiting(self, monkeypatch: pytest.MonkeyPatch) -> None:
        gate = threading.Event()

        def always(fs: Any) -> Any:
            raise KeyboardInterrupt

        def stubborn() -> None:
            gate.wait()

        monkeypatch.setattr(group_module, "_futures_wait", always)
        pool = CancellableThreadPoolExecutor(1)
        try:
            with pytest.raises(KeyboardInterrupt), TaskGroup(pool) as tg:
                stuck = tg.submit(stubborn)
            assert not stuck.done()
        finally:
            gate.set()
            pool.shutdown(wait=True)


class TestInterrupts:
    def test_a_ctrl_c_inside_submit_leaves_the_group_able_to_exit(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        def interrupted(*args: object, **kwargs: object) -> Any:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt), TaskGroup(pool) as tg:
            done = tg.submit(pow, 2, 2)
            tg._executor_submit = interrupted
            tg.submit(int)
        assert done.result() == 4
        assert tg._live == {}

    def test_a_ctrl_c_while_the_exit_closes_leaves_the_group_open_to_its_tasks(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        # The interrupt lands as the exit checks whether it may close; the
        # group then cancels and waits again, and a submit made by the
        # cancel's callback is still accepted and waited for.
        class InterruptedOnce(dict[Any, None]):
            fired = False

            def __reversed__(self) -> Iterator[Any]:
                if not InterruptedOnce.fired:
                    InterruptedOnce.fired = True
                    raise KeyboardInterrupt
                return super().__reversed__()

        got: list[CancellableFuture[int]] = []
        with pytest.raises(KeyboardInterrupt), TaskGroup(pool) as tg:
            tg._live = InterruptedOnce()
            tg.submit(int).result(timeout=WAIT)
            tg.token.register(lambda: got.append(tg.submit(int)))
        assert InterruptedOnce.fired
        assert len(got) == 1
        assert got[0].done()

    def test_a_ctrl_c_after_a_limited_task_is_queued_leaves_the_group_able_to_exit(
        self, wide_pool: CancellableThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The interrupt lands once the task is counted and queued, before it
        # has a cancel registration or a pump: it must still end, or the
        # exit would wait for it forever.
        real = group_module._QueuedFuture.token
        interrupted: list[Any] = []

        def token(self: Any) -> CancellationToken:
            if not interrupted:
                interrupted.append(self)
                raise KeyboardInterrupt
            return real.fget(self)  # type: ignore[attr-defined,no-any-return]

        monkeypatch.setattr(group_module._QueuedFuture, "token", property(token))
        with pytest.raises(KeyboardInterrupt), TaskGroup(wide_pool, limit=1) as tg:
            tg.submit(int)
        assert interrupted[0].cancelled()  # it never ran
        assert tg._queued_count == 0

    def test_keyboard_interrupt_from_a_limited_task_propagates_alone(
        self, wide_pool: CancellableThreadPoolExecutor
    ) -> None:
        def interrupt() -> None:
            raise KeyboardInterrupt

        ran: list[int] = []
        with pytest.raises(KeyboardInterrupt), TaskGroup(wide_pool, limit=1) as tg:
            tg.submit(interrupt)
            queued = [tg.submit(ran.append, i) for i in range(10)]
        # The interrupt cancelled the group: whatever had not started never did.
        assert all(f.done() for f in queued)
        assert len(ran) == sum(not f.cancelled() for f in queued)


# -- submits racing the exit ------------------------------------------------------------------


class _OpenGate(threading.Condition):
    """The group's condition, opening ``gate`` when the exit first waits on it."""

    def __init__(self, lock: Any, gate: threading.Event) -> None:
        super().__init__(lock)
        self.gate = gate

    def wait(self, timeout: float | None = None) -> bool:
        self.gate.set()
        return super().wait(timeout)


class _Racer:
    """Submits into a group until it is refused, noting what was accepted."""

    def __init__(self) -> None:
        self.going = threading.Event()
        self.accepted: list[int] = []
        self.ended: set[int] = set()
        self.refused: RuntimeError | None = None

    def run(self, tg: TaskGroup) -> None:
        self.going.set()
        for n in itertools.count():
            try:
                tg.submit(self.ended.add, n)
            except RuntimeError as error:
                self.refused = error
                return
            self.accepted.append(n)


class TestSubmitRacingTheExit:
    def test_the_exit_waits_for_a_submit_under_way_and_its_task(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        gate, inside = threading.Event(), threading.Event()
        ran = threading.Event()
        got: list[Any] = []
        with TaskGroup(pool) as tg:
            real = tg._executor_submit
            assert real is not None

            def slow(*args: Any) -> Any:
                inside.set()
                assert gate.wait(WAIT)  # opened once the exit waits for this submit
                return real(*args)

            tg._executor_submit = slow
            tg._cond = _OpenGate(tg._lock, gate)
            thread = threading.Thread(target=lambda: got.append(tg.submit(ran.set)))
            thread.start()
            assert inside.wait(WAIT)
        assert ran.is_set()  # the exit did not return before the late task ended
        thread.join(WAIT)
        assert got[0].done()
        assert tg._live == {}
        assert tg._submitting == {}

    def test_a_submit_seeing_the_exit_close_is_refused_and_a_seen_one_reopens(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        # Submits from another thread while the exit closes: each either
        # raises RuntimeError or has its task ended when the exit returns.
        for _ in range(50):
            racer = _Racer()
            with TaskGroup(pool) as tg:
                thread = threading.Thread(target=racer.run, args=(tg,))
                thread.start()
                assert racer.going.wait(WAIT)
            ended_at_exit = set(racer.ended)
            thread.join(WAIT)
            assert "exited" in str(racer.refused)
            assert set(racer.accepted) <= ended_at_exit

    def test_a_done_callback_submitting_during_the_exit_is_waited_for_or_refused(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        outcomes: list[CancellableFuture[None] | RuntimeError] = []
        ran: list[int] = []

        def resubmit(tg: TaskGroup, n: int) -> Callable[[Any], None]:
            def callback(_: Any) -> None:
                try:
                    outcomes.append(tg.submit(ran.append, n))
                except RuntimeError as error:
                    outcomes.append(error)

            return callback

        with TaskGroup(pool) as tg:
            for n in range(200):
                tg.submit(int).add_done_callback(resubmit(tg, n))
        accepted = [f for f in outcomes if not isinstance(f, RuntimeError)]
        assert all(f.done() for f in accepted)
        assert len(ran) == len(accepted)


class TestExecutorSubclass:
    def test_an_overridden_submit_is_used_and_the_rules_hold(self) -> None:
        calls: list[object] = []

        class Counting(CancellableThreadPoolExecutor):
            def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
                calls.append(kwargs.get("token"))
                return super().submit(fn, *args, **kwargs)

        ex = Counting(max_workers=2)
        try:
            with pytest.raises(ExceptionGroup) as info, TaskGroup(ex) as tg:
                waiting = tg.submit(wait_for_cancel)
                tg.submit(fail)
            assert [type(e) for e in info.value.exceptions] == [ValueError]
            assert waiting.cancelled()
            assert calls == [tg.token, tg.token]
            with TaskGroup(ex) as tg2:
                keyed = tg2.submit(dict, token="a task's own keyword")
            assert keyed.result() == {"token": "a task's own keyword"}
        finally:
            ex.shutdown(wait=True, cancel_futures=True)

    def test_a_task_keyword_named_token_reaches_the_task(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        with TaskGroup(pool) as tg:
            plain = tg.submit(dict, token=1, other=2)
            positional = tg.submit(pow, 2, 5)
        assert plain.result() == {"token": 1, "other": 2}
        assert positional.result() == 32


# -- submitting from tasks, nesting --------------------------------------------------------


class TestNesting:
    def test_a_task_may_submit_into_its_own_group(self) -> None:
        results: list[int] = []
        lock = threading.Lock()

        def spawn(tg: TaskGroup, depth: int) -> None:
            with lock:
                results.append(depth)
            if depth < 4:
                tg.submit(spawn, tg, depth + 1)
                tg.submit(spawn, tg, depth + 1)

        with TaskGroup() as tg:
            tg.submit(spawn, tg, 0)
        assert len(results) == 31  # the exit waited for every generation

    def test_a_task_may_submit_into_its_own_limited_group(
        self, wide_pool: CancellableThreadPoolExecutor
    ) -> None:
        results: list[int] = []

        def spawn(tg: TaskGroup, depth: int) -> None:
            results.append(depth)
            if depth < 5:
                tg.submit(spawn, tg, depth + 1)

        with TaskGroup(wide_pool, limit=1) as tg:
            tg.submit(spawn, tg, 0)
        assert results == [0, 1, 2, 3, 4, 5]

    def test_outer_cancel_reaches_tasks_of_an_inner_group(self) -> None:
        started = threading.Event()
        inner_futures: list[Any] = []

        def inner_work() -> None:
            with TaskGroup() as inner:
                inner_futures.append(inner.submit(wait_for_cancel))
                started.set()

        with TaskGroup() as outer:
            outer_task = outer.submit(inner_work)
            assert started.wait(WAIT)
            outer.cancel("all of it")
        assert outer_task.cancelled()  # the inner exit raised OperationCancelledError
        assert inner_futures[0].cancelled()

    def test_an_inner_failure_cancels_the_outer_group(self) -> None:
        def inner_work() -> None:
            with TaskGroup() as inner:
                inner.submit(fail, "deep")

        with pytest.raises(ExceptionGroup) as info, TaskGroup() as outer:
            sibling = outer.submit(wait_for_cancel)
            outer.submit(inner_work)
        [nested] = info.value.exceptions
        assert isinstance(nested, ExceptionGroup)
        assert [str(e) for e in nested.exceptions] == ["deep"]
        assert sibling.cancelled()

    @pytest.mark.timeout(60)
    def test_a_cancel_reaches_the_bottom_of_a_deep_chain_of_groups(self) -> None:
        depth = 40
        bottom = threading.Event()
        ends: list[str] = []

        def level(n: int) -> None:
            try:
                with TaskGroup(limit=1) as tg:
                    if n == depth:
                        bottom.set()
                        current_token().wait()
                        current_token().raise_if_cancellation_requested()
                    else:
                        tg.submit(level, n + 1)
            finally:
                ends.append("ended")

        with TaskGroup() as root:
            top = root.submit(level, 1)
            assert bottom.wait(WAIT)
            root.cancel("from the top")
        assert top.cancelled()
        assert len(ends) == depth

    def test_group_in_body_of_a_group_has_the_outer_token_as_parent(self) -> None:
        with TaskGroup() as outer:
            inner = TaskGroup()
            outer.cancel()
            assert inner.token.is_cancellation_requested


# -- limit ----------------------------------------------------------------------------------


class TestLimit:
    @pytest.mark.parametrize("shared", [True, False], ids=["shared pool", "own pool"])
    def test_limit_caps_the_running_tasks(
        self, shared: bool, wide_pool: CancellableThreadPoolExecutor
    ) -> None:
        gauge = Gauge()
        gates = [threading.Event() for _ in range(12)]

        def task(n: int) -> None:
            gauge.enter(n)
            try:
                gates[n].wait()
            finally:
                gauge.leave()

        with TaskGroup(wide_pool if shared else None, limit=3) as tg:
            for n in range(12):
                tg.submit(task, n)
            for released in range(12):
                # Exactly the tasks the limit allows have started, and run.
                gauge.wait_for(started=min(12, released + 3), running=min(3, 12 - released))
                assert gauge.peak <= 3
                # Release the oldest running task; the next one takes its slot.
                gates[gauge.started[released]].set()
        assert gauge.peak == 3
        assert sorted(gauge.started) == list(range(12))

    def test_limited_tasks_start_in_submit_order(
        self, wide_pool: CancellableThreadPoolExecutor
    ) -> None:
        order: list[int] = []
        with TaskGroup(wide_pool, limit=1) as tg:
            for n in range(30):
                tg.submit(order.append, n)
        assert order == list(range(30))

    def test_submit_never_blocks_beyond_the_limit(
        self, wide_pool: CancellableThreadPoolExecutor
    ) -> None:
        gate = threading.Event()
        with TaskGroup(wide_pool, limit=1) as tg:
            futures = [tg.submit(gate.wait) for _ in range(100)]  # returns at once
            assert sum(f.running() for f in futures) <= 1
            gate.set()
        assert all(f.result() for f in futures)

    def test_a_queued_task_can_be_cancelled(self, wide_pool: CancellableThreadPoolExecutor) -> None:
        gate = threading.Event()
        ran: list[str] = []
        with TaskGroup(wide_pool, limit=1) as tg:
            first = tg.submit(gate.wait)
            second = tg.submit(ran.append, "second")
            third = tg.submit(ran.append, "third")
            assert second.cancel()
            third.request_cancel("not needed")
            assert not second.running()
            gate.set()
        assert first.result() is True
        assert second.cancelled()
        assert third.cancelled()
        assert ran == []
        with pytest.raises(CancelledError):
            second.result()
        with pytest.raises(OperationCancelledError) as info:
            third.result()
        assert info.value.reason == "not needed"
        with pytest.raises(OperationCancelledError):
            third.exception()

    def test_limited_task_token_is_current_inside_the_task(
        self, wide_pool: CancellableThreadPoolExecutor
    ) -> None:
        with TaskGroup(wide_pool, limit=2) as tg:
            future = tg.submit(current_token)
        assert future.result() == future.token

    def test_limited_group_failure_cancels_queued_and_running_tasks(
        self, wide_pool: CancellableThreadPoolExecutor
    ) -> None:
        started = threading.Event()
        ran: list[int] = []

        def run() -> None:
            started.set()
            wait_for_cancel()

        with pytest.raises(ExceptionGroup) as info, TaskGroup(wide_pool, limit=2) as tg:
            running = tg.submit(run)
            assert started.wait(WAIT)
            failing = tg.submit(fail, "limited")
            queued = [tg.submit(ran.append, i) for i in range(20)]
        assert [str(e) for e in info.value.exceptions] == ["limited"]
        assert running.cancelled()
        assert isinstance(failing.exception(), ValueError)
        assert ran == [] or all(q.done() for q in queued)
        assert all(q.cancelled() for q in queued[len(ran) :])

    def test_limited_running_task_cancel_returns_false_and_does_not_stop_it(
        self, wide_pool: CancellableThreadPoolExecutor
    ) -> None:
        started, gate = threading.Event(), threading.Event()

        def run() -> int:
            started.set()
            gate.wait()
            return 7

        with TaskGroup(wide_pool, limit=1) as tg:
            future = tg.submit(run)
            assert started.wait(WAIT)
            assert future.running()
            assert not future.cancel()
            gate.set()
        assert future.result() == 7

    def test_limited_group_on_a_shut_down_pool_fails_the_task(self) -> None:
        pool = CancellableThreadPoolExecutor(1)
        with pytest.raises(ExceptionGroup) as info, TaskGroup(pool, limit=1) as tg:
            pool.shutdown()
            future = tg.submit(int)
        assert isinstance(future.exception(), RuntimeError)
        assert [type(e) for e in info.value.exceptions] == [RuntimeError]

    def test_limited_stdlib_wait_sees_results_and_cancels(
        self, wide_pool: CancellableThreadPoolExecutor
    ) -> None:
        from concurrent.futures import wait

        gate = threading.Event()
        with TaskGroup(wide_pool, limit=1) as tg:
            first = tg.submit(gate.wait)
            second = tg.submit(int)
            second.cancel()
            done, _ = wait([second], timeout=WAIT)
            assert done == {second}
            gate.set()
            done, _ = wait([first], timeout=WAIT)
            assert done == {first}


# -- no leaks ---------------------------------------------------------------------------------


class TestNoLeaks:
    @pytest.mark.timeout(120)
    def test_ten_thousand_groups_and_scopes_leave_the_parent_registrations_alone(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        parent = CancellationTokenSource()
        keep = parent.token.register(lambda: None)  # a registration of its own
        before = regs_of(parent.token)
        with use_token(parent.token):
            for n in range(10_000):
                if n % 4 == 0:
                    with TaskGroup(pool) as tg:
                        tg.submit(int)
                elif n % 4 == 1:
                    with TaskGroup(pool, limit=1) as tg:
                        tg.submit(int)
                elif n % 4 == 2:
                    with CancelScope(timeout=WAIT):
                        pass
                else:
                    with move_on_after(WAIT) as scope:
                        scope.cancel()
                        current_token().raise_if_cancellation_requested()
        gc.collect()
        assert regs_of(parent.token) == before
        keep.unregister()

    @pytest.mark.usefixtures("no_leaked_threads")
    def test_groups_with_own_pools_leave_no_threads(self) -> None:
        for _ in range(20):
            with TaskGroup(limit=2) as tg:
                tg.submit(int)
                tg.submit(int)

    def test_a_long_lived_group_forgets_done_futures(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        with TaskGroup(pool) as tg:
            for _ in range(5000):
                tg.submit(int).result(timeout=WAIT)
            assert len(tg._live) <= 1025

    def test_an_exited_group_holds_no_futures(self, pool: CancellableThreadPoolExecutor) -> None:
        with TaskGroup(pool) as tg:
            for _ in range(2000):
                tg.submit(int)
        assert tg._live == {}


# -- CancelScope --------------------------------------------------------------------------------


class TestCancelScope:
    def test_current_token_inside_is_the_scope_token(self) -> None:
        with CancelScope() as scope:
            assert current_token() == scope.token
        assert current_token() == CancellationToken.NONE

    def test_scope_token_is_a_child_of_the_enclosing(self) -> None:
        outer = CancellationTokenSource()
        with use_token(outer.token), pytest.raises(OperationCancelledError), CancelScope() as scope:
            outer.cancel("outer")
            assert scope.token.reason == "outer"
            sleep(WAIT)
        assert not scope.cancelled_caught

    def test_own_cancel_is_swallowed(self) -> None:
        with CancelScope() as scope:
            scope.cancel("mine")
            sleep(WAIT)
            pytest.fail("not reached")  # pragma: no cover
        assert scope.cancelled_caught
        assert scope.cancel_called

    def test_cancelled_caught_is_false_when_the_block_ends_normally(self) -> None:
        with CancelScope() as scope:
            scope.cancel()
        assert not scope.cancelled_caught
        assert scope.cancel_called

    def test_other_exceptions_pass(self) -> None:
        with pytest.raises(KeyError), CancelScope() as scope:
            scope.cancel()
            raise KeyError
        assert not scope.cancelled_caught

    def test_inner_scope_does_not_catch_an_outer_cancel(self) -> None:
        with CancelScope() as outer:
            with CancelScope() as inner:
                outer.cancel()
                sleep(WAIT)
            pytest.fail("not reached")  # pragma: no cover
        assert outer.cancelled_caught
        assert not inner.cancelled_caught

    def test_when_both_are_cancelled_the_outer_catches(self) -> None:
        with CancelScope() as outer, CancelScope() as inner:
            inner.cancel("inner")
            outer.cancel("outer")
            current_token().raise_if_cancellation_requested()
        assert outer.cancelled_caught
        assert not inner.cancelled_caught

    def test_an_unrelated_cancel_is_not_swallowed(self) -> None:
        other = CancellationTokenSource()
        other.cancel()
        with pytest.raises(OperationCancelledError), CancelScope() as scope:
            other.token.raise_if_cancellation_requested()
        assert not scope.cancelled_caught

    def test_shield_ignores_the_enclosing_cancel(self) -> None:
        outer = CancellationTokenSource()
        outer.cancel("outer")
        with use_token(outer.token):
            with CancelScope(shield=True) as shielded:
                assert not current_token().is_cancellation_requested
                sleep(0)  # not interrupted
            assert not shielded.cancelled_caught
            assert current_token().is_cancellation_requested

    def test_shield_can_still_cancel_itself(self) -> None:
        with CancelScope(shield=True) as scope:
            scope.cancel()
            current_token().raise_if_cancellation_requested()
        assert scope.cancelled_caught

    def test_a_shielded_task_group_runs_on_through_an_outer_cancel(self) -> None:
        outer = CancellationTokenSource()
        with use_token(outer.token), CancelScope(shield=True), TaskGroup() as tg:
            outer.cancel()
            future = tg.submit(lambda: current_token().is_cancellation_requested)
        assert future.result() is False

    def test_move_on_after_stops_at_the_deadline(self, clock: FakeClock) -> None:
        started = threading.Event()
        result: list[bool] = []

        def body() -> None:
            with move_on_after(5) as scope:
                started.set()
                sleep(WAIT * 100)
            result.append(scope.cancelled_caught)

        thread = threading.Thread(target=body)
        thread.start()
        assert started.wait(WAIT)
        clock.advance(5)
        thread.join(WAIT)
        assert result == [True]

    def test_deadline_reason_is_a_timeout_error(self, clock: FakeClock) -> None:
        with move_on_after(1) as scope:
            clock.advance(1)
            assert isinstance(scope.token.reason, TimeoutError)
            current_token().raise_if_cancellation_requested()
        assert scope.cancelled_caught

    def test_fail_after_raises_timeout_error_at_the_deadline(self, clock: FakeClock) -> None:
        with pytest.raises(TimeoutError) as info, fail_after(2):
            clock.advance(2)
            current_token().raise_if_cancellation_requested()
        assert isinstance(info.value.__cause__, OperationCancelledError)

    def test_fail_after_zero_fails_at_the_first_check(self) -> None:
        with pytest.raises(TimeoutError), fail_after(0):
            current_token().raise_if_cancellation_requested()

    def test_fail_after_in_time_raises_nothing(self, clock: FakeClock) -> None:
        with fail_after(2) as scope:
            clock.advance(1)
        assert not scope.cancelled_caught

    def test_fail_after_ended_normally_after_the_deadline_raises_nothing(
        self, clock: FakeClock
    ) -> None:
        with fail_after(2) as scope:
            clock.advance(3)
        assert scope.cancel_called
        assert not scope.cancelled_caught

    def test_fail_after_cancelled_by_hand_is_swallowed_quietly(self) -> None:
        with fail_after(WAIT) as scope:
            scope.cancel("by hand")
            current_token().raise_if_cancellation_requested()
        assert scope.cancelled_caught

    def test_fail_after_does_not_catch_an_outer_deadline(self, clock: FakeClock) -> None:
        with move_on_after(1) as outer, fail_after(10):
            clock.advance(1)
            current_token().raise_if_cancellation_requested()
        assert outer.cancelled_caught

    def test_huge_and_infinite_timeouts_never_fire(self, clock: FakeClock) -> None:
        with CancelScope(timeout=1e10) as a, CancelScope(timeout=float("inf")) as b:
            clock.advance(1e9)
        assert not a.cancel_called
        assert not b.cancel_called

    def test_a_huge_deadline_on_the_real_clock_leaves_other_deadlines_working(self) -> None:
        with CancelScope(timeout=1e10), CancelScope(timeout=0.001) as short:
            assert short.token.wait(WAIT)  # the timer thread survived the 1e10 s wait
            current_token().raise_if_cancellation_requested()
        assert short.cancelled_caught

    def test_exit_closes_the_source(self, clock: FakeClock) -> None:
        parent = CancellationTokenSource()
        before = regs_of(parent.token)
        with use_token(parent.token), CancelScope(timeout=5) as scope:
            assert regs_of(parent.token) == before + 1
        assert regs_of(parent.token) == before
        clock.advance(10)  # the deadline was disarmed
        assert not scope.cancel_called
        parent.cancel()
        assert not scope.cancel_called  # detached
        with pytest.raises(ValueError, match="closed"):
            scope.cancel_after(1)

    def test_cancel_before_entering_applies_inside(self) -> None:
        scope = CancelScope()
        scope.cancel()
        with scope:
            current_token().raise_if_cancellation_requested()
        assert scope.cancelled_caught

    def test_entering_twice_raises(self) -> None:
        scope = CancelScope()
        with scope, pytest.raises(RuntimeError, match="only once"):
            scope.__enter__()

    def test_cancel_after_rearms_the_deadline(self, clock: FakeClock) -> None:
        with CancelScope() as scope:
            scope.cancel_after(3)
            clock.advance(3)
            assert scope.cancel_called
            current_token().raise_if_cancellation_requested()
        assert scope.cancelled_caught

    def test_repr(self) -> None:
        scope = CancelScope()
        assert "active" in repr(scope)
        with scope:
            pass
        assert "exited" in repr(scope)
        scope.cancel()
        assert "cancelled" in repr(scope)

    def test_scope_inside_a_task_is_a_child_of_the_task_token(self) -> None:
        def task() -> bool:
            with CancelScope() as scope:
                current_token().wait()
                current_token().raise_if_cancellation_requested()
            return scope.cancelled_caught

        with TaskGroup() as tg:
            future = tg.submit(task)
            future.request_cancel()
        assert future.cancelled()  # the task's own cancel reached the edge uncaught


def test_callbacks_calling_back_into_the_group_do_not_deadlock(
    wide_pool: CancellableThreadPoolExecutor,
) -> None:
    seen: list[Any] = []
    with TaskGroup(wide_pool, limit=1) as tg:
        gate = threading.Event()
        first = tg.submit(gate.wait)
        second = tg.submit(int)
        # A done-callback that submits into the group and cancels it.
        add: Callable[[Any], None] = lambda f: (seen.append(tg.submit(int)), tg.cancel())  # noqa: E731
        second.add_done_callback(add)
        tg.token.register(lambda: seen.append(tg.submit(int)))
        gate.set()
    assert first.result() is True
    assert len(seen) == 2
    assert all(f.done() for f in seen)
