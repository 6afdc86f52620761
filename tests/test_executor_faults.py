"""Ctrl-C at every line of the executor, and every public method from every callback.

`TestKeyboardInterruptAtEveryLine` runs small scenarios (submit, cancel,
`cancel_all`, shutdown, map, ``max_pending``, with and without tokens,
`request_cancel`, ``future.cancel``) on the main thread under
`_faults.inject_keyboard_interrupts`: run N raises `KeyboardInterrupt` at the
N-th line the scenario executes inside the package, for every N it reaches.
After each run `_Checker` verifies the invariants of DESIGN.md ("Task
lifecycle invariants (v3)"):

- the `KeyboardInterrupt` surfaced from the scenario as itself (the very
  instance raised: not wrapped in a group, not logged and swallowed);
- nothing is stuck: a later submit and its result, `cancel_all` and
  ``shutdown(wait=True, cancel_futures=True)`` each finish within `BOUND`;
- every future is done after that later cancel (none left pending), a
  cancelled task never ran, a finished one ran exactly once;
- ``max_pending`` slots are all free again (as many submits as the bound fit
  while the worker is busy);
- the pool is usable (or cleanly shut down or broken), and once dropped the
  executor and its internals are freed (no registration left behind on the
  test's long-lived tokens keeps them alive).

Every violation is collected with the line where the interrupt landed, and
the test fails listing them (a few examples per invariant).

`TestReentrantCallbacks` calls each public method from inside a done-callback
and from inside a token callback, at every point where such a callback runs,
with and without ``max_pending``; each case must finish within `BOUND` and
leave every future done.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, wait
from concurrent.futures.thread import BrokenThreadPool
from dataclasses import dataclass, field
from typing import Any

import pytest

from _faults import Run, inject_keyboard_interrupts, run_bounded
from cancellable import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancellationTokenSource,
)

pytestmark = pytest.mark.slow

Pool = CancellableThreadPoolExecutor
BOUND = 5.0  # seconds for any one later operation; a few milliseconds when all is well
MAX_PENDING = 2
MAX_HANGS = 2  # a scenario stops early after this many runs that hung
EXAMPLES = 3  # violations shown per invariant


# -- scenarios -------------------------------------------------------------------


@dataclass
class State:
    """What one run of a scenario works on; built untraced by `_setup`."""

    pool: Pool | None = None
    occupied: bool = True
    max_pending: int | None = None
    with_ex_token: bool = False
    futures: list[Future[Any]] = field(default_factory=list)
    ran: list[int] = field(default_factory=list)
    callbacks: list[int] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    job: CancellationTokenSource = field(default_factory=CancellationTokenSource)
    app: CancellationTokenSource = field(default_factory=CancellationTokenSource)
    # Tokens the scenario made (kept, so the checker can look at them).
    requests: list[CancellationTokenSource] = field(default_factory=list)
    shut: bool = False

    def task(self, i: int) -> int:
        self.ran.append(i)
        return i

    def submit(self, i: int, **kwargs: Any) -> CancellableFuture[int]:
        assert self.pool is not None
        future = self.pool.submit(self.task, i, **kwargs)
        self.futures.append(future)
        return future

    def observe(self, future: Future[Any], i: int) -> None:
        future.add_done_callback(lambda _: self.callbacks.append(i))


def _hold(state: State, started: threading.Event) -> None:
    started.set()
    state.gate.wait(BOUND * 4)


def _occupy(state: State) -> None:
    assert state.pool is not None
    started = threading.Event()
    state.pool.submit(_hold, state, started)
    assert started.wait(BOUND)


def _setup(
    *, occupied: bool = True, max_pending: int | None = None, ex_token: bool = False
) -> Callable[[], State]:
    def setup() -> State:
        state = State(occupied=occupied, max_pending=max_pending, with_ex_token=ex_token)
        token = state.app.token if ex_token else None
        state.pool = Pool(1, max_pending=max_pending, token=token)
        if occupied:
            _occupy(state)
        return state

    return setup


def _submit_plain(s: State) -> None:
    for i in range(3):
        s.submit(i)


def _submit_with_token(s: State) -> None:
    for i in range(3):
        s.submit(i, token=s.job.token)


def _submit_bounded(s: State) -> None:
    first = s.submit(0, token=s.job.token)
    s.submit(1)
    first.cancel()
    s.submit(2, token=s.job.token)


def _future_cancel(s: State) -> None:
    fs = [s.submit(i, token=s.job.token if i % 2 else None) for i in range(3)]
    s.observe(fs[1], 1)
    for future in fs:
        future.cancel()


def _request_cancel(s: State) -> None:
    fs = [s.submit(i, token=s.job.token if i % 2 else None) for i in range(3)]
    s.observe(fs[0], 0)
    fs[0].request_cancel("one")
    fs[2].token.register(s.callbacks.append, 2)
    fs[2].request_cancel("another")


def _cancel_all(s: State) -> None:
    fs = [s.submit(i, token=s.job.token if i % 2 else None) for i in range(3)]
    s.observe(fs[0], 0)
    s.pool.cancel_all("all")  # type: ignore[union-attr]
    s.submit(3)


def _token_cancel(s: State) -> None:
    fs = [s.submit(i, token=s.job.token) for i in range(3)]
    s.observe(fs[1], 1)
    s.job.cancel("the job")


def _per_request(s: State) -> None:
    # A child of the app token per task: each task watches its token alone.
    for i in range(3):
        s.requests.append(CancellationTokenSource(s.app.token))
        s.submit(i, token=s.requests[-1].token)
    s.observe(s.futures[1], 1)
    s.requests[0].cancel("one request")
    s.app.cancel("the app")


def _executor_token_cancel(s: State) -> None:
    fs = [s.submit(i) for i in range(2)]
    s.observe(fs[0], 0)
    s.app.cancel("the app")


def _shutdown_cancel(s: State) -> None:
    fs = [s.submit(i, token=s.job.token if i % 2 else None) for i in range(3)]
    s.observe(fs[2], 2)
    s.shut = True
    s.pool.shutdown(wait=False, cancel_futures=True)  # type: ignore[union-attr]


def _submit_and_shutdown_wait(s: State) -> None:
    for i in range(2):
        s.submit(i, token=s.job.token)
    s.shut = True
    s.pool.shutdown(wait=True)  # type: ignore[union-attr]


def _results(s: State) -> None:
    fs = [s.submit(i, token=s.job.token if i else None) for i in range(2)]
    assert [f.result(timeout=BOUND) for f in fs] == [0, 1]


def _map(s: State) -> None:
    assert s.pool is not None
    assert list(s.pool.map(s.task, range(3), timeout=BOUND)) == [0, 1, 2]


def _map_buffered_with_token(s: State) -> None:
    assert s.pool is not None
    results = s.pool.map(s.task, range(3), buffersize=1, token=s.job.token, timeout=BOUND)
    assert list(results) == [0, 1, 2]


def _with_block(s: State) -> None:
    with Pool(1, token=s.app.token) as pool:
        s.pool = pool
        s.shut = True
        s.submit(0, token=s.job.token)
        s.submit(1)


SCENARIOS: dict[str, tuple[Callable[[State], None], Callable[[], State]]] = {
    "submit": (_submit_plain, _setup()),
    "submit with token": (_submit_with_token, _setup()),
    "submit with max_pending": (_submit_bounded, _setup(max_pending=MAX_PENDING)),
    "future.cancel": (_future_cancel, _setup()),
    "future.cancel with max_pending": (_future_cancel, _setup(max_pending=3)),
    "request_cancel": (_request_cancel, _setup()),
    "request_cancel with max_pending": (_request_cancel, _setup(max_pending=3)),
    "cancel_all": (_cancel_all, _setup()),
    "cancel_all with max_pending": (_cancel_all, _setup(max_pending=4)),
    "token cancel": (_token_cancel, _setup()),
    "token cancel with max_pending": (_token_cancel, _setup(max_pending=3)),
    "per-request tokens": (_per_request, _setup()),
    "per-request tokens with max_pending": (_per_request, _setup(max_pending=3)),
    "executor token cancel": (_executor_token_cancel, _setup(ex_token=True)),
    "shutdown(cancel_futures=True)": (_shutdown_cancel, _setup()),
    "shutdown(wait=True)": (_submit_and_shutdown_wait, _setup(occupied=False)),
    "result": (_results, _setup(occupied=False)),
    "map": (_map, _setup(occupied=False)),
    "map with buffersize and token": (_map_buffered_with_token, _setup(occupied=False)),
    "with block": (_with_block, State),
}


# -- the checker -------------------------------------------------------------------


class _Checker:
    """Checks one run's invariants; collects violations rather than stopping at one."""

    def __init__(self) -> None:
        self.violations: dict[str, list[str]] = defaultdict(list)
        self.hangs = 0
        self.runs = 0

    def fail(self, invariant: str, run: Run, detail: str = "") -> None:
        where = run.describe() if run.injected else f"run {run.n}: no injection"
        self.violations[invariant].append(f"{where}{': ' + detail if detail else ''}")

    def bounded(self, invariant: str, run: Run, fn: Callable[[], Any]) -> Any:
        outcome = run_bounded(fn, BOUND)
        if not outcome.finished:
            self.hangs += 1
            quarantine(run.state.pool)
            self.fail(invariant, run, "did not finish (deadlock or spin)")
            return None
        if outcome.error is not None:
            self.fail(invariant, run, f"raised {outcome.error!r}")
        return outcome.value

    def __call__(self, run: Run) -> None:
        self.runs += 1
        state: State = run.state
        # 1. The interrupt surfaced as itself, or the run was clean.
        if run.overran:
            self.hangs += 1
            quarantine(state.pool)
            self.fail(
                "the scenario finishes", run, "it spun or blocked inside the package until ended"
            )
        elif run.injected:
            if run.error is not run.raised:
                self.fail("KeyboardInterrupt surfaced as itself", run, f"got {run.error!r}")
        elif run.error is not None:
            self.fail("a run without injection succeeds", run, repr(run.error))
        # Drop the scenario's frames (held by the traceback) before checking
        # what is freed.
        run.error = run.raised = None
        state.gate.set()
        pool = state.pool
        if pool is None:
            return  # interrupted before the pool existed
        # 2. Usable (or cleanly shut down / broken), with every slot free.
        if not self.bounded("a later submit and result complete", run, lambda: _probe(state)):
            return
        # 3. A later cancel ends every pending future.
        self.bounded("cancel_all completes", run, lambda: pool.cancel_all("checker"))
        self.bounded(
            "shutdown completes",
            run,
            lambda: pool.shutdown(wait=True, cancel_futures=True),
        )
        _, not_done = wait(state.futures, timeout=BOUND)
        if not_done:
            self.fail("every future ends", run, f"{len(not_done)} still pending: {not_done!r}")
        # 4. A cancelled task never ran; a finished one ran once.
        ran = state.ran
        if len(ran) != len(set(ran)):
            self.fail("a task runs at most once", run, f"ran {ran}")
        for i, future in enumerate(state.futures):
            if future.cancelled() and _index(future, state) in ran:
                self.fail("a cancelled task never ran", run, f"future {i}")
        # 5. Nothing left registered on the long-lived tokens (state.job,
        # state.app) once the pool is shut down and dropped, and the pool and
        # its internals are freed.
        refs = _weakrefs(pool)
        state.pool = pool = None  # type: ignore[assignment]
        state.futures.clear()
        tokens = [state.job.token, state.app.token] + [r.token for r in state.requests]
        state.requests.clear()

        def held() -> bool:
            return any(_strong_registrations(token) for token in tokens) or any(
                ref() is not None for ref in refs
            )

        # The pool's own cycles are young: the two younger generations free
        # them in a fraction of a full collection's time (which, run after
        # every one of thousands of runs, would dominate this test).
        for generation in (1, 2):
            if held():
                gc.collect(generation)
        left = [reg for token in tokens for reg in _strong_registrations(token)]
        if left:
            self.fail("no registration left behind", run, f"{left!r}")
        alive = [ref() for ref in refs if ref() is not None]
        if alive:
            self.fail("the pool is freed once dropped", run, f"{alive!r}")

    def report(self) -> str:
        lines = [f"{self.runs} runs"]
        for invariant, examples in self.violations.items():
            lines.append(f"{invariant}: {len(examples)} violation(s), e.g.")
            lines.extend(f"    {example}" for example in examples[:EXAMPLES])
        return "\n".join(lines)


