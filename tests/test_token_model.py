"""Random DAGs of linked sources checked against a small sequential model.

The model applies every cancel along the links that exist at that moment: a
token's registrations (callbacks and links to children) form one ordered list,
cancelling pops it latest first and descends into children depth first; a
cancelled or closed child is detached from its parents. Deadlines run on a fake
clock, in due order. After every step the real tokens must agree with the
model: flags, reasons, which callbacks ran and in what order, which errors were
raised or logged, and how many things each token holds strongly.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cancellable import (
    CancellationToken,
    CancellationTokenRegistration,
    CancellationTokenSource,
    _timer,
)
from cancellable._token import _Link, _token_stats

# Far below any real monotonic time, so deadlines left armed by other tests in
# the shared timer heap are never due on this clock.
_START = -1_000_000.0
_DELAYS = st.sampled_from([0.0, 1.0, 2.0, 3.0, 5.0, math.inf])
_PICK = st.integers(0, 1_000)


class CallbackError(Exception):
    """Raised by some callbacks, to check how errors are gathered."""


@dataclass(eq=False)
class _Timeout:
    """The model's reason for a deadline: a `TimeoutError` made by token ``index``."""

    index: int


@dataclass(eq=False)
class _Node:
    """The model of one source."""

    index: int
    cancelled: bool = False
    reason: object = None
    closed: bool = False
    parents: list[_Node] = field(default_factory=list)
    # ("cb", callback id) or ("link", child node), in registration order.
    regs: list[tuple[str, object]] = field(default_factory=list)
    deadline: tuple[float, int] | None = None


class _FakeClock:
    def __init__(self) -> None:
        self.now = _START

    def __call__(self) -> float:
        return self.now


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        assert record.exc_info is not None
        self.errors.append(record.exc_info[1])  # type: ignore[arg-type]


