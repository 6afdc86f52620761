"""A signal where CPython really delivers one: just after a C call returns.

`tests/test_token_interrupts.py` raises `KeyboardInterrupt` at every *line*.
CPython runs a Python signal handler only at certain instructions, among them
the end of a call into C code (the release of a lock at a ``with`` block's
exit, say), which can fall in the middle of a line. Here an opcode tracer
raises `KeyboardInterrupt` at the first instruction after each call into C in
`CancellationToken.register` and `CancellationToken.wait`, one point per run,
and checks that nothing is left registered on the token that nobody can
remove.
"""

from __future__ import annotations

import dis
import itertools
import sys
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

import pytest

from cancellable import CancellationToken, CancellationTokenSource
from cancellable._token import _token_stats

_CALLS = frozenset({"CALL", "CALL_KW", "CALL_FUNCTION_EX"})


def _after_calls(code: CodeType) -> list[int]:
    """Offsets of the instructions right after each call in ``code``."""
    instructions = list(dis.get_instructions(code))
    return [nxt.offset for ins, nxt in itertools.pairwise(instructions) if ins.opname in _CALLS]


class _SignalAfterCall:
    """Raises KeyboardInterrupt at the ``n``-th after-call point executed in ``code``."""

    def __init__(self, code: CodeType, n: int) -> None:
        self.code = code
        self.points = frozenset(_after_calls(code))
        self.n = n
        self.seen = 0
        self.raised: KeyboardInterrupt | None = None
        self.python_callee = False

    def global_trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if self.raised is not None:
            return None
        if frame.f_code is not self.code:
            back = frame.f_back
            if back is not None and back.f_code is self.code:
                # A call into Python: its return is no signal point (CPython
                # checks at the callee's start instead, which the callee's
                # own lines cover).
                self.python_callee = True
            return None
        frame.f_trace_opcodes = True
        return self.local_trace

    def local_trace(self, frame: FrameType, event: str, arg: object) -> Any:
        # Set again: from 3.12 on, what the call event sets takes effect
        # only once the frame's first event has been traced.
        frame.f_trace_opcodes = True
        if event == "opcode" and self.raised is None and frame.f_lasti in self.points:
            python_callee, self.python_callee = self.python_callee, False
            if not python_callee:
                self.seen += 1
                if self.seen == self.n:
                    self.raised = KeyboardInterrupt(f"after call {self.n}")
                    raise self.raised
        return self.local_trace


def _probe() -> int:
    return len("opcode events")


def _opcode_events_arrive() -> bool:
    """Whether ``f_trace_opcodes`` set from a trace function takes effect.

    It does on 3.11 and 3.13; on 3.12.1 a running frame gets no opcode events.
    """
    events: list[str] = []

    def local(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        events.append(event)
        return local

    def global_(frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code is not _probe.__code__:
            return None
        frame.f_trace_opcodes = True
        return local

    sys.settrace(global_)
    try:
        _probe()
    finally:
        sys.settrace(None)
    return "opcode" in events


pytestmark = pytest.mark.skipif(
    not _opcode_events_arrive(), reason="this Python's tracer delivers no opcode events"
)


def _each_point(code: CodeType, scenario: Callable[[], None]) -> list[KeyboardInterrupt]:
    """Run ``scenario`` once per after-call point it reaches in ``code``; the interrupts raised."""
    raised = []
    for n in range(1, 200):
        injector = _SignalAfterCall(code, n)
        sys.settrace(injector.global_trace)
        error: BaseException | None = None
        try:
            scenario()
        except KeyboardInterrupt as interrupt:
            error = interrupt
        finally:
            sys.settrace(None)
        assert error is injector.raised, "an interrupt other than the one injected, or none"
        if injector.raised is None:
            return raised
        raised.append(injector.raised)
    raise AssertionError("the scenario never ran out of injection points")


@pytest.mark.timeout(60)
def test_register_leaves_nothing_behind_when_a_signal_lands_after_a_call() -> None:
    code = CancellationToken.register.__code__

    for linked in (False, True):
        parent = CancellationTokenSource()
        source = CancellationTokenSource(parent.token) if linked else CancellationTokenSource()
        token = source.token
        made: list[Any] = []
        ran: list[int] = []

        def scenario(
            token: CancellationToken = token, made: list[Any] = made, ran: list[int] = ran
        ) -> None:
            made.append(token.register(ran.append, 1))

        raised = _each_point(code, scenario)
        assert raised, "no call inside register() was reached"
        # Each interrupted call registered nothing; each completed one left
        # exactly its registration, which unregisters.
        assert _token_stats(token).registrations == len(made)
        for reg in made:
            assert reg.unregister()
        assert _token_stats(token).registrations == 0
        source.cancel()
        assert ran == []


@pytest.mark.timeout(60)
def test_wait_leaves_nothing_behind_when_a_signal_lands_after_a_call() -> None:
    code = CancellationToken.wait.__code__
    source = CancellationTokenSource()
    token = source.token

    def scenario() -> None:
        assert token.wait(0.001) is False

    raised = _each_point(code, scenario)
    assert raised, "no call inside wait() was reached"
    assert _token_stats(token).registrations == 0
    # And a later wait still wakes on the cancel.
    threading.Thread(target=source.cancel).start()
    assert token.wait(10) is True
