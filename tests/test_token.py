"""Unit tests of sources, tokens, registrations and the ambient token."""

from __future__ import annotations

import copy
import gc
import logging
import math
import pickle
import threading
import time
import weakref
from concurrent.futures import CancelledError

import pytest

from _helpers import holds_nothing
from cancellable import (
    CancellationToken,
    CancellationTokenRegistration,
    CancellationTokenSource,
    OperationCancelledError,
    _timer,
    current_token,
    use_token,
)
from cancellable._token import _token_stats
from conftest import FakeClock


class TestCancel:
    def test_new_source_is_not_cancelled(self) -> None:
        cts = CancellationTokenSource()
        assert not cts.token.is_cancellation_requested
        assert not cts.is_cancellation_requested
        assert cts.token.reason is None
        assert cts.token.can_be_cancelled

    def test_cancel_sets_flag_and_reason(self) -> None:
        cts = CancellationTokenSource()
        assert cts.cancel("stop") is None
        assert cts.token.is_cancellation_requested
        assert cts.token.reason == "stop"

    def test_cancel_is_idempotent_and_first_reason_wins(self) -> None:
        cts = CancellationTokenSource()
        cts.cancel("first")
        cts.cancel("second")
        assert cts.token.reason == "first"

    def test_first_cancel_without_reason_wins_too(self) -> None:
        cts = CancellationTokenSource()
        cts.cancel()
        cts.cancel("late")
        assert cts.token.reason is None
        assert cts.token.is_cancellation_requested

    def test_token_is_the_same_object_every_time(self) -> None:
        cts = CancellationTokenSource()
        assert cts.token is cts.token

    def test_tokens_of_different_sources_differ(self) -> None:
        a, b = CancellationTokenSource(), CancellationTokenSource()
        assert a.token != b.token
        assert a.token == a.token
        assert len({a.token, a.token, b.token}) == 2

    def test_raise_if_cancellation_requested(self) -> None:
        cts = CancellationTokenSource()
        cts.token.raise_if_cancellation_requested()
        cts.cancel("bye")
        with pytest.raises(OperationCancelledError) as raised:
            cts.token.raise_if_cancellation_requested()
        assert raised.value.token is cts.token
        assert raised.value.reason == "bye"
        assert "bye" in str(raised.value)

    def test_exception_reason_becomes_the_cause(self) -> None:
        cts = CancellationTokenSource()
        why = RuntimeError("disk full")
        cts.cancel(why)
        with pytest.raises(OperationCancelledError) as raised:
            cts.token.raise_if_cancellation_requested()
        assert raised.value.__cause__ is why
        assert raised.value.reason is why

    def test_error_is_a_concurrent_futures_cancelled_error(self) -> None:
        assert issubclass(OperationCancelledError, CancelledError)
        assert issubclass(OperationCancelledError, Exception)
        cts = CancellationTokenSource()
        cts.cancel()
        with pytest.raises(CancelledError):
            cts.token.raise_if_cancellation_requested()

    def test_error_pickles_without_its_token(self) -> None:
        error = OperationCancelledError("stopped", reason="why")
        again = pickle.loads(pickle.dumps(error))
        assert isinstance(again, OperationCancelledError)
        assert str(again) == "stopped"
        assert again.reason == "why"
        assert again.token is None


