"""Fault injection and interleaving tools for the executor tests.

Three tools, each self-contained (only the standard library):

`inject_keyboard_interrupts(scenario, check)`
    Runs ``scenario`` again and again under `sys.settrace`; run N raises
    `KeyboardInterrupt` at the N-th ``'line'`` event executed, on the calling
    thread, inside the package's source files (``N = 1, 2, ...``), and stops
    after the first run in which no injection happened (the scenario executed
    fewer than N lines of the package). After every run ``check(run)`` is
    called, outside the tracer, to verify the invariants; ``run.error`` is what
    escaped the scenario (the injected `KeyboardInterrupt` itself when the
    library let it through unchanged). The tracer is cheap: a frame whose code
    is not in the traced files gets no local tracer at all (the global trace
    function returns None), so the scenario's own code and the standard
    library run untraced except for one call per function entered.

`PausedThread`
    The same counting on ANOTHER thread (a pool's worker, through
    `threading.settrace`): at its N-th line inside the package after
    `PausedThread.arm()` was called on that thread, it stops until the test
    resumes it. While it is stopped the test runs whatever the race is with
    (`request_cancel`, say) and observes the result before the worker moves
    on: a deterministic walk through every point of a race that a loop of
    Barriers would hit only by luck.

`run_bounded(fn, timeout)`
    Calls ``fn`` on a daemon thread and waits at most ``timeout`` seconds, so a
    deadlock or a spin becomes an assertion failure rather than a stalled
    test run. A thread still running after the timeout gets `Stuck` raised
    at its next line inside the package, which ends a spin; a thread blocked
    on a lock stays blocked (it is a daemon).
"""

from __future__ import annotations

import ast
import dis
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

import cancellable

WAIT = 10.0  # seconds; only a deadlock or a lost wake-up would need them

PACKAGE_DIR = os.path.dirname(os.path.abspath(cancellable.__file__))


def package_files(*names: str) -> frozenset[str]:
    """The absolute paths of the package's modules ``names`` (all of them if none)."""
    if not names:
        names = tuple(n for n in os.listdir(PACKAGE_DIR) if n.endswith(".py"))
    return frozenset(os.path.join(PACKAGE_DIR, name) for name in names)


# -- bounded calls --------------------------------------------------------------


class Stuck(BaseException):
    """Raised in a thread that overran `run_bounded`'s timeout."""


@dataclass
class Bounded:
    """What `run_bounded` observed."""

    finished: bool
    value: Any = None
    error: BaseException | None = None
    thread: threading.Thread | None = None


def run_bounded(fn: Callable[[], Any], timeout: float = WAIT) -> Bounded:
    """Call ``fn()`` on a fresh daemon thread; wait at most ``timeout`` seconds.

    Returns whether it finished, and its value or what it raised. If it did
    not finish, `Stuck` is raised in it at its next line inside the package,
    so that a spinning thread unwinds instead of burning a CPU for the rest
    of the session (a thread blocked on a lock stays blocked: it is a daemon).
    The thread traces only the package's frames, and only to check that flag.
    """
    outcome = Bounded(finished=False)
    stop = threading.Event()
    files = package_files()

    def local_trace(frame: FrameType, event: str, arg: object) -> Any:
        if stop.is_set():
            raise Stuck("overran run_bounded's timeout")
        return local_trace

    def global_trace(frame: FrameType, event: str, arg: object) -> Any:
        return local_trace if frame.f_code.co_filename in files else None

    def target() -> None:
        sys.settrace(global_trace)
        try:
            outcome.value = fn()
        except BaseException as error:  # reported to the test, never lost
            outcome.error = error
        finally:
            sys.settrace(None)
            outcome.finished = not stop.is_set()

    thread = threading.Thread(target=target, name="run_bounded", daemon=True)
    outcome.thread = thread
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        stop.set()
        thread.join(0.5)  # a spin unwinds at once; a blocked thread stays
    return outcome


# -- KeyboardInterrupt at the N-th line ----------------------------------------


_WITH_EXITS: dict[CodeType, frozenset[int]] = {}


