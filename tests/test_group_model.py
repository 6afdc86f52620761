"""Random trees of task groups and cancel scopes against a sequential model.

A tree is a root `TaskGroup` whose tasks are leaves (return, fail, or wait
for their token), cancel scopes around a leaf, or nested groups. Each group
may fail fast or supervise, have a limit, run on its own pool or a shared one,
and its body may raise, cancel the group or (the root only) cancel the
parent token. Threads make some outcomes a race (a task the group cancels may
or may not have started), so the model gives, for every task, the set of
outcomes it may have, and then checks each group's exit exactly against the
outcomes its tasks really had: which failures come out in the group, when the
exit raises `OperationCancelledError`, and whether the group's token ends
cancelled.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cancellable import (
    CancellableThreadPoolExecutor,
    CancellationToken,
    CancellationTokenSource,
    CancelScope,
    OperationCancelledError,
    TaskGroup,
    current_token,
)


@dataclass(eq=False)
class Leaf:
    kind: str  # "ok" returns, "fail" raises ValueError, "wait" waits for its token


@dataclass(eq=False)
class Scope:
    mode: str  # "cancel": scope.cancel() first; "timeout0": a 0 s deadline; "none"
    inner: Leaf


@dataclass(eq=False)
class Group:
    fail_fast: bool
    limit: int | None
    shared: bool
    body: str  # "none", "raise" (KeyError), "cancel" (tg.cancel()), "parent" (root only)
    children: list[Any]
    # Filled in by the run:
    futures: list[Any] = field(default_factory=list)
    ran: bool = False
    exit: BaseException | None = None
    token: CancellationToken | None = None


Node = Leaf | Scope | Group


# -- the model ------------------------------------------------------------------------


def may_fail(node: Node) -> bool:
    if isinstance(node, Leaf):
        return node.kind == "fail"
    if isinstance(node, Scope):
        return node.inner.kind == "fail"
    return node.body == "raise" or any(may_fail(c) for c in node.children)


def surely_fails(node: Node) -> bool:
    """It fails whenever nothing above it cancels it."""
    if isinstance(node, Leaf | Scope):
        return may_fail(node)
    if node.body == "raise":
        return True
    # A body cancel may stop a failing child before it starts.
    return node.body == "none" and any(surely_fails(c) for c in node.children)


def may_be_cancelled(group: Group, above: bool) -> bool:
    return (
        above
        or group.body != "none"
        or (group.fail_fast and any(may_fail(c) for c in group.children))
    )


def surely_cancelled(group: Group, above: bool) -> bool:
    return (
        above
        or group.body in ("raise", "cancel", "parent")
        or (group.fail_fast and any(surely_fails(c) for c in group.children))
    )


def fails_without_waiting(node: Node) -> bool:
    """It fails, and its exit comes, whatever happens above it.

    No limit queues its failure behind "wait" leaves, and it cancels itself
    (a body raise, or fail-fast on its own failure), so its exit never waits
    for a cancel from above, which may be waiting for this very failure.
    """
    if isinstance(node, Leaf | Scope):
        return may_fail(node)
    return node.body == "raise" or (
        node.body == "none"
        and node.fail_fast
        and node.limit is None
        and any(fails_without_waiting(c) for c in node.children)
    )


def make_runnable(group: Group, above: bool) -> None:
    """Turn "wait" leaves that nothing would ever cancel into "ok" (they would hang).

    A failure only counts as the cancel that ends them when no limit can
    queue it behind them.
    """
    sure = (
        above
        or group.body in ("raise", "cancel", "parent")
        or (
            group.fail_fast
            and group.limit is None
            and any(fails_without_waiting(c) for c in group.children)
        )
    )
    for child in group.children:
        if isinstance(child, Leaf) and child.kind == "wait" and not sure:
            child.kind = "ok"
        elif isinstance(child, Scope) and child.inner.kind == "wait":
            if child.mode == "none" and not sure:
                child.inner.kind = "ok"
        elif isinstance(child, Group):
            make_runnable(child, sure)


def allowed(node: Node, group_may_cancel: bool) -> set[str]:
    """The outcomes a task may have whose group may (or may not) be cancelled."""
    maybe_cancelled = {"cancelled"} if group_may_cancel else set()
    if isinstance(node, Leaf):
        if node.kind == "wait":
            return {"cancelled"}
        return {"failed" if node.kind == "fail" else "ok"} | maybe_cancelled
    if isinstance(node, Scope):
        if node.inner.kind == "wait":
            if node.mode == "none":
                return {"cancelled"}
            # The scope cancelled itself and catches the inner cancel, unless
            # the task's own token is cancelled too (then the outer catches).
            return {"ok"} | maybe_cancelled
        return {"failed" if node.inner.kind == "fail" else "ok"} | maybe_cancelled
    outcomes = (
        {"failed"} if surely_fails(node) else {"ok"} | ({"failed"} if may_fail(node) else set())
    )
    return outcomes | maybe_cancelled


def outcome(future: Any) -> str:
    if future.cancelled():
        return "cancelled"
    return "failed" if future.exception() is not None else "ok"


def failure_kind(node: Node) -> str:
    return "ExceptionGroup" if isinstance(node, Group) else "ValueError"


def check(group: Group, above: bool, parent_cancelled: bool) -> None:
    """Check one group that ran, then the nested groups of its tasks."""
    assert group.ran
    may = may_be_cancelled(group, above)
    assert group.token is not None
    # Only its own reasons: a nested group may end before its parent is cancelled.
    if surely_cancelled(group, above=False):
        assert group.token.is_cancellation_requested
    if not may:
        assert not group.token.is_cancellation_requested
    assert len(group.futures) == len(group.children)
    failures = ["KeyError"] if group.body == "raise" else []
    for child, future in zip(group.children, group.futures, strict=True):
        got = outcome(future)
        assert got in allowed(child, may), (child, got, allowed(child, may))
        if got == "failed":
            failures.append(failure_kind(child))
        if isinstance(child, Group) and child.ran:
            check(child, may, parent_cancelled=future.cancelled())
    if failures:
        assert isinstance(group.exit, ExceptionGroup), group.exit
        kinds = [type(e).__name__ for e in group.exit.exceptions]
        if group.body == "raise":
            assert kinds[0] == "KeyError"  # the body's exception comes first
        assert sorted(kinds) == sorted(failures)
    elif parent_cancelled:
        assert isinstance(group.exit, OperationCancelledError), group.exit
    else:
        assert group.exit is None, group.exit


# -- running a tree --------------------------------------------------------------------


class Runner:
    def __init__(self, shared: CancellableThreadPoolExecutor, root: CancellationTokenSource):
        self.shared = shared
        self.root = root

    def leaf(self, leaf: Leaf) -> int:
        if leaf.kind == "fail":
            raise ValueError("leaf")
        if leaf.kind == "wait":
            current_token().wait()
            current_token().raise_if_cancellation_requested()
        return 1

    def node(self, node: Node) -> object:
        if isinstance(node, Leaf):
            return self.leaf(node)
        if isinstance(node, Scope):
            with CancelScope(timeout=0 if node.mode == "timeout0" else None) as scope:
                if node.mode == "cancel":
                    scope.cancel()
                self.leaf(node.inner)
            return scope.cancelled_caught
        self.group(node)
        return None

    def group(self, group: Group, token: CancellationToken | None = None) -> None:
        group.ran = True
        try:
            with TaskGroup(
                self.shared if group.shared else None,
                token=token,
                limit=group.limit,
                fail_fast=group.fail_fast,
            ) as tg:
                group.token = tg.token
                for child in group.children:
                    group.futures.append(tg.submit(self.node, child))
                if group.body == "raise":
                    raise KeyError("body")
                if group.body == "cancel":
                    tg.cancel()
                if group.body == "parent":
                    self.root.cancel("parent")
        except BaseException as error:
            group.exit = error
            raise


leaves = st.builds(Leaf, st.sampled_from(["ok", "ok", "fail", "wait"]))
scopes = st.builds(
    Scope,
    st.sampled_from(["cancel", "timeout0", "none"]),
    st.builds(Leaf, st.sampled_from(["ok", "fail", "wait"])),
)


def groups(children: st.SearchStrategy[Any], bodies: list[str]) -> st.SearchStrategy[Group]:
    return st.builds(
        Group,
        fail_fast=st.booleans(),
        limit=st.sampled_from([None, None, 1, 2]),
        shared=st.booleans(),
        body=st.sampled_from(bodies),
        children=st.lists(children, max_size=4),
    )


trees = st.recursive(
    leaves | scopes, lambda inner: groups(inner, ["none", "none", "raise", "cancel"]), max_leaves=10
)
roots = groups(trees, ["none", "none", "raise", "cancel", "parent"])


@pytest.fixture(scope="module")
def shared_pool() -> Iterator[CancellableThreadPoolExecutor]:
    # Wide enough that tasks blocked in a nested group's exit never starve
    # the tasks they wait for (a tree has at most a few dozen tasks).
    ex = CancellableThreadPoolExecutor(max_workers=64)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


@pytest.mark.timeout(300)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(root=roots)
def test_trees_of_groups_and_scopes_match_the_model(
    root: Group, shared_pool: CancellableThreadPoolExecutor
) -> None:
    root = copy.deepcopy(root)  # hypothesis may run one example more than once
    make_runnable(root, above=False)
    parent = CancellationTokenSource()
    threads = threading.active_count()
    with contextlib.suppress(Exception):  # checked below, from root.exit
        Runner(shared_pool, parent).group(root, token=parent.token)
    check(root, above=False, parent_cancelled=root.body == "parent")
    assert parent.token._regs is None  # every group and scope let go of the parent
    # Groups with pools of their own shut them down at exit.
    assert threading.active_count() <= threads + shared_pool._max_workers