class TestRegister:
    def test_callbacks_run_once_latest_first(self) -> None:
        cts = CancellationTokenSource()
        calls: list[int] = []
        for i in range(5):
            cts.token.register(calls.append, i)
        cts.cancel()
        cts.cancel()
        assert calls == [4, 3, 2, 1, 0]

    def test_callbacks_run_on_the_cancelling_thread(self) -> None:
        cts = CancellationTokenSource()
        seen: list[threading.Thread] = []
        cts.token.register(lambda: seen.append(threading.current_thread()))
        thread = threading.Thread(target=cts.cancel)
        thread.start()
        thread.join()
        assert seen == [thread]

    def test_register_after_cancel_runs_now_on_this_thread(self) -> None:
        cts = CancellationTokenSource()
        cts.cancel()
        seen: list[threading.Thread] = []
        reg = cts.token.register(lambda: seen.append(threading.current_thread()))
        assert seen == [threading.current_thread()]
        assert reg.unregister() is False

    def test_register_after_cancel_propagates_the_callback_error(self) -> None:
        cts = CancellationTokenSource()
        cts.cancel()
        with pytest.raises(ZeroDivisionError):
            cts.token.register(lambda: 1 / 0)

    def test_unregister_before_cancel_prevents_the_call(self) -> None:
        cts = CancellationTokenSource()
        calls: list[str] = []
        reg = cts.token.register(calls.append, "x")
        assert reg.unregister() is True
        assert reg.unregister() is False
        cts.cancel()
        assert calls == []

    def test_unregister_after_run_returns_false(self) -> None:
        cts = CancellationTokenSource()
        reg = cts.token.register(lambda: None)
        cts.cancel()
        assert reg.unregister() is False

    def test_registration_as_context_manager(self) -> None:
        cts = CancellationTokenSource()
        calls: list[str] = []
        with cts.token.register(calls.append, "inside") as reg:
            assert isinstance(reg, CancellationTokenRegistration)
        cts.cancel()
        assert calls == []

    def test_unregister_inside_own_callback_returns_false_at_once(self) -> None:
        cts = CancellationTokenSource()
        results: list[bool] = []
        holder: list[CancellationTokenRegistration] = []
        holder.append(cts.token.register(lambda: results.append(holder[0].unregister())))
        cts.cancel()
        assert results == [False]

    def test_callback_can_unregister_a_later_one(self) -> None:
        cts = CancellationTokenSource()
        calls: list[str] = []
        first = cts.token.register(calls.append, "first")
        cts.token.register(lambda: calls.append(f"second unregistered first: {first.unregister()}"))
        cts.cancel()
        assert calls == ["second unregistered first: True"]

    def test_callback_registering_on_its_own_token_runs_at_once(self) -> None:
        cts = CancellationTokenSource()
        calls: list[str] = []
        cts.token.register(lambda: cts.token.register(calls.append, "nested"))
        cts.cancel()
        assert calls == ["nested"]

    def test_unregister_waits_for_a_callback_running_elsewhere(self) -> None:
        cts = CancellationTokenSource()
        started, release = threading.Event(), threading.Event()
        finished: list[bool] = []

        def slow() -> None:
            started.set()
            release.wait()
            finished.append(True)

        reg = cts.token.register(slow)
        canceller = threading.Thread(target=cts.cancel, daemon=True)
        canceller.start()
        assert started.wait(timeout=5)
        try:
            self._check_unregister_parks(cts, reg, release, finished)
        finally:
            release.set()
        canceller.join(timeout=5)

    @staticmethod
    def _check_unregister_parks(
        cts: CancellationTokenSource,
        reg: CancellationTokenRegistration,
        release: threading.Event,
        finished: list[bool],
    ) -> None:
        outcome: list[tuple[bool, list[bool]]] = []
        unregistering = threading.Thread(
            target=lambda: outcome.append((reg.unregister(), list(finished))), daemon=True
        )
        unregistering.start()
        # The one poll here: nothing public says "unregister() is now parked",
        # so watch the token's queue of parked unregister calls.
        deadline = time.monotonic() + 10
        while not cts.token._unreg_waiters and time.monotonic() < deadline:
            time.sleep(0.001)
        assert cts.token._unreg_waiters
        assert outcome == []
        release.set()
        unregistering.join(timeout=5)
        # When unregister() returned, the callback had already finished.
        assert outcome == [(False, [True])]

    def test_non_callable_is_rejected(self) -> None:
        cts = CancellationTokenSource()
        with pytest.raises(TypeError, match="callback must be callable, got 'int'"):
            cts.token.register(3)  # type: ignore[arg-type]

    def test_registration_cannot_be_built_directly(self) -> None:
        with pytest.raises(TypeError):
            CancellationTokenRegistration()

    def test_registrations_do_not_leak(self) -> None:
        cts = CancellationTokenSource()
        for _ in range(1000):
            cts.token.register(lambda: None).unregister()
        assert holds_nothing(cts.token)
        assert _token_stats(cts.token).strong_children == 0

    def test_callback_references_are_dropped_after_running(self) -> None:
        class Payload:
            pass

        cts = CancellationTokenSource()
        payload = Payload()
        ref = weakref.ref(payload)
        reg = cts.token.register(lambda p: None, payload)
        del payload
        cts.cancel()
        gc.collect()
        assert ref() is None
        assert reg.unregister() is False

    def test_repr_of_registration(self) -> None:
        cts = CancellationTokenSource()
        reg = cts.token.register(print)
        assert "registered" in repr(reg)
        reg.unregister()
        assert "inactive" in repr(reg)


