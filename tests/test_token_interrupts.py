"""Ctrl-C and other BaseExceptions inside the token core, deep chains of links.

The fault injector (`_helpers.inject_at_each_line`) raises a KeyboardInterrupt
at every line the scenario reaches in ``cancellable/_token.py``, one run per
line; after each run the invariants are checked: every callback ran exactly
once or is still registered and runs on a later cancel, no token lock is left
held, and the interrupt came out as itself.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from threading import Event

import pytest

from _helpers import Injected, inject_at_each_line, package_files
from cancellable import (
    CancellableThreadPoolExecutor,
    CancellationToken,
    CancellationTokenSource,
    OperationCancelledError,
)
from cancellable._token import _token_stats

TOKEN_PY = package_files("_token.py")
Source = CancellationTokenSource


def _unlocked(*tokens: CancellationToken) -> None:
    for token in tokens:
        lock = token._lock
        assert lock is not None
        assert not lock.locked(), f"{token!r} left its lock held"


def _came_out_as_itself(error: BaseException | None) -> None:
    assert error is None or type(error) is Injected, f"wrapped or replaced: {error!r}"


class _Scene:
    """A parent, two children (one with a grandchild) and callbacks on all of them."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.parent = CancellationTokenSource()
        self.child = CancellationTokenSource(self.parent.token)
        self.other = CancellationTokenSource(self.parent.token)
        self.grandchild = CancellationTokenSource(self.child.token)
        self.sources = [self.parent, self.child, self.other, self.grandchild]
        for name, source in zip(["p", "c", "o", "g"], self.sources, strict=True):
            source.token.register(self.runs.update, [f"{name}1"])
            source.token.register(self.runs.update, [f"{name}2"])

    def names(self) -> set[str]:
        return {f"{name}{i}" for name in "pcog" for i in (1, 2)}

    def check_finished(self) -> None:
        """Cancel again (a no-op if the first got through) and check every callback ran once."""
        self.parent.cancel()
        for source in self.sources:
            assert source.token.is_cancellation_requested
        assert set(self.runs) == self.names()
        assert all(count == 1 for count in self.runs.values()), self.runs
        _unlocked(*(source.token for source in self.sources))
        for source in self.sources:
            assert _token_stats(source.token).registrations == 0


class TestCtrlCInsideCancel:
    def test_every_callback_and_child_still_runs_once_wherever_it_lands(self) -> None:
        def check(scene: _Scene, error: BaseException | None) -> None:
            _came_out_as_itself(error)
            # Once a cancel starts, it finishes before the interrupt comes out.
            assert set(scene.runs) in ({*()}, scene.names())
            scene.check_finished()

        report = inject_at_each_line(
            lambda scene: scene.parent.cancel("stop"), files=TOKEN_PY, check=check, setup=_Scene
        )
        assert report.lines > 50

    def test_a_group_drain_callback_is_never_skipped(self) -> None:
        # What the executor relies on: its pending tasks are drained by a
        # token callback, which runs even when the Ctrl-C lands in the cancel
        # loop around it.
        def setup() -> tuple[CancellableThreadPoolExecutor, Event, Source, list[Future[int]]]:
            pool = CancellableThreadPoolExecutor(max_workers=1)
            gate = Event()
            pool.submit(gate.wait)
            cts = CancellationTokenSource()
            return pool, gate, cts, [pool.submit(int, token=cts.token) for _ in range(3)]

        def check(
            state: tuple[CancellableThreadPoolExecutor, Event, Source, list[Future[int]]],
            error: BaseException | None,
        ) -> None:
            _came_out_as_itself(error)
            pool, gate, cts, futures = state
            if cts.token.is_cancellation_requested:
                assert all(f.cancelled() for f in futures)
            gate.set()
            pool.shutdown(wait=True, cancel_futures=True)
            assert all(f.done() for f in futures)

        report = inject_at_each_line(
            lambda state: state[2].cancel(), files=TOKEN_PY, check=check, setup=setup
        )
        assert report.lines > 10


class _Pair:
    def __init__(self, linked: bool) -> None:
        self.parent = CancellationTokenSource()
        self.source = CancellationTokenSource(self.parent.token) if linked else self.parent
        self.runs: list[int] = []