def _index(future: Future[Any], state: State) -> int:
    # Tasks are numbered by their position among the scenario's submits,
    # except map's, which get their item: both are the future's position.
    return state.futures.index(future)


def _probe(state: State) -> bool:
    pool = state.pool
    assert pool is not None
    try:
        if pool.submit(pow, 2, 5).result(timeout=BOUND) != 32:
            return False
        if state.max_pending is not None:
            # Every slot is free again: with the worker busy, max_pending
            # submits fit without blocking.
            gate = threading.Event()
            started = threading.Event()
            pool.submit(lambda: (started.set(), gate.wait(BOUND)))
            started.wait(BOUND)
            try:
                for _ in range(state.max_pending):
                    pool.submit(int)
            finally:
                gate.set()
    except RuntimeError as error:
        if not state.shut or "after shutdown" not in str(error):
            raise
    except BrokenThreadPool:
        pass
    except CancelledError:
        # A cancelled executor token cancels every later task too.
        if not state.app.token.is_cancellation_requested:
            raise
    return True


def quarantine(pool: Pool | None) -> None:
    """Keep the interpreter-exit hook from waiting for a pool a test left hung.

    At exit the package joins every live pool's workers; one whose shutdown
    hung here would hang the test run at its end. Reads private state (the
    registry of live pools); does nothing if that is not where it was.
    """
    from cancellable import _executor

    live = getattr(_executor, "_live", None)
    core = getattr(pool, "_core", None)
    if live is not None and core is not None:
        live.discard(core)
    if pool is not None:
        # Let its idle workers exit (the interpreter joins them at exit too),
        # on a daemon thread in case this shutdown hangs as well.
        threading.Thread(
            target=pool.shutdown, kwargs={"wait": False, "cancel_futures": True}, daemon=True
        ).start()


