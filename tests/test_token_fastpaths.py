"""The cancel loop without a lock per callback, and the one-parent link.

The cancel loop takes a token's callbacks without its lock, so `unregister()`
on another thread decides from the registration itself whether to wait. These
tests pause the cancelling thread at every line it runs in
``cancellable/_token.py`` (`_faults.PausedThread`) and unregister from another
thread right there, then check what `unregister()` promised: True means the
callback never ran, False means it had finished when `unregister()` returned.
"""

from __future__ import annotations

import _thread
import gc
import linecache
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import pytest

from _faults import WAIT, PausedThread, package_files
from _helpers import Injected, holds_nothing, inject_at_each_line
from cancellable import CancellationToken, CancellationTokenRegistration, CancellationTokenSource
from cancellable import _token as token_module
from cancellable._token import _token_stats

TOKEN_PY = package_files("_token.py")
_Built = tuple[CancellationTokenSource, CancellationTokenRegistration]


@dataclass
class _Calls:
    """Which callbacks started and finished, by name."""

    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    keep: list[object] = field(default_factory=list)

    def callback(self, name: str) -> Callable[[], None]:
        def run() -> None:
            self.started.append(name)
            self.finished.append(name)

        return run


class _ParkSignal:
    """Stands in for the waiter lock `_unregister` makes; reports when it blocks on it."""

    def __init__(self, decided: threading.Event, parked: threading.Event) -> None:
        self._lock = _thread.allocate_lock()
        self._decided = decided
        self._parked = parked
        self._acquires = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self._acquires += 1
        if self._acquires == 2:  # the first acquire only locks it
            self._parked.set()
            self._decided.set()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()


def _unregister_at_every_line(
    monkeypatch: pytest.MonkeyPatch, build: Callable[[_Calls], _Built], victim: str
) -> Counter[str]:
    """Pause the canceller at each of its lines and unregister ``victim`` from another thread.

    Returns how often `unregister()` removed it ("removed"), waited for it to
    finish ("waited") or found it finished ("finished"), over the walk.
    """
    seen: Counter[str] = Counter()
    n = 0
    while True:
        n += 1
        kind = _unregister_at_line(monkeypatch, build, victim, n)
        if kind is None:  # the cancel ran through without reaching line n
            return seen
        seen[kind] += 1


def _unregister_at_line(
    monkeypatch: pytest.MonkeyPatch, build: Callable[[_Calls], _Built], victim: str, n: int
) -> str | None:
    calls = _Calls()
    source, reg = build(calls)  # real locks: the patch comes after
    token = source.token
    decided, parked = threading.Event(), threading.Event()
    monkeypatch.setattr(token_module, "allocate_lock", lambda: _ParkSignal(decided, parked))
    # Set when the canceller stops at line n, or when it ends without reaching it.
    settled = threading.Event()
    pause = PausedThread(n, files=TOKEN_PY, paused=settled)
    outcome: list[tuple[bool, bool]] = []

    def canceller() -> None:
        pause.arm()
        try:
            source.cancel()
        finally:
            pause.disarm()
            settled.set()

    def unregisterer() -> None:
        result = reg.unregister()
        outcome.append((result, victim in calls.finished))
        decided.set()

    pause.install()
    try:
        thread = threading.Thread(target=canceller)
        thread.start()
    finally:
        pause.uninstall()
    try:
        assert settled.wait(WAIT)
        if pause.where is None:
            return None
        assert token._lock is not None
        lock_held = token._lock.locked()
        other = threading.Thread(target=unregisterer)
        other.start()
        if not lock_held:
            # It returns or parks while the canceller stands still at line n.
            assert decided.wait(WAIT), f"unregister() neither returned nor parked ({pause.where})"
        pause.resume.set()
        thread.join(WAIT)
        other.join(WAIT)
        assert not other.is_alive()
    finally:
        pause.resume.set()
        thread.join(WAIT)
        monkeypatch.undo()
    assert not thread.is_alive()
    result, finished = outcome[0]
    assert calls.started == calls.finished
    assert len(calls.started) == len(set(calls.started)), "a callback ran twice"
    assert token._running is None
    assert token._unreg_waiters is None
    assert holds_nothing(token)
    if result:
        assert victim not in calls.started, pause.where
        return "removed"
    assert finished, f"unregister() returned False before the callback finished ({pause.where})"
    assert victim in calls.started
    return "waited" if parked.is_set() else "finished"