class TestCallbackErrors:
    def test_cancel_raises_all_errors_as_one_group_after_running_all(self) -> None:
        cts = CancellationTokenSource()
        calls: list[str] = []
        cts.token.register(lambda: calls.append("last"))
        cts.token.register(lambda: 1 / 0)
        cts.token.register(lambda: calls.append("middle"))
        cts.token.register([].pop)
        with pytest.raises(ExceptionGroup) as raised:
            cts.cancel()
        kinds = [type(e) for e in raised.value.exceptions]
        assert kinds == [IndexError, ZeroDivisionError]
        assert calls == ["middle", "last"]
        assert cts.token.is_cancellation_requested

    def test_group_includes_linked_childrens_errors(self) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token)
        child.token.register(lambda: 1 / 0)
        parent.token.register([].pop)
        with pytest.raises(ExceptionGroup) as raised:
            parent.cancel()
        assert {type(e) for e in raised.value.exceptions} == {ZeroDivisionError, IndexError}

    def test_wait_accepts_a_huge_timeout(self) -> None:
        cts = CancellationTokenSource()
        outcome: list[object] = []
        waiter = threading.Thread(target=lambda: outcome.append(cts.token.wait(1e10)))
        waiter.start()
        # Polled: the registration is the only sign that the waiter is parked.
        deadline = time.monotonic() + 10
        while _token_stats(cts.token).registrations == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        cts.cancel()
        waiter.join(10)
        assert outcome == [True]  # not OverflowError

    @pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit])
    def test_interrupt_from_a_callback_comes_out_as_itself_after_the_others_ran(
        self, kind: type[BaseException], caplog: pytest.LogCaptureFixture
    ) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token)
        calls: list[str] = []
        parent.token.register(calls.append, "registered first")
        parent.token.register(lambda: 1 / 0)

        def interrupt() -> None:
            raise kind

        parent.token.register(interrupt)
        child.token.register(calls.append, "child")
        with pytest.raises(kind) as raised:
            parent.cancel()
        assert type(raised.value) is kind  # not wrapped in a group
        assert calls == ["registered first", "child"]  # latest first; the link came first
        assert child.token.is_cancellation_requested
        # The ordinary error has nowhere else to go: it is logged.
        assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)

    def test_cancel_during_propagating_exception_logs_instead(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        cts = CancellationTokenSource()
        cts.token.register(lambda: 1 / 0)
        with caplog.at_level(logging.ERROR, logger="cancellable"):
            try:
                raise RuntimeError("outer")
            except RuntimeError:
                cts.cancel()
        assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)

    def test_deadline_cancel_logs_callback_errors(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        cts = CancellationTokenSource(timeout=1)
        cts.token.register(lambda: 1 / 0)
        with caplog.at_level(logging.ERROR, logger="cancellable"):
            assert clock.advance(1) == 1
        assert cts.token.is_cancellation_requested
        assert [r.name for r in caplog.records] == ["cancellable"]


class TestLinked:
    def test_child_follows_parent_with_its_reason(self) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token)
        grandchild = CancellationTokenSource(child.token)
        parent.cancel("root reason")
        assert child.token.reason == "root reason"
        assert grandchild.token.reason == "root reason"

    def test_cancelling_a_child_leaves_the_parent(self) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token)
        child.cancel()
        assert not parent.token.is_cancellation_requested

    def test_any_of_is_cancelled_by_either_parent(self) -> None:
        a, b = CancellationTokenSource(), CancellationTokenSource()
        either = CancellationTokenSource(a.token, b.token)
        b.cancel("b went")
        assert either.token.reason == "b went"
        assert not a.token.is_cancellation_requested
        # Cancelled through b, it has detached from a.
        assert holds_nothing(a.token)

    def test_children_are_cancelled_depth_first_latest_first(self) -> None:
        root = CancellationTokenSource()
        order: list[str] = []
        first = CancellationTokenSource(root.token)
        first.token.register(order.append, "first")
        CancellationTokenSource(first.token).token.register(order.append, "first.child")
        second = CancellationTokenSource(root.token)
        second.token.register(order.append, "second")
        root.token.register(order.append, "root")
        root.cancel()
        # first.child was linked after "first" registered, so it goes first.
        assert order == ["root", "second", "first.child", "first"]

    def test_child_of_cancelled_parent_starts_cancelled(self) -> None:
        parent = CancellationTokenSource()
        parent.cancel("early")
        child = CancellationTokenSource(parent.token)
        assert child.token.is_cancellation_requested
        assert child.token.reason == "early"

    def test_none_parent_is_ignored(self) -> None:
        child = CancellationTokenSource(CancellationToken.NONE)
        assert child.token.can_be_cancelled
        assert not child.token.is_cancellation_requested

    def test_duplicate_parents_link_once(self) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token, parent.token)
        assert _token_stats(parent.token).children == 1
        parent.cancel()
        assert child.token.is_cancellation_requested

    def test_close_detaches_from_parents(self) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token)
        child.close()
        assert holds_nothing(parent.token)
        parent.cancel()
        assert not child.token.is_cancellation_requested

    def test_closed_source_can_still_be_cancelled_by_hand(self) -> None:
        cts = CancellationTokenSource()
        cts.close()
        cts.close()
        assert cts.closed
        cts.cancel("manual")
        assert cts.token.reason == "manual"

    def test_with_block_closes_never_cancels(self) -> None:
        parent = CancellationTokenSource()
        with CancellationTokenSource(parent.token) as child:
            pass
        assert child.closed
        assert not child.token.is_cancellation_requested
        assert holds_nothing(parent.token)

    def test_with_block_left_by_an_exception_does_not_cancel(self) -> None:
        with pytest.raises(KeyError), CancellationTokenSource() as cts:
            raise KeyError
        assert not cts.token.is_cancellation_requested

    def test_dropped_child_is_freed_and_unlinked(self) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token)
        ref = weakref.ref(child.token)
        del child
        gc.collect()
        assert ref() is None
        assert holds_nothing(parent.token)

    def test_dropped_child_with_a_callback_is_kept_alive_by_the_parent(self) -> None:
        parent = CancellationTokenSource()
        calls: list[str] = []
        reg = CancellationTokenSource(parent.token).token.register(calls.append, "child")
        gc.collect()
        parent.cancel()
        assert calls == ["child"]
        assert reg.unregister() is False

    def test_child_is_released_once_its_callbacks_are_gone(self) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token)
        reg = child.token.register(lambda: None)
        ref = weakref.ref(child.token)
        del child
        gc.collect()
        assert ref() is not None  # held through the registration
        reg.unregister()
        del reg
        gc.collect()
        assert ref() is None

    def test_grandchild_callback_keeps_the_whole_chain(self) -> None:
        root = CancellationTokenSource()
        calls: list[str] = []

        def build() -> None:
            middle = CancellationTokenSource(root.token)
            leaf = CancellationTokenSource(middle.token)
            leaf.token.register(calls.append, "leaf")

        build()
        gc.collect()
        root.cancel()
        assert calls == ["leaf"]

    def test_wrong_parent_types(self) -> None:
        cts = CancellationTokenSource()
        with pytest.raises(TypeError, match=r"pass source\.token"):
            CancellationTokenSource(cts)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="got 'str'"):
            CancellationTokenSource("token")  # type: ignore[arg-type]