def _strong_registrations(token: Any) -> list[Any]:
    """The registrations on ``token`` that keep something alive.

    Reads the token's private registries (``_regs``: callbacks, and links to
    child tokens, which are weak unless the child has callbacks of its own;
    ``_watchers``: the library's own hooks, a pool's groups and pending
    tasks; ``_solo``: a pending task watching its submit token alone); an
    empty list if the token keeps none or has no such registry.
    """
    regs = list(getattr(token, "_regs", None) or ())
    regs += list(getattr(token, "_watchers", None) or ())
    solo = getattr(token, "_solo", None)
    if solo is not None:
        regs.append(solo)
    return [
        reg
        for reg in regs
        if not isinstance(reg, weakref.ref) or getattr(reg, "strong", None) is not None
    ]


def _weakrefs(pool: Pool) -> list[weakref.ref[Any]]:
    refs: list[weakref.ref[Any]] = [weakref.ref(pool)]
    for name, value in vars(pool).items():
        if name == "_token":
            continue
        try:
            refs.append(weakref.ref(value))
        except TypeError:
            continue
    return refs


class TestKeyboardInterruptAtEveryLine:
    @pytest.mark.timeout(120)
    @pytest.mark.parametrize("name", list(SCENARIOS))
    def test_invariants_hold_wherever_the_interrupt_lands(self, name: str) -> None:
        scenario, setup = SCENARIOS[name]
        checker = _Checker()

        def check(run: Run) -> None:
            checker(run)
            if checker.hangs >= MAX_HANGS:
                raise _TooManyHangs

        try:
            runs = inject_keyboard_interrupts(scenario, check, setup=setup, budget=BOUND)
        except _TooManyHangs:
            runs = checker.runs
        assert not checker.violations, f"{name}:\n{checker.report()}"
        assert runs > 10, "the scenario barely entered the package: is the tracer working?"


