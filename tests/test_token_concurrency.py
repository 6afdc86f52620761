"""Many threads at once on one token: exact outcomes, no sleeping.

Threads are lined up with `threading.Barrier` so the racing calls really
overlap; loops are bounded; every assertion is about counts and states, never
about time.
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable

import pytest

from _helpers import holds_nothing
from cancellable import CancellationToken, CancellationTokenRegistration, CancellationTokenSource
from cancellable import _token as token_module
from cancellable._token import _token_stats

THREADS = 8
ROUNDS = 25
PER_THREAD = 40


def _run_threads(targets: list[Callable[[], None]]) -> None:
    """Start one thread per target, join them all, re-raise the first failure."""
    failures: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as error:
                failures.append(error)
                raise

        return run

    threads = [threading.Thread(target=guarded(t)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not [t for t in threads if t.is_alive()], "a thread did not finish"
    if failures:
        raise failures[0]


@pytest.fixture(autouse=True)
def _threads_cleaned_up(no_leaked_threads: None) -> None:
    """Every test here must leave no thread behind."""


class _Counter:
    """Counts calls per callback id; each id is only ever bumped by a cancel."""

    def __init__(self, size: int) -> None:
        self.calls = [0] * size
        self.lock = threading.Lock()

    def bump(self, index: int) -> None:
        with self.lock:
            self.calls[index] += 1


def _assert_no_registrations(token: CancellationToken) -> None:
    assert holds_nothing(token)
    assert token._running is None
    assert token._unreg_waiters is None


class TestRegisterUnregisterCancel:
    def test_each_callback_runs_once_or_never_and_unregister_says_which(self) -> None:
        for _ in range(ROUNDS):
            self._each_callback_runs_once_or_never_and_unregister_says_which_round()

    def _each_callback_runs_once_or_never_and_unregister_says_which_round(self) -> None:
        cts = CancellationTokenSource()
        token = cts.token
        counter = _Counter(THREADS * PER_THREAD)
        removed: list[bool | None] = [None] * (THREADS * PER_THREAD)
        barrier = threading.Barrier(THREADS + 1)

        def worker(first: int) -> None:
            regs: list[CancellationTokenRegistration] = []
            # Half registered before the start line, half while the cancel runs.
            for i in range(first, first + PER_THREAD // 2):
                regs.append(token.register(counter.bump, i))
            barrier.wait()
            for i in range(first + PER_THREAD // 2, first + PER_THREAD):
                regs.append(token.register(counter.bump, i))
            for offset, reg in enumerate(regs):
                if offset % 3:  # two in three are unregistered
                    removed[first + offset] = reg.unregister()

        def canceller() -> None:
            barrier.wait()
            cts.cancel("stop")

        _run_threads(
            [canceller]
            + [
                (lambda first=first: worker(first))  # type: ignore[misc]
                for first in range(0, THREADS * PER_THREAD, PER_THREAD)
            ]
        )
        for index, calls in enumerate(counter.calls):
            assert calls in (0, 1)
            if removed[index] is None:  # kept: a cancelled token runs it exactly once
                assert calls == 1
            else:
                assert removed[index] is (calls == 0)
        assert token.is_cancellation_requested
        _assert_no_registrations(token)

    def test_concurrent_unregisters_of_one_registration_only_one_wins(self) -> None:
        for _ in range(ROUNDS):
            self._concurrent_unregisters_of_one_registration_only_one_wins_round()

    def _concurrent_unregisters_of_one_registration_only_one_wins_round(self) -> None:
        cts = CancellationTokenSource()
        counter = _Counter(1)
        reg = cts.token.register(counter.bump, 0)
        results: list[bool] = []
        barrier = threading.Barrier(THREADS)

        def unregister() -> None:
            barrier.wait()
            results.append(reg.unregister())

        _run_threads([unregister] * THREADS)
        assert sorted(results) == [False] * (THREADS - 1) + [True]
        cts.cancel()
        assert counter.calls == [0]
        _assert_no_registrations(cts.token)

    def test_unregister_of_a_running_callback_returns_after_it_finished(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for _ in range(5):
            self._unregister_running_round(monkeypatch)

    def _unregister_running_round(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cts = CancellationTokenSource()
        started, gate = threading.Event(), threading.Event()
        finished: list[bool] = []

        def slow() -> None:
            started.set()
            gate.wait()
            finished.append(True)

        reg = cts.token.register(slow)
        canceller = threading.Thread(target=cts.cancel)
        canceller.start()
        assert started.wait(timeout=10)

        # The lock unregister() parks on signals when it is about to block.
        parked = threading.Event()
        real_allocate = _thread.allocate_lock

        class SignallingLock:
            def __init__(self) -> None:
                self.lock = real_allocate()
                self.acquires = 0

            def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
                self.acquires += 1
                if self.acquires == 2:  # the first one only locks it
                    parked.set()
                return self.lock.acquire(blocking, timeout)

            def release(self) -> None:
                self.lock.release()

        monkeypatch.setattr(token_module, "allocate_lock", SignallingLock)
        outcome: list[tuple[bool, bool]] = []

        def unregister() -> None:
            result = reg.unregister()
            outcome.append((result, bool(finished)))

        unregisterer = threading.Thread(target=unregister)
        unregisterer.start()
        try:
            assert parked.wait(timeout=10)  # it blocks while the callback runs
            assert not outcome
        finally:
            monkeypatch.undo()
            gate.set()
        unregisterer.join(timeout=10)
        canceller.join(timeout=10)
        assert outcome == [(False, True)]
        _assert_no_registrations(cts.token)

    def test_unregister_from_inside_its_own_callback_returns_false_at_once(self) -> None:
        cts = CancellationTokenSource()
        results: list[bool] = []
        regs: list[CancellationTokenRegistration] = []
        regs.append(cts.token.register(lambda: results.append(regs[0].unregister())))
        cts.cancel()
        assert results == [False]

    def test_second_cancel_returns_while_the_first_still_runs_callbacks(self) -> None:
        for _ in range(5):
            self._second_cancel_returns_while_the_first_still_runs_callbacks_round()

    def _second_cancel_returns_while_the_first_still_runs_callbacks_round(self) -> None:
        cts = CancellationTokenSource()
        started, gate = threading.Event(), threading.Event()

        def blocked() -> None:
            started.set()
            gate.wait()

        cts.token.register(blocked)
        first = threading.Thread(target=cts.cancel, args=("first",))
        first.start()
        try:
            self._cancel_again_while_blocked(cts, started)
        finally:
            gate.set()
        first.join(timeout=10)
        assert cts.token.reason == "first"
        _assert_no_registrations(cts.token)

    @staticmethod
    def _cancel_again_while_blocked(cts: CancellationTokenSource, started: threading.Event) -> None:
        assert started.wait(timeout=10)
        returned = threading.Event()
        barrier = threading.Barrier(THREADS)

        def cancel_again() -> None:
            barrier.wait()
            cts.cancel("second")
            returned.set()

        others = [threading.Thread(target=cancel_again) for _ in range(THREADS)]
        for thread in others:
            thread.start()
        for thread in others:
            thread.join(timeout=10)
        # All returned while the first cancel is still blocked in the callback
        # (its gate opens only after this function returns).
        assert returned.is_set()
        assert not [t for t in others if t.is_alive()]
        assert cts.token.reason == "first"

    def test_concurrent_cancels_run_each_callback_once(self) -> None:
        for _ in range(ROUNDS):
            self._concurrent_cancels_run_each_callback_once_round()

    def _concurrent_cancels_run_each_callback_once_round(self) -> None:
        cts = CancellationTokenSource()
        counter = _Counter(PER_THREAD)
        for i in range(PER_THREAD):
            cts.token.register(counter.bump, i)
        barrier = threading.Barrier(THREADS)
        errors: list[BaseException] = []

        def cancel(reason: int) -> None:
            barrier.wait()
            try:
                cts.cancel(reason)
            except BaseException as error:
                errors.append(error)

        _run_threads([(lambda r=r: cancel(r)) for r in range(THREADS)])  # type: ignore[misc]
        assert counter.calls == [1] * PER_THREAD
        assert not errors
        assert cts.token.reason in range(THREADS)
        _assert_no_registrations(cts.token)


class TestWaiters:
    def test_every_waiter_is_released_by_one_cancel(self) -> None:
        for _ in range(ROUNDS):
            self._every_waiter_is_released_by_one_cancel_round()

    def _every_waiter_is_released_by_one_cancel_round(self) -> None:
        cts = CancellationTokenSource()
        token = cts.token
        barrier = threading.Barrier(THREADS + 1)
        woke: list[bool] = []

        def waiter(timeout: float | None) -> None:
            barrier.wait()
            woke.append(token.wait(timeout))

        def canceller() -> None:
            barrier.wait()
            cts.cancel()

        waiters = [(lambda i=i: waiter(None if i % 2 else 60.0)) for i in range(THREADS)]
        _run_threads([canceller, *waiters])
        assert woke == [True] * THREADS
        _assert_no_registrations(token)

    def test_polling_waits_never_see_a_cancel_revert(self) -> None:
        for _ in range(ROUNDS):
            self._polling_waits_never_see_a_cancel_revert_round()

    def _polling_waits_never_see_a_cancel_revert_round(self) -> None:
        cts = CancellationTokenSource()
        token = cts.token
        barrier = threading.Barrier(THREADS + 1)

        def poller() -> None:
            barrier.wait()
            seen = False
            for _ in range(PER_THREAD):
                now = token.wait(0)
                assert now or not seen
                assert token.is_cancellation_requested or not now
                seen = now
            assert token.wait()

        def canceller() -> None:
            barrier.wait()
            cts.cancel()

        _run_threads([canceller] + [poller] * THREADS)
        _assert_no_registrations(token)


class TestLinkedChildren:
    def test_children_created_closed_and_cancelled_concurrently(self) -> None:
        for _ in range(ROUNDS):
            self._children_created_closed_and_cancelled_concurrently_round()

    def _children_created_closed_and_cancelled_concurrently_round(self) -> None:
        parent = CancellationTokenSource()
        other = CancellationTokenSource()  # an any-of second parent, never cancelled
        barrier = threading.Barrier(THREADS + 1)
        size = THREADS * PER_THREAD
        counter = _Counter(size)
        children: list[CancellationTokenSource | None] = [None] * size
        removed: list[bool | None] = [None] * size
        closed = [False] * size

        def worker(first: int) -> None:
            barrier.wait()
            for i in range(first, first + PER_THREAD):
                parents = (parent.token, other.token) if i % 2 else (parent.token,)
                child = CancellationTokenSource(*parents)
                children[i] = child
                reg = child.token.register(counter.bump, i)
                if i % 3 == 0:
                    removed[i] = reg.unregister()
                if i % 5 == 0:
                    child.close()
                    closed[i] = True

        def canceller() -> None:
            barrier.wait()
            parent.cancel("stop")

        _run_threads(
            [canceller]
            + [
                (lambda first=first: worker(first))  # type: ignore[misc]
                for first in range(0, size, PER_THREAD)
            ]
        )
        for i, child in enumerate(children):
            assert child is not None
            token = child.token
            calls = counter.calls[i]
            assert calls in (0, 1)
            if removed[i] is not None:
                assert removed[i] is (calls == 0)
            if not closed[i]:
                # Linked before or after the cancel: either way it follows.
                assert token.is_cancellation_requested
                assert token.reason == "stop"
                assert calls == (0 if removed[i] else 1)
            elif token.is_cancellation_requested:
                assert token.reason == "stop"
                assert calls == (0 if removed[i] else 1)
            else:
                assert calls == 0
            if token.is_cancellation_requested:
                _assert_no_registrations(token)
        _assert_no_registrations(parent.token)
        # Every link into the surviving parent was removed again.
        assert holds_nothing(other.token)
        assert _token_stats(other.token).strong_children == 0

    def test_children_created_and_closed_or_dropped_leave_no_links(self) -> None:
        parent = CancellationTokenSource()
        barrier = threading.Barrier(THREADS)
        ran: list[int] = []

        def worker(seed: int) -> None:
            barrier.wait()
            for i in range(PER_THREAD * 5):
                child = CancellationTokenSource(parent.token)
                grandchild = CancellationTokenSource(child.token)
                reg = grandchild.token.register(ran.append, seed)
                if i % 2:
                    assert reg.unregister()
                    grandchild.close()
                    child.close()
                else:
                    # Dropped with the registration removed: nothing holds them.
                    assert reg.unregister()
                del child, grandchild, reg

        _run_threads([(lambda s=s: worker(s)) for s in range(THREADS)])  # type: ignore[misc]
        assert holds_nothing(parent.token)
        assert _token_stats(parent.token).strong_children == 0
        assert not ran
        parent.cancel()
        assert not ran