def _with_exits(code: CodeType) -> frozenset[int]:
    """Offsets in ``code`` where a ``with`` block's exit begins.

    A ``with`` statement reports a second ``'line'`` event for its own line
    just before it calls ``__exit__`` (three ``LOAD_CONST None`` on 3.11 to
    3.13, after a ``SWAP`` when a ``return`` inside the block leaves its
    value on the stack; ``PUSH_EXC_INFO`` then ``WITH_EXCEPT_START`` on the
    exception path).
    A signal cannot land there (CPython checks for signals only after the
    body's last call returned, and then again once ``__exit__`` was called), so
    an interrupt raised there would skip ``__exit__`` as no real Ctrl-C can:
    such events are not counted.
    """
    offsets = _WITH_EXITS.get(code)
    if offsets is None:
        found = set()
        instructions = list(dis.get_instructions(code))
        for i, ins in enumerate(instructions):
            following = [x.opname for x in instructions[i + 1 : i + 3]]
            if ins.opname == "LOAD_CONST" and ins.argval is None:
                nxt = instructions[i + 1 : i + 3]
                if len(nxt) == 2 and all(
                    x.opname == "LOAD_CONST" and x.argval is None for x in nxt
                ):
                    found.add(ins.offset)
                    previous = instructions[i - 1] if i else None
                    if previous is not None and previous.opname == "SWAP":
                        found.add(previous.offset)
            elif ins.opname == "PUSH_EXC_INFO" and following[:1] == ["WITH_EXCEPT_START"]:
                found.add(ins.offset)
        offsets = _WITH_EXITS[code] = frozenset(found)
    return offsets


_FINALLY_STARTS: dict[str, frozenset[int]] = {}


def _finally_starts(filename: str) -> frozenset[int]:
    """The lines in ``filename`` where a ``finally`` block's first statement begins.

    A signal cannot land there: CPython checks for one only at calls and
    backward jumps, and one that lands at the ``try`` block's last call is
    raised inside the block, so the ``finally`` block runs from its start.
    Such events are not counted either.
    """
    lines = _FINALLY_STARTS.get(filename)
    if lines is None:
        with open(filename, encoding="utf-8") as source:
            tree = ast.parse(source.read(), filename)
        lines = _FINALLY_STARTS[filename] = frozenset(
            node.finalbody[0].lineno
            for node in ast.walk(tree)
            if isinstance(node, (ast.Try, ast.TryStar)) and node.finalbody
        )
    return lines


class _Injector:
    """A `sys.settrace` function raising KeyboardInterrupt at the N-th traced line."""

    def __init__(self, files: frozenset[str], target: int, budget: float) -> None:
        self.files = files
        self.target = target
        self.deadline = time.monotonic() + budget
        self.overran = False
        self.count = 0
        self.injected_at: str | None = None
        self.raised: KeyboardInterrupt | None = None

    def global_trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if self.injected_at is not None or frame.f_code.co_filename not in self.files:
            return None
        return self.local_trace

    def local_trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if not self.overran and time.monotonic() > self.deadline:
            # A spin inside the package: end it rather than count its lines.
            self.overran = True
            raise Overran(f"still running inside the package after {self.count} lines")
        if (
            event == "line"
            and self.injected_at is None
            and frame.f_lasti not in _with_exits(frame.f_code)
            and frame.f_lineno not in _finally_starts(frame.f_code.co_filename)
        ):
            self.count += 1
            if self.count == self.target:
                code = frame.f_code
                self.injected_at = (
                    f"{os.path.basename(code.co_filename)}:{frame.f_lineno} ({code.co_name})"
                )
                self.raised = KeyboardInterrupt(f"injected at line event {self.target}")
                raise self.raised
        return self.local_trace if self.injected_at is None else None


def _confined(scenario: Callable[[Any], None], state: Any) -> Iterator[None]:
    scenario(state)
    yield


class Overran(BaseException):
    """Ends a scenario still running inside the package after its time budget."""


@dataclass
class Run:
    """One run of a scenario under the injector."""

    n: int
    injected_at: str | None
    error: BaseException | None
    state: Any = None
    # The KeyboardInterrupt instance raised, to check it surfaced as itself.
    raised: KeyboardInterrupt | None = None
    # The scenario overran its budget inside the package (a spin) and was ended.
    overran: bool = False

    @property
    def injected(self) -> bool:
        return self.injected_at is not None

    def describe(self) -> str:
        return f"run {self.n}: KeyboardInterrupt injected at {self.injected_at}"


def inject_keyboard_interrupts(
    scenario: Callable[[Any], None],
    check: Callable[[Run], None],
    *,
    setup: Callable[[], Any] = lambda: None,
    files: Iterable[str] | None = None,
    max_runs: int = 5000,
    budget: float = WAIT,
) -> int:
    """Run ``scenario`` once per reachable injection point; return how many runs.

    For N = 1, 2, ...: ``state = setup()`` (untraced), then ``scenario(state)``
    under a tracer that raises `KeyboardInterrupt` at the N-th ``'line'``
    event executed on this thread inside ``files`` (default: every module of
    the package), then ``check(run)`` (untraced; ``run.state`` is ``state``).
    Stops after the first run with no injection. A `KeyboardInterrupt`
    escaping the scenario is caught and handed to ``check`` as ``run.error``,
    as is anything else it raised. A run still executing inside the package
    after ``budget`` seconds (a spin) is ended with `Overran` and reported as
    ``run.overran``; a run blocked outside Python code is left to the test's
    timeout.

    Raises:
        AssertionError: the scenario still reached injection points after
            ``max_runs`` runs (an endless scenario), or what ``check`` raised.
    """
    traced = frozenset(files) if files is not None else package_files()
    watchdog = _Watchdog()
    try:
        return _inject(
            scenario=scenario,
            check=check,
            setup=setup,
            traced=traced,
            max_runs=max_runs,
            budget=budget,
            watchdog=watchdog,
        )
    finally:
        watchdog.close()


