"""Token-aware locks, events, semaphores, conditions, barriers, sleep and join.

Threads are never synchronised by sleeping: a test that needs a thread to be
blocked waits until the thread has started its one blocking acquire of the
waiter lock (the `waiters` fixture wraps that lock), which happens after the
token callback is registered, so a cancel from then on is a cancel of a
blocked wait.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import cancellable
from _helpers import (
    Injected,
    Outcome,
    RecordingLock,
    WaiterLog,
    in_thread,
    inject_at_each_line,
    install_waiter_log,
    interrupt_when_asleep,
    package_files,
    waiters,
)
from cancellable import (
    Barrier,
    BoundedSemaphore,
    CancellationToken,
    CancellationTokenSource,
    Condition,
    Event,
    Lock,
    OperationCancelledError,
    RLock,
    Semaphore,
    use_token,
)
from cancellable._token import _token_stats

PRIMITIVES_PY = package_files("_primitives.py")

# The shared helpers live in _helpers; test_queues.py imports them from here.
__all__ = ["Outcome", "RecordingLock", "WaiterLog", "in_thread", "install_waiter_log", "waiters"]


def no_registrations(token: CancellationToken) -> bool:
    return _token_stats(token).registrations == 0


def assert_cancelled(outcome: Outcome, token: CancellationToken) -> None:
    assert isinstance(outcome.error, OperationCancelledError), outcome.error
    assert outcome.error.token is token
    assert outcome.error.reason == "stop"


# -- the blocking operations, each with a primitive that blocks it -----------------


@dataclass
class Case:
    """A blocking call: ``make()`` builds a primitive on which ``call`` blocks."""

    name: str
    make: Callable[[], Any]
    call: Callable[[Any, CancellationToken | None, float | None], Any]
    after_cancel: Callable[[Any], None]
    timed_out: Any = False


def _held_lock() -> Lock:
    lock = Lock()
    lock.acquire()
    return lock


def _lock_after_cancel(lock: Any) -> None:
    # The cancelled waiter holds nothing: once the owner releases, it is free.
    lock.release()
    assert not lock.locked()
    assert not lock._waiters


_HOLDERS: list[tuple[threading.Thread, threading.Event]] = []


def _rlock_held_elsewhere() -> RLock:
    # Held by another live thread (released after the test), so the test's
    # threads cannot re-enter it.
    rlock = RLock()
    held, gate = threading.Event(), threading.Event()

    def hold() -> None:
        with rlock:
            held.set()
            gate.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    _HOLDERS.append((holder, gate))
    return rlock


@pytest.fixture(autouse=True)
def _release_holders() -> Iterator[None]:
    yield
    while _HOLDERS:
        holder, gate = _HOLDERS.pop()
        gate.set()
        holder.join()


def _rlock_after_cancel(rlock: Any) -> None:
    holder, _ = _HOLDERS[-1]
    assert f"owner={holder.ident} count=1" in repr(rlock)  # still the holder's, once
    assert not rlock._waiters


def _lock_timeout(timeout: float | None) -> float:
    return -1 if timeout is None else timeout


def _cond_wait(cond: Condition, token: CancellationToken | None, timeout: float | None) -> Any:
    with cond:
        try:
            return cond.wait(timeout, token=token)
        finally:
            cond.extra_owned = cond._is_owned()  # type: ignore[attr-defined]


def _cond_wait_for(cond: Condition, token: CancellationToken | None, timeout: float | None) -> Any:
    with cond:
        try:
            return cond.wait_for(lambda: False, timeout, token=token)
        finally:
            cond.extra_owned = cond._is_owned()  # type: ignore[attr-defined]


def _cond_after_cancel(cond: Any) -> None:
    assert cond.extra_owned  # re-acquired before raising
    assert not cond._waiters
    assert cond.acquire(False)  # and released again on the way out
    cond.release()


def _taken_semaphore(kind: type[Semaphore]) -> Callable[[], Semaphore]:
    def make() -> Semaphore:
        sem = kind(1)
        sem.acquire()
        return sem

    return make


def _sem_after_cancel(sem: Any) -> None:
    assert sem._value == 0
    sem.release()
    assert sem._value == 1
    assert not sem._cond._waiters


def _barrier_after_cancel(barrier: Barrier) -> None:
    assert barrier.broken  # as a timeout would leave it
    assert barrier.n_waiting == 0


def _barrier_wait(b: Barrier, token: CancellationToken | None, timeout: float | None) -> Any:
    try:
        return b.wait(timeout, token=token)
    except threading.BrokenBarrierError:
        return "broken"


CASES = [
    Case(
        "Event.wait",
        Event,
        lambda e, tok, t: e.wait(t, token=tok),
        lambda e: None if not e._cond._waiters else pytest.fail("waiter left behind"),
    ),
    Case(
        "Lock.acquire",
        _held_lock,
        lambda lock, tok, t: lock.acquire(timeout=_lock_timeout(t), token=tok),
        _lock_after_cancel,
    ),
    Case(
        "RLock.acquire",
        _rlock_held_elsewhere,
        lambda lock, tok, t: lock.acquire(timeout=_lock_timeout(t), token=tok),
        _rlock_after_cancel,
    ),
    Case(
        "Semaphore.acquire",
        _taken_semaphore(Semaphore),
        lambda s, tok, t: s.acquire(timeout=t, token=tok),
        _sem_after_cancel,
    ),
    Case(
        "BoundedSemaphore.acquire",
        _taken_semaphore(BoundedSemaphore),
        lambda s, tok, t: s.acquire(timeout=t, token=tok),
        _sem_after_cancel,
    ),
    Case("Condition.wait", Condition, _cond_wait, _cond_after_cancel),
    Case(
        "Condition(Lock).wait",
        lambda: Condition(Lock()),
        _cond_wait,
        _cond_after_cancel,
    ),
    Case(
        "Condition(threading.RLock).wait",
        lambda: Condition(threading.RLock()),
        _cond_wait,
        _cond_after_cancel,
    ),
    Case("Condition.wait_for", Condition, _cond_wait_for, _cond_after_cancel),
    Case(
        "Barrier.wait",
        lambda: Barrier(2),
        _barrier_wait,
        _barrier_after_cancel,
        timed_out="broken",
    ),
    Case(
        "sleep",
        lambda: None,
        lambda _, tok, t: cancellable.sleep(30 if t is None else t, token=tok),
        lambda _: None,
        timed_out=None,
    ),
]


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


class TestEveryBlockingCall:
    def test_blocked_then_cancelled(self, case: Case, waiters: WaiterLog) -> None:
        obj = case.make()
        cts = CancellationTokenSource()
        outcome = in_thread(lambda: case.call(obj, cts.token, None))
        waiters.wait_blocked()
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)
        case.after_cancel(obj)
        assert no_registrations(cts.token)

    def test_ambient_token_is_used(self, case: Case, waiters: WaiterLog) -> None:
        obj = case.make()
        cts = CancellationTokenSource()

        def call() -> Any:
            with use_token(cts.token):
                return case.call(obj, None, None)

        outcome = in_thread(call)
        waiters.wait_blocked()
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)
        case.after_cancel(obj)

    def test_cancelled_before_call_raises(self, case: Case) -> None:
        obj = case.make()
        cts = CancellationTokenSource()
        cts.cancel("stop")
        with pytest.raises(OperationCancelledError):
            case.call(obj, cts.token, 5)
        assert no_registrations(cts.token)

    def test_timeout_alongside_a_live_token(self, case: Case) -> None:
        obj = case.make()
        cts = CancellationTokenSource()
        # A real, short timeout is the behaviour under test here.
        assert case.call(obj, cts.token, 0.02) == case.timed_out
        assert no_registrations(cts.token)
        assert not cts.token.is_cancellation_requested

    def test_none_token_opts_out_of_the_ambient_one(self, case: Case) -> None:
        obj = case.make()
        cts = CancellationTokenSource()
        cts.cancel("stop")
        with use_token(cts.token):
            assert case.call(obj, CancellationToken.NONE, 0.02) == case.timed_out

    def test_one_blocking_acquire_with_the_callers_timeout(
        self, case: Case, waiters: WaiterLog
    ) -> None:
        obj = case.make()
        cts = CancellationTokenSource()
        before = threading.active_count()
        outcome = in_thread(lambda: case.call(obj, cts.token, 20))
        waiters.wait_blocked()
        # No helper thread: only the waiting thread itself was added.
        assert threading.active_count() == before + 1
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)
        assert len(waiters.timeouts) == 1
        # Loops that recompute the remaining time pass on a hair less.
        assert 19 < waiters.timeouts[0] <= 20
        assert no_registrations(cts.token)
        assert threading.active_count() == before

    def test_any_large_timeout_is_accepted_and_capped(self, case: Case, waiters: WaiterLog) -> None:
        obj = case.make()
        cts = CancellationTokenSource()
        outcome = in_thread(lambda: case.call(obj, cts.token, 1e10))
        waiters.wait_blocked()
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)  # not OverflowError
        assert all(t <= threading.TIMEOUT_MAX for t in waiters.timeouts)
        case.after_cancel(obj)

    @pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
    def test_ctrl_c_while_blocked_leaves_nothing_queued(
        self, case: Case, waiters: WaiterLog
    ) -> None:
        obj = case.make()
        cts = CancellationTokenSource()
        main = threading.current_thread()

        def interrupt() -> None:
            waiters.wait_blocked()  # the main thread is about to park on its waiter lock
            interrupt_when_asleep(main)

        sender = in_thread(interrupt)
        with pytest.raises(KeyboardInterrupt):
            case.call(obj, cts.token, None)
        sender.join()
        assert sender.error is None
        # Nothing left behind: the same checks as after a cancel.
        case.after_cancel(obj)
        assert no_registrations(cts.token)


@pytest.mark.parametrize("kind", [Lock, RLock])
@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_after_a_ctrl_c_in_acquire_the_next_release_wakes_a_live_waiter(
    kind: type[Lock] | type[RLock], waiters: WaiterLog
) -> None:
    lock = kind()
    cts = CancellationTokenSource()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait()

    holder = in_thread(hold)
    assert held.wait(10)
    main = threading.current_thread()

    def interrupt() -> None:
        waiters.wait_blocked(1)
        interrupt_when_asleep(main)

    sender = in_thread(interrupt)
    with pytest.raises(KeyboardInterrupt):
        lock.acquire(token=cts.token)
    sender.join()
    # A live waiter now queues behind where the dead one was.
    live = in_thread(lambda: lock.acquire(token=cts.token) and lock.release())
    waiters.wait_blocked(2)
    release.set()
    holder.join()
    live.join()  # it got the lock: the release did not go to the dead waiter
    assert live.error is None
    assert not lock.locked()


class TestInterruptedAnywhere:
    """A KeyboardInterrupt injected at every line of a token-aware wait."""

    @pytest.mark.parametrize("kind", [Lock, RLock])
    def test_contended_acquire_leaves_no_waiter_and_takes_nothing(
        self, kind: type[Lock] | type[RLock]
    ) -> None:
        cts = CancellationTokenSource()

        def setup() -> Lock | RLock:
            lock = kind()
            holder = threading.Thread(target=lock.acquire)  # held by a thread that is gone
            holder.start()
            holder.join()
            return lock

        def check(lock: Lock | RLock, error: BaseException | None) -> None:
            assert error is None or type(error) is Injected
            assert not lock._waiters
            assert lock.locked()  # still the other thread's; this one took nothing
            # (A registration may be left on the token when the interrupt lands
            # at a finally's first line, which tracing can reach but a signal
            # cannot: it only releases a dead waiter lock if the token fires.)

        report = inject_at_each_line(
            lambda lock: lock.acquire(timeout=0.001, token=cts.token),
            files=PRIMITIVES_PY,
            check=check,
            setup=setup,
        )
        assert report.lines > 10

    # Over the C locks: our own Lock and RLock release in Python (inside
    # _release_save), which has the window the README describes.
    @pytest.mark.parametrize("lock", [threading.Lock, threading.RLock], ids=["Lock", "RLock"])
    def test_condition_wait_leaves_no_waiter_and_holds_the_lock_again(
        self, lock: Callable[[], Any]
    ) -> None:
        cts = CancellationTokenSource()

        def setup() -> Condition:
            cond = Condition(lock())
            cond.acquire()
            return cond

        def check(cond: Condition, error: BaseException | None) -> None:
            assert error is None or type(error) is Injected
            assert not cond._waiters
            assert cond._is_owned()
            cond.release()
            assert cond.acquire(False)
            cond.release()

        inject_at_each_line(
            lambda cond: cond.wait(0.001, token=cts.token),
            files=PRIMITIVES_PY,
            check=check,
            setup=setup,
        )

    @pytest.mark.parametrize("kind", [Lock, RLock])
    def test_with_block_window_is_at_most_the_entry_of_exit(
        self, kind: type[Lock] | type[RLock]
    ) -> None:
        # What the README's known limitations describe: the one line at which
        # an interrupt leaves the lock held is the first of __exit__, before
        # the release (threading.Condition has the same window).
        leaks: list[int] = []

        def check(lock: Lock | RLock, error: BaseException | None) -> None:
            if lock.locked():
                leaks.append(1)
                lock.release()

        report = inject_at_each_line(
            lambda lock: lock.__enter__() and lock.__exit__(None, None, None),
            files=PRIMITIVES_PY,
            check=check,
            setup=kind,
        )
        assert report.lines >= 2
        assert len(leaks) <= 1


# -- no token: the stdlib's behaviour ------------------------------------------------


@pytest.mark.parametrize("make", [RLock, threading.RLock], ids=["ours", "stdlib"])
def test_rlock_locked_is_true_while_any_thread_holds_it(make: Callable[[], Any]) -> None:
    # Python 3.14's threading.RLock.locked(): the holder sees True too.
    lock = make()
    if not hasattr(lock, "locked"):
        pytest.skip("threading.RLock.locked() exists from Python 3.14")
    assert not lock.locked()
    with lock:
        assert lock.locked()
        with lock:
            assert lock.locked()
        other = in_thread(lock.locked)
        other.join()
        assert other.value is True
    assert not lock.locked()


class TestDropIn:
    def test_classes_subclass_the_stdlib_ones(self) -> None:
        assert issubclass(Event, threading.Event)
        assert issubclass(Condition, threading.Condition)
        assert issubclass(Semaphore, threading.Semaphore)
        assert issubclass(BoundedSemaphore, threading.BoundedSemaphore)
        assert issubclass(BoundedSemaphore, Semaphore)
        assert issubclass(Barrier, threading.Barrier)

    def test_stdlib_condition_accepts_our_locks(self) -> None:
        for lock in (Lock(), RLock()):
            cond = threading.Condition(lock)  # type: ignore[arg-type]
            with cond:
                assert cond.wait(0.001) is False
            assert not lock.locked()

    def test_non_blocking_forms_ignore_a_cancelled_token(self) -> None:
        cts = CancellationTokenSource()
        cts.cancel()
        tok = cts.token
        lock, rlock = Lock(), RLock()
        assert lock.acquire(False, token=tok)
        assert not lock.acquire(False, token=tok)
        assert lock.acquire(timeout=0, token=tok) is False
        assert rlock.acquire(False, token=tok)
        sem = Semaphore(1)
        assert sem.acquire(False, token=tok)
        assert not sem.acquire(timeout=0, token=tok)
        event = Event()
        assert event.wait(0, token=tok) is False
        cond = Condition()
        with cond:
            assert cond.wait(0, token=tok) is False
        cancellable.sleep(0, token=tok)

    def test_ambient_cancelled_token_does_not_stop_a_call_that_can_complete(self) -> None:
        cts = CancellationTokenSource()
        cts.cancel()
        lock, sem, event = Lock(), Semaphore(1), Event()
        event.set()
        with use_token(cts.token):
            assert lock.acquire()
            assert sem.acquire()
            assert event.wait()
            with pytest.raises(OperationCancelledError):
                lock.acquire()  # would block: now the ambient token counts

    def test_explicit_cancelled_token_raises_even_if_the_call_could_complete(self) -> None:
        cts = CancellationTokenSource()
        cts.cancel()
        lock, rlock, sem, event = Lock(), RLock(), Semaphore(1), Event()
        event.set()
        for call in (
            lambda: lock.acquire(token=cts.token),
            lambda: rlock.acquire(token=cts.token),
            lambda: sem.acquire(token=cts.token),
            lambda: event.wait(token=cts.token),
            lambda: Barrier(1).wait(token=cts.token),
        ):
            with pytest.raises(OperationCancelledError):
                call()
        assert not lock.locked()
        assert not rlock.locked()
        assert sem._value == 1

    def test_lock_argument_errors_match_the_c_lock(self) -> None:
        for ours, theirs in ((Lock(), threading.Lock()), (RLock(), threading.RLock())):
            for args, kwargs in (((False, 1), {}), ((), {"timeout": -5})):
                with pytest.raises(ValueError, match="timeout") as mine:
                    ours.acquire(*args, **kwargs)
                with pytest.raises(ValueError, match="timeout") as stdlib:
                    theirs.acquire(*args, **kwargs)
                assert str(mine.value) == str(stdlib.value)
            with pytest.raises(OverflowError):
                ours.acquire(timeout=threading.TIMEOUT_MAX * 2)

    def test_lock_reprs(self) -> None:
        lock = Lock()
        assert repr(lock).startswith("<unlocked cancellable.Lock object at ")
        rlock = RLock()
        rlock.acquire()
        assert f"owner={threading.get_ident()} count=1" in repr(rlock)
        rlock.release()

    def test_rlock_release_by_other_thread_fails(self) -> None:
        rlock = RLock()
        rlock.acquire()
        outcome = in_thread(rlock.release)
        outcome.join()
        assert isinstance(outcome.error, RuntimeError)
        rlock.release()

    def test_semaphore_enter_uses_the_ambient_token(self, waiters: WaiterLog) -> None:
        sem = Semaphore(0)
        cts = CancellationTokenSource()

        def call() -> None:
            with use_token(cts.token), sem:
                pass

        outcome = in_thread(call)
        waiters.wait_blocked()
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)
        assert sem._value == 0


# -- races: what was handed over before the cancel wins ------------------------------


class TestHandover:
    def test_condition_notify_then_cancel_returns_true(self, waiters: WaiterLog) -> None:
        cond = Condition()
        cts = CancellationTokenSource()
        outcome = in_thread(lambda: _cond_wait(cond, cts.token, None))
        waiters.wait_blocked()
        with cond:
            cond.notify()
            cts.cancel("stop")  # the waiter cannot run until we release the lock
        outcome.join()
        assert outcome.error is None
        assert outcome.value is True

    def test_cancelled_waiter_passes_the_notify_on(self, waiters: WaiterLog) -> None:
        cond = Condition()
        first, second = CancellationTokenSource(), CancellationTokenSource()
        a = in_thread(lambda: _cond_wait(cond, first.token, None))
        waiters.wait_blocked(1)
        b = in_thread(lambda: _cond_wait(cond, second.token, None))
        waiters.wait_blocked(2)
        with cond:
            first.cancel("stop")
            cond.notify(1)  # skips the cancelled first waiter
        a.join()
        b.join()
        assert_cancelled(a, first.token)
        assert b.value is True

    @pytest.mark.parametrize("kind", [Lock, RLock])
    def test_lock_release_then_cancel_acquires(
        self, kind: type[Lock] | type[RLock], waiters: WaiterLog
    ) -> None:
        lock = kind()
        lock.acquire()
        cts = CancellationTokenSource()
        outcome = in_thread(lambda: lock.acquire(token=cts.token))
        waiters.wait_blocked()
        lock.release()
        cts.cancel("stop")
        outcome.join()
        assert outcome.value is True, outcome.error
        assert lock.locked()

    def test_semaphore_release_then_cancel_takes_the_permit(self, waiters: WaiterLog) -> None:
        sem = Semaphore(0)
        cts = CancellationTokenSource()
        outcome = in_thread(lambda: sem.acquire(token=cts.token))
        waiters.wait_blocked()
        with sem._cond:
            sem._value += 1
            sem._cond.notify()
            cts.cancel("stop")
        outcome.join()
        assert outcome.value is True
        assert sem._value == 0

    def test_barrier_passed_before_the_cancel_is_seen_returns(self, waiters: WaiterLog) -> None:
        barrier = Barrier(2)
        cts = CancellationTokenSource()
        outcome = in_thread(lambda: barrier.wait(token=cts.token))
        waiters.wait_blocked()
        with barrier._cond:
            barrier._count += 1
            barrier._release()  # the barrier trips...
            cts.cancel("stop")  # ...before the waiter sees the cancel
            barrier._count -= 1
        outcome.join()
        assert outcome.value == 0
        assert not barrier.broken

    def test_cancelled_barrier_wait_breaks_it_for_the_others(self, waiters: WaiterLog) -> None:
        barrier = Barrier(3)
        cts = CancellationTokenSource()
        other = in_thread(lambda: barrier.wait(token=CancellationTokenSource().token))
        waiters.wait_blocked(1)
        mine = in_thread(lambda: barrier.wait(token=cts.token))
        waiters.wait_blocked(2)
        cts.cancel("stop")
        mine.join()
        other.join()
        assert_cancelled(mine, cts.token)
        assert isinstance(other.error, threading.BrokenBarrierError)


# -- event-driven wake-up for the lock loops ------------------------------------------


def test_lock_with_both_kinds_of_waiters_wakes_each(waiters: WaiterLog) -> None:
    lock = Lock()
    lock.acquire()
    cts = CancellationTokenSource()
    plain = in_thread(lambda: lock.acquire(token=CancellationToken.NONE) and lock.release())
    tokened = in_thread(lambda: lock.acquire(token=cts.token) and lock.release())
    waiters.wait_blocked()
    lock.release()
    plain.join()
    tokened.join()
    assert plain.error is None
    assert tokened.error is None
    assert not lock.locked()


# -- sleep and join --------------------------------------------------------------------


def test_sleep_with_none_token_sleeps() -> None:
    start = time.monotonic()
    cancellable.sleep(0.01, token=CancellationToken.NONE)  # sleeping is the behaviour
    assert time.monotonic() - start >= 0.009


def test_sleep_rejects_bad_seconds() -> None:
    with pytest.raises(ValueError, match="seconds must be non-negative"):
        cancellable.sleep(-1)
    with pytest.raises(TypeError, match="seconds must be a number"):
        cancellable.sleep("1")  # type: ignore[arg-type]


class TestJoin:
    def test_blocked_then_cancelled(self, waiters: WaiterLog) -> None:
        gate = threading.Event()
        target = threading.Thread(target=gate.wait)
        target.start()
        cts = CancellationTokenSource()
        outcome = in_thread(lambda: cancellable.join(target, token=cts.token))
        waiters.wait_blocked()
        cts.cancel("stop")
        outcome.join()
        assert_cancelled(outcome, cts.token)
        assert target.is_alive()
        assert no_registrations(cts.token)
        gate.set()
        cancellable.join(target, token=CancellationTokenSource().token)
        assert not target.is_alive()

    def test_one_helper_thread_per_joined_thread(self, waiters: WaiterLog) -> None:
        gate = threading.Event()
        target = threading.Thread(target=gate.wait)
        target.start()
        cts = CancellationTokenSource()
        joiners = [in_thread(lambda: cancellable.join(target, token=cts.token)) for _ in range(3)]
        waiters.wait_blocked(3)
        helpers = [t for t in threading.enumerate() if t.name.startswith("cancellable-join-")]
        gate.set()
        for joiner in joiners:
            joiner.join()
            assert joiner.error is None
        assert len(helpers) == 1
        assert not target.is_alive()

    def test_timeout_and_errors(self) -> None:
        gate = threading.Event()
        target = threading.Thread(target=gate.wait)
        with pytest.raises(RuntimeError, match="before it is started"):
            cancellable.join(target, token=CancellationTokenSource().token)
        target.start()
        cancellable.join(target, 0.01, token=CancellationTokenSource().token)
        assert target.is_alive()
        with pytest.raises(RuntimeError, match="current thread"):
            cancellable.join(threading.current_thread())
        gate.set()
        cancellable.join(target)
        assert not target.is_alive()

    def test_cancelled_before_call_raises(self) -> None:
        cts = CancellationTokenSource()
        cts.cancel("stop")
        target = threading.Thread(target=lambda: None)
        target.start()
        target.join()
        with pytest.raises(OperationCancelledError):
            cancellable.join(target, token=cts.token)


# -- no permit lost under 10,000 random cancels ---------------------------------------


def churn(
    workers: int,
    op: Callable[[CancellationToken], None],
    cancels: int = 10_000,
    settle: Callable[[], None] | None = None,
) -> list[int]:
    """Run ``op(token)`` in a loop on ``workers`` threads while ``cancels`` random
    cancels hit their tokens; then run ``settle()`` with the workers still
    running, and stop them. Return how many calls each thread saw cancelled."""
    sources = [CancellationTokenSource() for _ in range(workers)]
    cancelled = [0] * workers
    stop = threading.Event()
    rng = random.Random(1)

    def run(i: int) -> None:
        while not stop.is_set():
            try:
                op(sources[i].token)
            except OperationCancelledError:
                cancelled[i] += 1
                sources[i] = CancellationTokenSource()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    done = 0
    while done < cancels:
        source = sources[rng.randrange(workers)]
        if source.is_cancellation_requested:
            time.sleep(0)  # yield the GIL to the worker that must replace it
            continue
        source.cancel()
        done += 1
    if settle is not None:
        settle()
    stop.set()
    for source in list(sources):
        source.cancel()
    for thread in threads:
        thread.join(timeout=20)
        assert not thread.is_alive()
    return cancelled


@pytest.mark.parametrize("kind", [Semaphore, BoundedSemaphore])
def test_no_permit_lost_under_random_cancels(kind: type[Semaphore]) -> None:
    permits = 2
    sem = kind(permits)
    guard = threading.Lock()
    state = {"in_use": 0, "peak": 0, "ok": 0}

    def op(token: CancellationToken) -> None:
        if not sem.acquire(token=token):
            raise AssertionError("acquire without timeout returned False")
        with guard:
            state["in_use"] += 1
            state["peak"] = max(state["peak"], state["in_use"])
            state["ok"] += 1
        time.sleep(0)  # let the GIL go while holding the permit, so others block
        with guard:
            state["in_use"] -= 1
        sem.release()

    cancelled = churn(6, op)
    assert sum(cancelled) > 0
    assert state["ok"] > 0
    assert state["peak"] <= permits
    assert sem._value == permits  # every permit is back
    assert not sem._cond._waiters
    assert all(sem.acquire(False) for _ in range(permits))
    assert not sem.acquire(False)


@pytest.mark.parametrize("kind", [Lock, RLock])
def test_no_lock_state_lost_under_random_cancels(kind: type[Lock] | type[RLock]) -> None:
    lock = kind()
    state = {"inside": 0, "ok": 0}

    def op(token: CancellationToken) -> None:
        lock.acquire(token=token)
        try:
            state["inside"] += 1
            assert state["inside"] == 1
            state["ok"] += 1
            time.sleep(0)  # let the GIL go while holding the lock, so others block on it
            state["inside"] -= 1
        finally:
            lock.release()

    cancelled = churn(6, op)
    assert sum(cancelled) > 0
    assert state["ok"] > 0
    assert not lock.locked()
    assert not lock._waiters


def test_no_notify_lost_under_random_cancels() -> None:
    lock = Lock()
    tickets_ready, space = Condition(lock), Condition(lock)
    state = {"tickets": 0, "given": 0, "taken": 0}
    producing = threading.Event()
    producing.set()

    def consume(token: CancellationToken) -> None:
        with lock:
            tickets_ready.wait_for(lambda: state["tickets"] > 0, token=token)
            state["tickets"] -= 1
            state["taken"] += 1
            space.notify()

    def produce() -> None:
        while producing.is_set():
            with lock:
                space.wait_for(lambda: state["tickets"] < 3, token=CancellationToken.NONE)
                state["tickets"] += 1
                state["given"] += 1
                tickets_ready.notify()  # one notify per ticket: none may be lost

    def settle() -> None:
        producing.clear()
        producer.join()
        # With the cancels over, every ticket must still find a consumer.
        with lock:
            assert space.wait_for(lambda: state["tickets"] == 0, timeout=10), state

    producer = threading.Thread(target=produce)
    producer.start()
    cancelled = churn(6, consume, settle=settle)
    assert sum(cancelled) > 0
    assert state["given"] == state["taken"] > 0
    assert not tickets_ready._waiters


@pytest.fixture(autouse=True)
def _no_stray_threads(no_leaked_threads: None, _release_holders: None) -> None:
    """Every test here runs under the leaked-thread guard."""