class TestDeadlines:
    def test_timeout_cancels_with_a_timeout_error(self, clock: FakeClock) -> None:
        cts = CancellationTokenSource(timeout=5)
        clock.advance(4.999)
        assert not cts.token.is_cancellation_requested
        clock.advance(0.001)
        assert cts.token.is_cancellation_requested
        assert isinstance(cts.token.reason, TimeoutError)

    def test_cancel_after_rearms(self, clock: FakeClock) -> None:
        cts = CancellationTokenSource(timeout=1)
        cts.cancel_after(10)
        clock.advance(5)
        assert not cts.token.is_cancellation_requested
        clock.advance(5)
        assert cts.token.is_cancellation_requested

    def test_cancel_after_can_shorten(self, clock: FakeClock) -> None:
        cts = CancellationTokenSource(timeout=10)
        cts.cancel_after(1)
        clock.advance(1)
        assert cts.token.is_cancellation_requested

    def test_cancel_after_zero_cancels_now(self) -> None:
        cts = CancellationTokenSource()
        cts.cancel_after(0)
        assert isinstance(cts.token.reason, TimeoutError)

    def test_infinite_delay_disarms(self, clock: FakeClock) -> None:
        cts = CancellationTokenSource(timeout=1)
        cts.cancel_after(math.inf)
        clock.advance(1e9)
        assert not cts.token.is_cancellation_requested

    def test_close_disarms(self, clock: FakeClock) -> None:
        cts = CancellationTokenSource(timeout=1)
        cts.close()
        assert clock.advance(2) == 0
        assert not cts.token.is_cancellation_requested

    def test_manual_cancel_disarms(self, clock: FakeClock) -> None:
        cts = CancellationTokenSource(timeout=1)
        cts.cancel("manual")
        assert clock.advance(2) == 0
        assert cts.token.reason == "manual"

    def test_deadline_reaches_children_with_its_timeout_error(self, clock: FakeClock) -> None:
        parent = CancellationTokenSource(timeout=2)
        child = CancellationTokenSource(parent.token)
        clock.advance(2)
        assert child.token.reason is parent.token.reason
        assert isinstance(child.token.reason, TimeoutError)

    def test_any_of_with_timeout(self, clock: FakeClock) -> None:
        a, b = CancellationTokenSource(), CancellationTokenSource()
        either = CancellationTokenSource(a.token, b.token, timeout=5)
        clock.advance(5)
        assert isinstance(either.token.reason, TimeoutError)
        assert not a.token.is_cancellation_requested

    def test_deadline_fires_on_the_timer_thread_with_the_real_clock(self) -> None:
        cts = CancellationTokenSource()
        seen: list[str] = []
        cts.token.register(lambda: seen.append(threading.current_thread().name))
        cts.cancel_after(0.01)
        assert cts.token.wait(timeout=10)
        assert seen == ["cancellable-timer"]

    def test_dropped_source_with_timeout_still_fires(self, clock: FakeClock) -> None:
        token = CancellationTokenSource(timeout=1).token
        gc.collect()
        clock.advance(1)
        assert token.is_cancellation_requested

    def test_cancel_after_on_closed_source(self) -> None:
        cts = CancellationTokenSource()
        cts.close()
        with pytest.raises(ValueError, match="closed"):
            cts.cancel_after(1)

    def test_cancel_after_on_cancelled_source_is_a_no_op(self) -> None:
        cts = CancellationTokenSource()
        cts.cancel("done")
        pending = _timer.TIMER.pending()
        cts.cancel_after(1)
        assert _timer.TIMER.pending() == pending

    @pytest.mark.parametrize(
        ("value", "error", "match"),
        [
            (-1, ValueError, "non-negative"),
            (math.nan, ValueError, "NaN"),
            ("1", TypeError, "got 'str'"),
            (True, TypeError, "got 'bool'"),
        ],
    )
    def test_bad_delays(self, value: object, error: type[Exception], match: str) -> None:
        with pytest.raises(error, match=match):
            CancellationTokenSource(timeout=value)  # type: ignore[arg-type]
        with pytest.raises(error, match=match):
            CancellationTokenSource().cancel_after(value)  # type: ignore[arg-type]