class TokenDag(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = _FakeClock()
        self.previous_clock = _timer.set_clock(self.clock)
        self.pending_before = _timer.TIMER.pending()
        self.records = _Records()
        self.logger = logging.getLogger("cancellable")
        self.logger.addHandler(self.records)
        self.logger.propagate = False
        # What the machine still holds; dropped sources live on only in the model.
        self.sources: dict[int, CancellationTokenSource] = {}
        self.nodes: list[_Node] = []
        self.regs: dict[int, CancellationTokenRegistration] = {}
        self.reg_owner: dict[int, int] = {}
        self.raising: set[int] = set()
        self.log: list[int] = []  # callback ids in the order they really ran
        self.expected_log: list[int] = []
        self.unregistered: set[int] = set()
        self.seq = itertools.count()
        self.next_cb = itertools.count()
        self.seen_cancelled: set[int] = set()

    def teardown(self) -> None:
        try:
            for source in self.sources.values():
                source.close()
            self.sources.clear()
            self.regs.clear()
            # Dropped sources' deadlines keep their tokens alive until they fire.
            self.clock.now = math.inf
            _timer.TIMER.run_due()
            # Every deadline this machine armed is disarmed again.
            assert _timer.TIMER.pending() == self.pending_before
        finally:
            _timer.set_clock(self.previous_clock)
            self.logger.removeHandler(self.records)
            self.logger.propagate = True

    # -- model -----------------------------------------------------------

    def _live(self, pick: int) -> int:
        keys = sorted(self.sources)
        return keys[pick % len(keys)]

    def _detach(self, node: _Node) -> None:
        for parent in node.parents:
            # Absent when the parent's own cancel popped the link to get here.
            if ("link", node) in parent.regs:
                parent.regs.remove(("link", node))
        node.parents = []

    def _model_cancel(self, node: _Node, reason: object, errors: list[int]) -> None:
        if node.cancelled:
            return
        node.cancelled = True
        node.reason = reason
        node.deadline = None
        self._detach(node)
        while node.regs:
            kind, item = node.regs.pop()
            if kind == "link":
                assert isinstance(item, _Node)
                self._model_cancel(item, reason, errors)
            else:
                assert isinstance(item, int)
                self.expected_log.append(item)
                if item in self.raising:
                    errors.append(item)

    def _strong(self, node: _Node) -> bool:
        if node.cancelled:
            return False
        return any(kind == "cb" for kind, _ in node.regs) or any(
            isinstance(item, _Node) and self._strong(item) for _, item in node.regs
        )

    def _error_ids(self, errors: list[BaseException]) -> list[int]:
        ids = []
        for error in errors:
            assert isinstance(error, CallbackError)
            ids.append(error.args[0])
        return ids

    def _reason_of(self, node: _Node) -> object:
        reason = node.reason
        if isinstance(reason, _Timeout):
            return self.sources[reason.index].token.reason if reason.index in self.sources else None
        return reason

    def _callback(self, cb: int) -> None:
        self.log.append(cb)
        if cb in self.raising:
            raise CallbackError(cb)

    # -- rules -----------------------------------------------------------

    @rule(timeout=st.none() | _DELAYS)
    def new_root(self, timeout: float | None) -> None:
        self.new_source([], with_none=False, timeout=timeout)

    @precondition(lambda self: self.sources)
    @rule(
        picks=st.lists(_PICK, min_size=1, max_size=3),
        with_none=st.booleans(),
        timeout=st.none() | st.none() | _DELAYS,
    )
    def new_source(self, picks: list[int], with_none: bool, timeout: float | None) -> None:
        parents: list[CancellationToken] = []
        parent_nodes: list[_Node] = []
        if self.sources:
            for pick in picks:
                index = self._live(pick)
                parents.append(self.sources[index].token)
                if self.nodes[index] not in parent_nodes:
                    parent_nodes.append(self.nodes[index])
        if with_none:
            parents.insert(len(parents) // 2, CancellationToken.NONE)
        node = _Node(len(self.nodes))
        self.nodes.append(node)
        cancelled = [p for p in parent_nodes if p.cancelled]
        if cancelled:
            self._model_cancel(node, cancelled[0].reason, [])
        else:
            for parent in parent_nodes:
                parent.regs.append(("link", node))
            node.parents = parent_nodes
        if timeout is not None:
            self._model_cancel_after(node, timeout)
        self.sources[node.index] = CancellationTokenSource(*parents, timeout=timeout)
        assert not self.records.errors

    def _model_cancel_after(self, node: _Node, delay: float) -> None:
        if node.cancelled:
            return
        node.deadline = None
        if 0 < delay < math.inf:
            node.deadline = (self.clock.now + delay, next(self.seq))
        elif delay == 0:
            self._model_cancel(node, _Timeout(node.index), [])

    @precondition(lambda self: self.sources)
    @rule(pick=_PICK, reason=st.sampled_from([None, "stop", "other"]) | st.builds(ValueError))
    def cancel(self, pick: int, reason: object) -> None:
        index = self._live(pick)
        errors: list[int] = []
        self._model_cancel(self.nodes[index], reason, errors)
        if errors:
            with pytest.raises(BaseExceptionGroup) as caught:
                self.sources[index].cancel(reason)
            assert self._error_ids(list(caught.value.exceptions)) == errors
        else:
            assert self.sources[index].cancel(reason) is None  # type: ignore[func-returns-value]

    @precondition(lambda self: self.sources)
    @rule(pick=_PICK)
    def close(self, pick: int) -> None:
        index = self._live(pick)
        node = self.nodes[index]
        if not node.closed:
            node.closed = True
            self._detach(node)
            node.deadline = None
        self.sources[index].close()

    @precondition(lambda self: self.sources)
    @rule(pick=_PICK, delay=_DELAYS)
    def cancel_after(self, pick: int, delay: float) -> None:
        index = self._live(pick)
        node = self.nodes[index]
        if node.closed:
            with pytest.raises(ValueError, match="closed"):
                self.sources[index].cancel_after(delay)
            return
        before = len(self.expected_log)
        errors: list[int] = []
        if not node.cancelled and delay == 0:
            self._model_cancel(node, _Timeout(index), errors)
        else:
            self._model_cancel_after(node, delay)
        self.sources[index].cancel_after(delay)
        assert self._error_ids(self.records.errors) == errors
        self.records.errors.clear()
        assert len(self.expected_log) >= before

    @rule(seconds=st.sampled_from([0.0, 1.0, 2.0, 4.0]))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        fired = 0
        errors: list[int] = []
        while True:
            due = [
                n for n in self.nodes if n.deadline is not None and n.deadline[0] <= self.clock.now
            ]
            if not due:
                break
            node = min(due, key=lambda n: n.deadline)  # type: ignore[arg-type,return-value]
            node.deadline = None
            fired += 1
            self._model_cancel(node, _Timeout(node.index), errors)
        assert _timer.TIMER.run_due() == fired
        assert self._error_ids(self.records.errors) == errors
        self.records.errors.clear()

    @precondition(lambda self: self.sources)
    @rule(pick=_PICK, raising=st.lists(st.booleans(), min_size=1, max_size=3))
    def register(self, pick: int, raising: list[bool]) -> None:
        index = self._live(pick)
        node = self.nodes[index]
        token = self.sources[index].token
        for raises in raising:
            cb = next(self.next_cb)
            if raises:
                self.raising.add(cb)
            if node.cancelled:
                # Runs now, on this thread; its error propagates from register().
                self.expected_log.append(cb)
                if raises:
                    with pytest.raises(CallbackError):
                        token.register(self._callback, cb)
                else:
                    reg = token.register(self._callback, cb)
                    assert reg.unregister() is False
                continue
            node.regs.append(("cb", cb))
            self.regs[cb] = token.register(self._callback, cb)
            self.reg_owner[cb] = index

    @precondition(lambda self: self.regs)
    @rule(pick=_PICK)
    def unregister(self, pick: int) -> None:
        cb = sorted(self.regs)[pick % len(self.regs)]
        node = self.nodes[self.reg_owner[cb]]
        pending = ("cb", cb) in node.regs
        if pending:
            node.regs.remove(("cb", cb))
            self.unregistered.add(cb)
        assert self.regs[cb].unregister() is pending
        if not pending:
            del self.regs[cb]

    @precondition(lambda self: self.sources)
    @rule(pick=_PICK)
    def wait_zero(self, pick: int) -> None:
        index = self._live(pick)
        assert self.sources[index].token.wait(0) is self.nodes[index].cancelled

    @precondition(lambda self: self.sources)
    @rule(pick=_PICK)
    def drop(self, pick: int) -> None:
        # Keep no reference to the source, its token or its registrations: its
        # pending callbacks must still run if a parent is cancelled.
        index = self._live(pick)
        del self.sources[index]
        for cb in [cb for cb, owner in self.reg_owner.items() if owner == index]:
            self.regs.pop(cb, None)

    # -- invariants ------------------------------------------------------

    @invariant()
    def callbacks_ran_as_modelled(self) -> None:
        assert self.log == self.expected_log
        assert len(set(self.log)) == len(self.log)  # each callback at most once
        assert not self.unregistered.intersection(self.log)
        ran = set(self.log)
        for cb, owner in self.reg_owner.items():
            # Exactly once if its token is cancelled and it was not unregistered first.
            expected = self.nodes[owner].cancelled and cb not in self.unregistered
            assert (cb in ran) is expected

    @invariant()
    def states_agree(self) -> None:
        for index, source in self.sources.items():
            node = self.nodes[index]
            token = source.token
            assert token.is_cancellation_requested is node.cancelled
            assert source.closed is node.closed
            if index in self.seen_cancelled:
                assert node.cancelled  # a cancel never reverts
            if not node.cancelled:
                assert token.reason is None
                continue
            self.seen_cancelled.add(index)
            if isinstance(node.reason, _Timeout):
                assert isinstance(token.reason, TimeoutError)
                origin = self._reason_of(node)
                if origin is not None:
                    assert token.reason is origin  # one error shared down the links
            else:
                assert token.reason is node.reason

    @invariant()
    def registrations_agree(self) -> None:
        for index, source in self.sources.items():
            node = self.nodes[index]
            token = source.token
            if node.cancelled:
                assert not token._regs
                assert token._deadline is None
                continue
            regs = list(token._regs or ())
            real_cbs = [
                reg._args[0] for reg in regs if isinstance(reg, CancellationTokenRegistration)
            ]
            assert real_cbs == [item for kind, item in node.regs if kind == "cb"]
            children = {id(link()) for link in regs if isinstance(link, _Link)}
            for kind, item in node.regs:
                assert isinstance(item, _Node | int)
                if kind == "link" and isinstance(item, _Node) and item.index in self.sources:
                    assert id(self.sources[item.index].token) in children
            # Held strongly: one per pending callback, one per strongly held child.
            strong_children = len(
                [
                    item
                    for kind, item in node.regs
                    if kind == "link" and isinstance(item, _Node) and self._strong(item)
                ]
            )
            pending_cbs = sum(1 for kind, _ in node.regs if kind == "cb")
            stats = _token_stats(token)
            assert stats.registrations == pending_cbs
            assert stats.strong_children == strong_children
            if stats.parents:
                assert stats.held_strongly is (pending_cbs + strong_children > 0)
            assert (token._deadline is not None) is (node.deadline is not None)


TokenDag.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_linked_sources_match_the_sequential_model = TokenDag.TestCase