def _three(calls: _Calls) -> _Built:
    source = CancellationTokenSource()
    source.token.register(calls.callback("a"))
    reg = source.token.register(calls.callback("b"))
    source.token.register(calls.callback("c"))
    return source, reg


def _with_a_child(calls: _Calls) -> _Built:
    # The victim sits below a link: the loop leaves for the child and comes back.
    source = CancellationTokenSource()
    reg = source.token.register(calls.callback("b"))
    child = CancellationTokenSource(source.token)
    child.token.register(calls.callback("child"))
    source.token.register(calls.callback("c"))
    source.token.register(calls.callback("child-kept-alive"))
    calls.keep.append(child)
    return source, reg


class TestUnregisterWhileTheCancelRunsElsewhere:
    @pytest.mark.timeout(120)
    def test_true_means_never_ran_and_false_means_finished_at_every_line(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seen = _unregister_at_every_line(monkeypatch, _three, "b")
        assert min(seen["removed"], seen["waited"], seen["finished"]) > 0, seen

    @pytest.mark.timeout(120)
    def test_the_same_with_a_linked_child_between_the_callbacks(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seen = _unregister_at_every_line(monkeypatch, _with_a_child, "b")
        assert min(seen["removed"], seen["waited"], seen["finished"]) > 0, seen


class _Registered:
    def __init__(self) -> None:
        self.ran: list[int] = []
        self.source = CancellationTokenSource()
        self.regs = [self.source.token.register(self.ran.append, i) for i in range(4)]


class TestCtrlCInTheCancelLoop:
    def test_every_callback_runs_once_and_its_registration_lets_go_of_it(self) -> None:
        def check(state: _Registered, error: BaseException | None) -> None:
            assert error is None or type(error) is Injected
            state.source.cancel()  # a no-op if the first got through
            assert sorted(state.ran) == [0, 1, 2, 3]
            for reg in state.regs:
                # Cleared once it ran, even when the interrupt landed between
                # taking it and naming it as the running one.
                assert reg._token is None
                assert reg._fn is None
                assert reg._args == ()
                assert reg.unregister() is False
            token = state.source.token
            assert token._running is None
            assert token._canceller is None
            assert token._lock is not None
            assert not token._lock.locked()

        report = inject_at_each_line(
            lambda state: state.source.cancel(), files=TOKEN_PY, check=check, setup=_Registered
        )
        assert report.lines > 30


class TestOneParent:
    def test_the_parent_cancel_reaches_the_child_with_its_reason(self) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token)
        ran: list[object] = []
        child.token.register(lambda: ran.append(child.token.reason))
        assert _token_stats(child.token).parents == 1
        assert _token_stats(parent.token).children == 1
        parent.cancel("stop")
        assert ran == ["stop"]
        assert _token_stats(parent.token).children == 0

    def test_a_child_of_a_cancelled_parent_is_born_cancelled(self) -> None:
        parent = CancellationTokenSource()
        parent.cancel("early")
        child = CancellationTokenSource(parent.token)
        assert child.token.reason == "early"
        assert _token_stats(child.token).parents == 0

    def test_a_child_of_none_has_no_parent(self) -> None:
        child = CancellationTokenSource(CancellationToken.NONE)
        assert _token_stats(child.token).parents == 0
        assert not child.token.is_cancellation_requested

    def test_a_dropped_child_is_collected_and_its_link_removed(self) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token)
        alive = weakref.ref(child.token)
        del child
        gc.collect()
        assert alive() is None
        assert holds_nothing(parent.token)

    def test_a_child_held_strongly_while_it_has_callbacks_and_let_go_after(self) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token)
        reg = child.token.register(int)
        assert _token_stats(parent.token).strong_children == 1
        assert _token_stats(child.token).held_strongly
        reg.unregister()
        assert _token_stats(parent.token).strong_children == 0
        child.close()
        assert holds_nothing(parent.token)
        assert _token_stats(child.token).parents == 0

    def test_a_parent_given_twice_is_one_link(self) -> None:
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token, parent.token)
        assert _token_stats(parent.token).children == 1
        parent.cancel()
        assert child.token.is_cancellation_requested

    def test_wrong_parents_are_rejected_by_name(self) -> None:
        parent = CancellationTokenSource()
        with pytest.raises(TypeError, match=r"pass source\.token, not the source"):
            CancellationTokenSource(parent)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="got 'int'"):
            CancellationTokenSource(3)  # type: ignore[arg-type]
        assert holds_nothing(parent.token)

    def test_a_child_costs_no_more_tracked_objects_than_a_root(self) -> None:
        # The weak link, but no lock of its own (one of its parent's family
        # locks) and no tuple of one link. (Fewer objects the collector tracks,
        # fewer collections for a program making a child per request.)
        parent = CancellationTokenSource()
        first = CancellationTokenSource(parent.token)  # the parent's dict exists from here
        count = 1000

        def tracked(make: Callable[[], CancellationTokenSource]) -> int:
            gc.collect()
            gc.disable()
            try:
                before = len(gc.get_objects())
                made = [make() for _ in range(count)]
                assert len(made) == count
                return len(gc.get_objects()) - before - 1  # the list
            finally:
                gc.enable()

        roots = tracked(CancellationTokenSource)
        children = tracked(lambda: CancellationTokenSource(parent.token))
        # The link instead of the lock (one more with a tuple of one link, or
        # a lock per child); a little slack for whatever another thread
        # allocates meanwhile.
        assert abs(children - roots) < count * 0.1, (children - roots) / count
        assert _token_stats(parent.token).children == 1  # the others went when dropped
        del first

    def test_one_parent_children_share_their_parents_few_locks(self) -> None:
        parent = CancellationTokenSource()
        children = [CancellationTokenSource(parent.token) for _ in range(40)]
        family = {id(child.token._lock) for child in children}
        # However many children: at most that many locks, none the parent's own.
        assert len(family) == token_module._FAMILY_LOCKS
        assert id(parent.token._lock) not in family
        grandchild = CancellationTokenSource(children[0].token)
        both = CancellationTokenSource(children[0].token, children[1].token)
        others = {id(grandchild.token._lock), id(both.token._lock)}
        assert len(others) == 2
        assert not others & (family | {id(parent.token._lock)})
        # Two siblings that drew the same lock, their locked sections (each
        # reaching up to the shared parent) from two threads at once, then
        # a cancel down through them.
        first = children[0]
        second = next(c for c in children[1:] if c.token._lock is first.token._lock)
        seen: list[int] = []
        start = threading.Barrier(2)

        def churn(source: CancellationTokenSource, tag: int) -> None:
            start.wait(timeout=10)
            for _ in range(2000):
                source.token.register(seen.append, tag).unregister()
                with CancellationTokenSource(source.token) as inner:
                    inner.token.register(int)

        threads = [
            threading.Thread(target=churn, args=(source, tag))
            for tag, source in enumerate((first, second))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive()
        grandchild.token.register(seen.append, 9)
        parent.cancel()
        assert seen == [9]
        assert both.token.is_cancellation_requested

    def test_ctrl_c_in_the_constructor_leaves_no_half_linked_child(self) -> None:
        def scenario(state: tuple[CancellationTokenSource, list[CancellationTokenSource]]) -> None:
            parent, made = state
            made.append(CancellationTokenSource(parent.token))

        def check(
            state: tuple[CancellationTokenSource, list[CancellationTokenSource]],
            error: BaseException | None,
        ) -> None:
            assert error is None or type(error) is Injected
            parent, made = state
            assert parent.token._lock is not None
            assert not parent.token._lock.locked()
            if made:
                # A child the caller got is linked whole.
                child = made[0]
                assert _token_stats(child.token).parents == 1
                assert _token_stats(parent.token).children == 1
                parent.cancel("stop")
                assert child.token.reason == "stop"
            else:
                # The caller got nothing; the parent holds nothing strongly,
                # and the weak link goes with the unreachable token.
                assert error is not None
                assert _token_stats(parent.token).strong_children == 0
                error.__traceback__ = None  # which holds the frames that held the token
                del error
                gc.collect()
                assert holds_nothing(parent.token)

        report = inject_at_each_line(
            scenario, files=TOKEN_PY, check=check, setup=lambda: (CancellationTokenSource(), [])
        )
        assert report.lines > 10

    @pytest.mark.timeout(60)
    def test_a_parent_cancel_at_every_line_of_the_constructor_reaches_the_child(self) -> None:
        n = 0
        while _cancel_parent_at_line(n := n + 1):
            pass
        assert n > 10


def _cancel_parent_at_line(n: int) -> bool:
    """Build a child on a thread paused at its n-th line; cancel the parent there.

    Returns False once the constructor runs through without reaching line n.
    """
    parent = CancellationTokenSource()
    made: list[CancellationTokenSource] = []
    settled = threading.Event()
    pause = PausedThread(n, files=TOKEN_PY, paused=settled)

    def build() -> None:
        pause.arm()
        try:
            made.append(CancellationTokenSource(parent.token))
        finally:
            pause.disarm()
            settled.set()

    pause.install()
    try:
        builder = threading.Thread(target=build)
        builder.start()
    finally:
        pause.uninstall()
    canceller = None
    try:
        assert settled.wait(WAIT)
        if pause.where is None:
            return False
        assert parent.token._lock is not None
        if parent.token._lock.locked():
            # Paused holding the parent's lock: cancel from elsewhere, it waits.
            canceller = threading.Thread(target=parent.cancel, args=("stop",))
            canceller.start()
        else:
            parent.cancel("stop")
    finally:
        pause.resume.set()
        builder.join(WAIT)
        if canceller is not None:
            canceller.join(WAIT)
    assert not builder.is_alive()
    (child,) = made
    # Linked before the cancel or born after it: either way it is cancelled.
    assert child.token.reason == "stop", pause.where
    assert holds_nothing(parent.token)
    assert _token_stats(child.token).parents == 0
    return True


class TestCancellingAChildDirectly:
    def test_its_ancestors_let_go_of_it_and_its_children_follow(self) -> None:
        root = CancellationTokenSource()
        middle = CancellationTokenSource(root.token)
        leaf = CancellationTokenSource(middle.token)
        ran: list[str] = []
        leaf.token.register(ran.append, "leaf")
        middle.token.register(ran.append, "middle")
        # The registrations make each parent hold its child strongly.
        assert _token_stats(root.token).strong_children == 1
        middle.cancel("stop")
        assert ran == ["middle", "leaf"]  # latest first: the link came before "middle"
        assert leaf.token.reason == "stop"
        assert not root.token.is_cancellation_requested
        assert holds_nothing(root.token)
        assert _token_stats(root.token).strong_children == 0
        root.cancel()
        assert ran == ["middle", "leaf"]  # nothing runs twice

    def test_a_child_of_two_parents_leaves_the_one_not_cancelled(self) -> None:
        first, second = CancellationTokenSource(), CancellationTokenSource()
        child = CancellationTokenSource(first.token, second.token)
        child.token.register(int)
        first.cancel()
        assert child.token.is_cancellation_requested
        assert holds_nothing(second.token)
        assert _token_stats(second.token).strong_children == 0


class _ReportingLock:
    """A token lock (``with`` and ``acquire``/``release``) that reports a thread about to block."""

    def __init__(self, blocked: Callable[[], None]) -> None:
        self._lock = _thread.allocate_lock()
        self._blocked = blocked

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking and not self._lock.acquire(False):
            self._blocked()
            return self._lock.acquire(True, timeout)
        return True if blocking else self._lock.acquire(False)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Stops:
    """Stops named threads at the first line of a function whose text starts as given."""

    def __init__(self, where: dict[str, tuple[str, str]]) -> None:
        self.where = where
        self.reached = {name: threading.Event() for name in where}
        self.go = {name: threading.Event() for name in where}

    def trace(self, frame: FrameType, event: str, arg: object) -> Any:
        name = threading.current_thread().name
        if name not in self.where or frame.f_code.co_filename not in TOKEN_PY:
            return None
        return self._local

    def _local(self, frame: FrameType, event: str, arg: object) -> Any:
        name = threading.current_thread().name
        function, text = self.where[name]
        if (
            event == "line"
            and not self.reached[name].is_set()
            and frame.f_code.co_name == function
            and linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip() == text
        ):
            self.reached[name].set()
            self.go[name].wait(WAIT)
        return self._local


class TestCloseUnregisterAndCancelAtOnce:
    @pytest.mark.timeout(60)
    def test_an_unregister_begun_while_linked_still_wins_over_the_cancel(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The close has marked the token closed and is about to drop its link;
        # the cancel has marked it cancelled; the unregister, which saw the
        # link, is half-way through removing the callback. Whatever order they
        # finish in, a True from unregister() means the callback never runs.
        blocked = threading.Event()  # the canceller is about to wait for a token's lock

        def report() -> None:
            if threading.current_thread().name == "canceller":
                blocked.set()

        monkeypatch.setattr(token_module, "allocate_lock", lambda: _ReportingLock(report))
        parent = CancellationTokenSource()
        child = CancellationTokenSource(parent.token)
        ran: list[int] = []
        reg = child.token.register(ran.append, 1)
        monkeypatch.undo()
        stops = _Stops(
            {
                "closer": ("_close_steps", "links = token._links"),
                "canceller": ("_cancel_steps", "deadline = token._deadline"),
                "unregisterer": ("_remove_linked", "regs = token._regs"),
            }
        )
        result: list[bool] = []
        threads = {
            "closer": threading.Thread(target=child.close, name="closer"),
            "canceller": threading.Thread(target=child.cancel, name="canceller"),
            "unregisterer": threading.Thread(
                target=lambda: result.append(reg.unregister()), name="unregisterer"
            ),
        }
        threading.settrace(stops.trace)
        try:
            for name in ("closer", "canceller", "unregisterer"):
                threads[name].start()
                assert stops.reached[name].wait(WAIT), name
        finally:
            threading.settrace(None)  # type: ignore[arg-type]
        try:
            # The unregisterer holds the token's lock now.
            stops.go["closer"].set()
            canceller_done = threading.Event()
            stops.go["canceller"].set()
            watcher = threading.Thread(
                target=lambda: (threads["canceller"].join(WAIT), canceller_done.set())
            )
            watcher.start()
            # The cancel either ends (taking the callback) or blocks on the lock.
            assert _either(blocked, canceller_done)
        finally:
            for go in stops.go.values():
                go.set()
            for thread in threads.values():
                thread.join(WAIT)
        watcher.join(WAIT)
        assert not any(thread.is_alive() for thread in threads.values())
        assert result == [True]
        assert ran == []
        assert child.token.is_cancellation_requested
        assert holds_nothing(parent.token)


def _either(first: threading.Event, second: threading.Event) -> bool:
    """Wait until one of two Events is set (at most WAIT seconds)."""
    both = threading.Event()
    for event in (first, second):
        threading.Thread(target=lambda e=event: (e.wait(WAIT), both.set()), daemon=True).start()
    return both.wait(WAIT) and (first.is_set() or second.is_set())