class _Watchdog:
    """Interrupts the main thread when a run blocks (in a lock wait, say) too long.

    The tracer ends a run that spins in Python code; one blocked in C sees no
    trace events, so a timer sends SIGUSR1 to the main thread, whose handler
    raises `Overran` there (a real signal also wakes a blocked lock acquire).
    Only on the main thread of a POSIX system; elsewhere it does nothing.
    """

    def __init__(self) -> None:
        self.armed = False
        self.fired = False
        self.timer: threading.Timer | None = None
        self.enabled = hasattr(signal, "pthread_kill") and (
            threading.current_thread() is threading.main_thread()
        )
        if self.enabled:
            self.previous = signal.signal(signal.SIGUSR1, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        if self.armed:
            self.armed = False
            raise Overran("the scenario blocked inside the package past its budget")

    def _fire(self) -> None:
        if self.armed:
            self.fired = True
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)  # type: ignore[arg-type]

    def arm(self, budget: float) -> None:
        if self.enabled:
            self.fired = False
            self.armed = True
            self.timer = threading.Timer(budget, self._fire)
            self.timer.daemon = True
            self.timer.start()

    def disarm(self) -> bool:
        """Stop watching; return whether it fired."""
        self.armed = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return self.fired

    def close(self) -> None:
        self.disarm()
        if self.enabled:
            signal.signal(signal.SIGUSR1, self.previous)


def _inject(
    *,
    scenario: Callable[[Any], None],
    check: Callable[[Run], None],
    setup: Callable[[], Any],
    traced: frozenset[str],
    max_runs: int,
    budget: float,
    watchdog: _Watchdog,
) -> int:
    for n in range(1, max_runs + 1):
        state = setup()
        injector = _Injector(traced, n, budget)
        error: BaseException | None = None
        previous = sys.gettrace()
        watchdog.arm(budget * 2)
        sys.settrace(injector.global_trace)
        try:
            # In a generator's frame, which has its own "exception being
            # handled": an exception raised by a trace function inside an
            # ``except`` block leaves that block's exception set as the
            # thread's current one (a CPython quirk, seen on 3.11 to 3.13),
            # and with it every frame of its traceback. Confined there, it
            # goes when the generator does.
            next(_confined(scenario, state))
            watchdog.armed = False
        except BaseException as raised:
            watchdog.armed = False
            sys.settrace(previous)
            if raised is not injector.raised and not isinstance(
                raised, (Exception, BaseExceptionGroup, Overran)
            ):
                raise  # not ours: a real Ctrl-C, a test timeout, SystemExit...
            error = raised  # handed to the checker
        finally:
            sys.settrace(previous)
            if watchdog.disarm():
                injector.overran = True
        run = Run(n, injector.injected_at, error, state, injector.raised, injector.overran)
        # Only the run holds the error (and through its traceback the
        # scenario's frames): the checker may drop it to see what is freed.
        del error, state
        injector.raised = None
        check(run)
        if not run.injected:
            return n
        del run
    raise AssertionError(f"the scenario still reached injection points after {max_runs} runs")


# -- pausing another thread at its N-th line -----------------------------------


@dataclass
class PausedThread:
    """Stops the thread that calls `arm` at its ``target``-th line inside ``files``.

    Install with `install` BEFORE the thread starts (it uses
    `threading.settrace`, which reaches threads started afterwards) and
    `uninstall` after. The thread counts lines only between `arm()` (called on
    that thread, e.g. by a task as it returns) and `disarm()`.
    """

    target: int
    files: frozenset[str] = field(default_factory=package_files)
    paused: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)
    where: str | None = None
    _armed: threading.Thread | None = None
    _count: int = 0

    def install(self) -> None:
        threading.settrace(self._global_trace)

    @staticmethod
    def uninstall() -> None:
        threading.settrace(None)  # type: ignore[arg-type]

    def arm(self) -> None:
        """Start counting lines on the calling thread."""
        self._count = 0
        self._armed = threading.current_thread()

    def disarm(self) -> None:
        self._armed = None

    def _global_trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code.co_filename not in self.files:
            return None
        return self._local_trace

    def _local_trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and self._armed is threading.current_thread():
            self._count += 1
            if self._count == self.target:
                self._armed = None
                code = frame.f_code
                self.where = (
                    f"{os.path.basename(code.co_filename)}:{frame.f_lineno} ({code.co_name})"
                )
                self.paused.set()
                self.resume.wait(WAIT)
        return self._local_trace
