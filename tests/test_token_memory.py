"""What tokens keep alive: linked children, dropped children, deadlines.

A parent holds a linked child only weakly unless the child has registrations
or waiters, so short-lived children must not pile up under a long-lived
parent, and a child somebody registered on must not vanish. All deadlines
share one timer thread whose heap shrinks back when they are disarmed.
"""

from __future__ import annotations

import gc
import threading
import tracemalloc
import weakref
from collections.abc import Callable, Iterator

import pytest

from _helpers import holds_nothing
from cancellable import CancellationToken, CancellationTokenSource, _timer
from cancellable._token import _token_stats

CHILDREN = 100_000
BUDGET = 64 * 1024  # bytes a parent may retain after all its children are gone


@pytest.fixture
def traced() -> Iterator[Callable[[], int]]:
    """Trace allocations; yield a function returning the bytes now retained."""
    gc.collect()
    tracemalloc.start()
    try:

        def retained() -> int:
            gc.collect()
            return tracemalloc.get_traced_memory()[0]

        yield retained
    finally:
        tracemalloc.stop()


def _create_and_close(parent: CancellationTokenSource, count: int) -> None:
    token = parent.token
    for _ in range(count):
        CancellationTokenSource(token).close()


def _create_and_drop(parent: CancellationTokenSource, count: int) -> None:
    token = parent.token
    for _ in range(count):
        CancellationTokenSource(token)


@pytest.mark.parametrize("churn", [_create_and_close, _create_and_drop], ids=["closed", "dropped"])
def test_many_short_lived_children_leave_the_parent_where_it_started(
    traced: Callable[[], int],
    churn: Callable[[CancellationTokenSource, int], None],
) -> None:
    parent = CancellationTokenSource()
    churn(parent, 100)  # warm up caches and free lists outside the measurement
    before = traced()
    churn(parent, CHILDREN)
    after = traced()
    assert after - before <= BUDGET, f"parent retained {after - before} bytes"
    assert holds_nothing(parent.token)
    assert _token_stats(parent.token).strong_children == 0


def test_dropped_child_with_a_callback_is_held_until_the_parent_cancels() -> None:
    parent = CancellationTokenSource()
    ran: list[str] = []
    child = CancellationTokenSource(parent.token)
    grandchild = CancellationTokenSource(child.token)
    child.token.register(ran.append, "child")
    grandchild.token.register(ran.append, "grandchild")
    child_ref, grandchild_ref = weakref.ref(child.token), weakref.ref(grandchild.token)
    del child, grandchild
    gc.collect()
    assert child_ref() is not None
    assert grandchild_ref() is not None
    parent.cancel("stop")
    # The child's callback came after the grandchild's link: latest first.
    assert ran == ["child", "grandchild"]
    gc.collect()
    assert child_ref() is None
    assert grandchild_ref() is None
    assert holds_nothing(parent.token)


def test_dropped_child_is_freed_once_its_callback_is_unregistered() -> None:
    parent = CancellationTokenSource()
    child = CancellationTokenSource(parent.token)
    grandchild = CancellationTokenSource(child.token)
    reg = grandchild.token.register(print)
    child_ref, grandchild_ref = weakref.ref(child.token), weakref.ref(grandchild.token)
    del child, grandchild
    gc.collect()
    assert grandchild_ref() is not None
    assert _token_stats(parent.token).strong_children == 1
    assert reg.unregister()
    # Plain reference counting frees them: no cycle is left to collect.
    assert grandchild_ref() is None
    assert child_ref() is None
    assert holds_nothing(parent.token)
    assert _token_stats(parent.token).strong_children == 0


def test_dropped_child_with_a_waiter_is_held_while_it_waits() -> None:
    parent = CancellationTokenSource()
    child = CancellationTokenSource(parent.token)
    child_ref = weakref.ref(child.token)
    ready = threading.Event()
    woke: list[bool] = []

    def wait(token: CancellationToken) -> None:
        ready.set()
        woke.append(token.wait())

    waiter = threading.Thread(target=wait, args=(child.token,))
    waiter.start()
    del child  # only the waiting thread refers to it now
    assert ready.wait(timeout=10)
    parent.cancel()  # reaches the child whether or not it is parked yet
    waiter.join(timeout=10)
    assert woke == [True]
    del waiter  # Thread.run already dropped its arguments
    gc.collect()
    assert child_ref() is None


def _timer_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "cancellable-timer")


def test_ten_thousand_deadlines_share_one_thread_and_the_heap_shrinks_back() -> None:
    others = threading.active_count() - _timer_threads()
    pending_before = _timer.TIMER.pending()
    sources = [CancellationTokenSource(timeout=3600 + i % 7) for i in range(10_000)]
    assert threading.active_count() == others + 1
    assert _timer_threads() == 1
    assert _timer.TIMER.pending() == pending_before + 10_000
    for source in sources:
        source.close()
    assert _timer.TIMER.pending() == pending_before
    # Disarmed entries were dropped as they came to outnumber the live ones.
    assert len(_timer.TIMER._heap) <= 2 * pending_before + 64
    assert not any(source.token.is_cancellation_requested for source in sources)