class TestCtrlCInsideRegistrationAndLinks:
    @pytest.mark.parametrize("linked", [False, True], ids=["root", "linked"])
    @pytest.mark.parametrize("then_unregister", [False, True], ids=["register", "unregister"])
    def test_registration_is_whole_or_absent(self, linked: bool, then_unregister: bool) -> None:
        def scenario(pair: _Pair) -> None:
            reg = pair.source.token.register(pair.runs.append, 1)
            if then_unregister:
                reg.unregister()

        def check(pair: _Pair, error: BaseException | None) -> None:
            _came_out_as_itself(error)
            _unlocked(pair.parent.token, pair.source.token)
            stats = _token_stats(pair.source.token)
            if error is None:
                assert stats.registrations == (0 if then_unregister else 1)
            if linked:
                # Held strongly exactly while it has a registration.
                assert stats.held_strongly is (stats.registrations > 0)
                assert _token_stats(pair.parent.token).strong_children == stats.registrations
            pair.parent.cancel()
            assert pair.runs == [1] * stats.registrations

        inject_at_each_line(scenario, files=TOKEN_PY, check=check, setup=lambda: _Pair(linked))

    def test_link_and_close_leave_nothing_half_made(self) -> None:
        def scenario(made: tuple[Source, list[Source]]) -> None:
            a, children = made
            b = CancellationTokenSource(a.token)
            children.append(b)
            b.token.register(int)
            c = CancellationTokenSource(a.token, b.token)
            children.append(c)
            b.close()
            c.close()

        def check(made: tuple[Source, list[Source]], error: BaseException | None) -> None:
            _came_out_as_itself(error)
            a, children = made
            _unlocked(a.token, *(child.token for child in children))
            for child in children:
                child.close()  # finishes what an interrupted close left
                assert _token_stats(child.token).parents == 0
            stats = _token_stats(a.token)
            assert stats.strong_children == 0
            if len(children) == 2:
                assert stats.children == 0
            # Else a constructor was interrupted: its source never reached the
            # test, and its weak link goes when that source is collected.

        inject_at_each_line(
            scenario, files=TOKEN_PY, check=check, setup=lambda: (CancellationTokenSource(), [])
        )

    def test_close_always_disarms_the_deadline(self) -> None:
        def check(source: Source, error: BaseException | None) -> None:
            _came_out_as_itself(error)
            _unlocked(source.token)
            if error is None:
                assert source.token._deadline is None
            source.close()  # finishes what an interrupted close left
            assert source.token._deadline is None

        inject_at_each_line(
            lambda source: source.close(),
            files=TOKEN_PY,
            check=check,
            setup=lambda: CancellationTokenSource(timeout=1e9),
        )


class TestInterruptsFromCallbacks:
    @pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit])
    def test_library_made_cancel_reraises_it_after_the_other_callbacks(
        self, kind: type[BaseException], caplog: pytest.LogCaptureFixture
    ) -> None:
        # cancel_all() is a cancel the library makes: it logs ordinary errors,
        # but an interrupt must reach the caller as itself.
        with CancellableThreadPoolExecutor(max_workers=1) as pool:
            gate = threading.Event()
            pool.submit(gate.wait)
            futures = [pool.submit(int) for _ in range(3)]
            ran: list[str] = []
            futures[0].token.register(ran.append, "before")

            def interrupt() -> None:
                raise kind

            futures[1].token.register(interrupt)
            futures[2].token.register(lambda: 1 / 0)
            with pytest.raises(kind) as raised:
                pool.cancel_all("stop")
            assert type(raised.value) is kind
            assert ran == ["before"]
            assert all(f.cancelled() for f in futures)
            gate.set()
        errors = [r.exc_info[1] for r in caplog.records if r.exc_info]
        assert any(isinstance(e, ZeroDivisionError) for e in errors)
        assert not any(isinstance(e, kind) for e in errors)

    def test_ordinary_errors_still_come_out_as_one_exception_group(self) -> None:
        cts = CancellationTokenSource()
        cts.token.register(lambda: 1 / 0)
        cts.token.register([].pop)
        with pytest.raises(ExceptionGroup) as raised:
            cts.cancel()
        assert [type(e) for e in raised.value.exceptions] == [IndexError, ZeroDivisionError]


DEPTH = 100_000


def _chain(depth: int) -> list[CancellationTokenSource]:
    sources = [CancellationTokenSource()]
    for _ in range(depth):
        sources.append(CancellationTokenSource(sources[-1].token))
    return sources


def _at_depth(levels: int, fn: Callable[[], object]) -> object:
    """Call ``fn`` with ``levels`` more frames on the stack."""
    if levels <= 0:
        return fn()
    return _at_depth(levels - 1, fn)


@pytest.mark.timeout(120)
class TestDeepChains:
    def test_cancel_reaches_the_end_of_a_100000_deep_chain_from_a_deep_stack(self) -> None:
        sources = _chain(DEPTH)
        ran: list[int] = []
        sources[-1].token.register(ran.append, 1)
        sources[DEPTH // 2].token.register(ran.append, 2)
        assert _token_stats(sources[-2].token).strong_children == 1
        # Leave only a little stack: recursion along the links would overflow.
        room = sys.getrecursionlimit() - len(_frames()) - 60
        _at_depth(room, lambda: sources[0].cancel("deep"))
        assert sorted(ran) == [1, 2]
        assert all(source.token.is_cancellation_requested for source in sources)
        assert sources[-1].token.reason == "deep"
        with pytest.raises(OperationCancelledError):
            sources[-1].token.raise_if_cancellation_requested()

    def test_registering_and_closing_at_the_end_of_a_deep_chain(self) -> None:
        sources = _chain(DEPTH)
        reg = sources[-1].token.register(int)
        # Every ancestor now holds its child strongly ...
        assert _token_stats(sources[0].token).strong_children == 1
        reg.unregister()
        # ... and lets go once the registration is gone.
        assert _token_stats(sources[0].token).strong_children == 0
        sources[-1].token.register(int)
        sources[-1].close()
        assert _token_stats(sources[0].token).strong_children == 0
        assert _token_stats(sources[-2].token).children == 0
        del sources  # dropping the whole chain must not overflow either


def _frames() -> list[object]:
    frame = sys._getframe()
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back  # type: ignore[assignment]
    return frames


def test_library_cancel_logs_ordinary_errors(caplog: pytest.LogCaptureFixture) -> None:
    cts = CancellationTokenSource()
    cts.token.register(lambda: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="cancellable"):
        cts.token._cancel_and_log("stop")
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [ZeroDivisionError]