class TestWait:
    def test_wait_times_out(self, no_leaked_threads: None) -> None:
        cts = CancellationTokenSource()
        assert cts.token.wait(timeout=0.01) is False
        assert holds_nothing(cts.token)

    def test_wait_on_cancelled_returns_true_at_once(self) -> None:
        cts = CancellationTokenSource()
        cts.cancel()
        assert cts.token.wait() is True
        assert cts.token.wait(timeout=0) is True

    def test_wait_is_woken_by_cancel(self, no_leaked_threads: None) -> None:
        cts = CancellationTokenSource()
        results: list[bool] = []
        waiting = threading.Barrier(2)

        def waiter() -> None:
            waiting.wait()
            results.append(cts.token.wait(timeout=30))

        thread = threading.Thread(target=waiter)
        thread.start()
        waiting.wait()
        cts.cancel()
        thread.join(timeout=10)
        assert results == [True]

    def test_wait_on_none_times_out(self) -> None:
        assert CancellationToken.NONE.wait(timeout=0.001) is False

    @pytest.mark.parametrize("timeout", [-0.5, math.nan])
    def test_bad_wait_timeouts(self, timeout: float) -> None:
        with pytest.raises(ValueError, match="timeout"):
            CancellationTokenSource().token.wait(timeout)


class TestNone:
    def test_none_is_never_cancelled(self) -> None:
        none = CancellationToken.NONE
        assert not none.can_be_cancelled
        assert not none.is_cancellation_requested
        assert none.reason is None
        none.raise_if_cancellation_requested()

    def test_register_on_none_is_a_no_op(self) -> None:
        reg = CancellationToken.NONE.register(lambda: None)
        assert reg.unregister() is False

    def test_none_pickles_to_the_singleton(self) -> None:
        assert pickle.loads(pickle.dumps(CancellationToken.NONE)) is CancellationToken.NONE

    def test_tokens_and_sources_do_not_pickle(self) -> None:
        cts = CancellationTokenSource()
        with pytest.raises(TypeError, match="cannot pickle a CancellationToken"):
            pickle.dumps(cts.token)
        with pytest.raises(TypeError, match="cannot pickle a CancellationTokenSource"):
            pickle.dumps(cts)

    def test_copy_returns_the_same_token(self) -> None:
        token = CancellationTokenSource().token
        assert copy.copy(token) is token
        assert copy.deepcopy(token) is token

    def test_token_cannot_be_built_directly(self) -> None:
        with pytest.raises(TypeError, match="CancellationTokenSource"):
            CancellationToken()