class _TooManyHangs(Exception):
    """Stops a scenario whose runs keep hanging (each costs BOUND seconds)."""


# -- re-entrant callbacks -------------------------------------------------------


@dataclass
class Case:
    """One cell of the matrix: a pool, a target task, a sibling, and what was seen."""

    pool: Pool
    job: CancellationTokenSource
    target: CancellableFuture[Any]
    sibling: CancellableFuture[Any]
    extra: list[Future[Any]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    ran: threading.Event = field(default_factory=threading.Event)


def _act_cancel_sibling(case: Case) -> None:
    case.sibling.cancel()


def _act_cancel_itself(case: Case) -> None:
    case.target.cancel()


def _act_submit(case: Case) -> None:
    case.extra.append(case.pool.submit(pow, 2, 3))


def _act_submit_with_token(case: Case) -> None:
    case.extra.append(case.pool.submit(pow, 2, 3, token=case.job.token))


def _act_cancel_all(case: Case) -> None:
    case.pool.cancel_all("from a callback")


def _act_shutdown(case: Case) -> None:
    case.pool.shutdown(wait=False)


def _act_shutdown_cancel(case: Case) -> None:
    case.pool.shutdown(wait=False, cancel_futures=True)


def _act_request_cancel(case: Case) -> None:
    case.sibling.request_cancel("from a callback")


def _act_register(case: Case) -> None:
    case.job.token.register(lambda: None)
    case.sibling.token.register(lambda: None)


def _act_cancel_job(case: Case) -> None:
    case.job.cancel("from a callback")


ACTIONS: dict[str, Callable[[Case], None]] = {
    "cancel a sibling": _act_cancel_sibling,
    "future.cancel itself": _act_cancel_itself,
    "submit": _act_submit,
    "submit with the job token": _act_submit_with_token,
    "cancel_all": _act_cancel_all,
    "shutdown(wait=False)": _act_shutdown,
    "shutdown(wait=False, cancel_futures=True)": _act_shutdown_cancel,
    "request_cancel a sibling": _act_request_cancel,
    "register on a token": _act_register,
    "cancel the job token": _act_cancel_job,
}

# Where a callback runs: what ends the target task (on which thread).
POINTS: dict[str, Callable[[Case], object]] = {
    "task finishing": lambda case: None,  # the worker runs it (not gated)
    "future.cancel": lambda case: case.target.cancel(),
    "token cancel": lambda case: case.job.cancel("job"),
    "cancel_all": lambda case: case.pool.cancel_all("all"),
    "shutdown(cancel_futures=True)": lambda case: case.pool.shutdown(
        wait=False, cancel_futures=True
    ),
    "request_cancel": lambda case: case.target.request_cancel("this one"),
}

# A token callback on the target's own token runs only when that token is
# cancelled: not when the task finishes or is cancelled with future.cancel().
TOKEN_POINTS = [p for p in POINTS if p not in ("task finishing", "future.cancel")]

# What an action may legitimately raise inside the callback.
ALLOWED = ("cannot schedule new futures after shutdown",)


def _matrix() -> list[Any]:
    cells = []
    for kind, points in (("done-callback", list(POINTS)), ("token callback", TOKEN_POINTS)):
        for point in points:
            for action in ACTIONS:
                for bounded in (False, True):
                    cells.append(
                        pytest.param(
                            kind,
                            point,
                            action,
                            bounded,
                            id=f"{kind}-{point}-{action}-{'max_pending' if bounded else 'free'}",
                        )
                    )
    return cells


class TestReentrantCallbacks:
    @pytest.mark.timeout(60)
    @pytest.mark.parametrize(("kind", "point", "action", "bounded"), _matrix())
    def test_public_method_from_a_callback_finishes(
        self, kind: str, point: str, action: str, bounded: bool
    ) -> None:
        pool = Pool(1, max_pending=2 if bounded else None)
        job = CancellationTokenSource()
        gate = threading.Event()
        started = threading.Event()
        try:
            # The gate outlasts every bound below: a callback stuck behind the
            # busy worker must show as stuck, not be freed by the gate timing out.
            if point == "task finishing":
                first = pool.submit(gate.wait, BOUND * 4)  # the target runs once this returns
            else:
                pool.submit(lambda: (started.set(), gate.wait(BOUND * 4)))
                assert started.wait(BOUND)
                first = None
            target = pool.submit(int, token=job.token)
            sibling = pool.submit(int, token=job.token)
            # Observed too, as in the usual "cancel the rest" pattern where
            # every future has the callback: it ends the slow way.
            sibling.add_done_callback(lambda _: None)
            case = Case(pool, job, target, sibling)

            def callback(*_: object) -> None:
                try:
                    ACTIONS[action](case)
                except Exception as error:  # checked below: only the allowed ones
                    case.errors.append(error)
                finally:
                    case.ran.set()

            if kind == "done-callback":
                target.add_done_callback(callback)
            else:
                target.token.register(callback)
            if first is not None:
                gate.set()
            outcome = run_bounded(lambda: POINTS[point](case), BOUND)
            if not outcome.finished:
                quarantine(pool)
            assert outcome.finished, f"{point} did not return (deadlock or spin)"
            assert outcome.error is None, outcome.error
            assert case.ran.wait(BOUND), "the callback never ran"
            gate.set()
            # Whatever is left ends under a later cancel.
            final = run_bounded(lambda: pool.shutdown(wait=True, cancel_futures=True), BOUND)
            if not final.finished:
                quarantine(pool)
            assert final.finished, "the pool could not be shut down afterwards"
            everything = [target, sibling, *case.extra]
            _, not_done = wait(everything, timeout=BOUND)
            assert not not_done, f"left pending: {not_done!r}"
            unexpected = [e for e in case.errors if not any(a in str(e) for a in ALLOWED)]
            assert not unexpected, unexpected
        finally:
            gate.set()
            pool.shutdown(wait=False, cancel_futures=True)