class TestRepr:
    def test_reprs_show_state_and_reason(self) -> None:
        cts = CancellationTokenSource()
        assert repr(cts.token) == "<CancellationToken active>"
        assert repr(cts) == "<CancellationTokenSource active>"
        cts.cancel("why")
        assert repr(cts.token) == "<CancellationToken cancelled reason='why'>"
        assert repr(cts) == "<CancellationTokenSource cancelled reason='why'>"
        assert repr(CancellationToken.NONE) == "<CancellationToken NONE>"
        closed = CancellationTokenSource()
        closed.close()
        assert repr(closed) == "<CancellationTokenSource closed>"

    def test_weak_references_work(self) -> None:
        cts = CancellationTokenSource()
        assert weakref.ref(cts)() is cts
        assert weakref.ref(cts.token)() is cts.token


class TestAmbient:
    def test_default_is_none(self) -> None:
        assert current_token() is CancellationToken.NONE

    def test_use_token_sets_and_restores(self) -> None:
        cts = CancellationTokenSource()
        with use_token(cts.token) as token:
            assert token is cts.token
            assert current_token() is cts.token
            with use_token(CancellationToken.NONE):
                assert current_token() is CancellationToken.NONE
            assert current_token() is cts.token
        assert current_token() is CancellationToken.NONE

    def test_use_token_is_per_thread(self) -> None:
        cts = CancellationTokenSource()
        seen: list[CancellationToken] = []
        with use_token(cts.token):
            thread = threading.Thread(target=lambda: seen.append(current_token()))
            thread.start()
            thread.join()
        assert seen == [CancellationToken.NONE]

    def test_use_token_rejects_other_types(self) -> None:
        with pytest.raises(TypeError, match="token must be a CancellationToken"), use_token(None):  # type: ignore[arg-type]
            pass

    def test_lazy_provider_is_asked_for_its_token(self) -> None:
        from cancellable import _token

        cts = CancellationTokenSource()

        class Provider:
            @property
            def token(self) -> CancellationToken:
                return cts.token

        reset = _token._ambient.set(Provider())
        try:
            assert current_token() is cts.token
        finally:
            _token._ambient.reset(reset)


class TestTimer:
    def test_many_deadlines_share_one_thread(self) -> None:
        sources = [CancellationTokenSource(timeout=3600 + i) for i in range(2000)]
        timers = [t for t in threading.enumerate() if t.name == "cancellable-timer"]
        assert len(timers) == 1
        assert timers[0].daemon
        for cts in sources:
            cts.close()

    def test_disarmed_entries_are_compacted(self, clock: FakeClock) -> None:
        before = len(_timer.TIMER._heap)
        sources = [CancellationTokenSource(timeout=10) for _ in range(1000)]
        for cts in sources:
            cts.close()
        assert len(_timer.TIMER._heap) - before < 200
        assert clock.advance(10) == 0

    def test_deadline_callback_errors_are_logged(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        def boom() -> None:
            raise RuntimeError("boom")

        _timer.TIMER.arm(clock() + 1, boom)
        with caplog.at_level(logging.ERROR, logger="cancellable"):
            clock.advance(1)
        assert any("deadline" in r.getMessage() for r in caplog.records)
