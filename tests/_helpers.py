"""Helpers shared by the tests: an exception injector, waiter counting, threads, child processes.

``inject_at_each_line`` is the fault injector: it runs a scenario once per
line the scenario executes inside chosen source files of the package, raising
an exception (``KeyboardInterrupt`` by default) at that line, and checks the
invariants after each run. It is how the tests show that a Ctrl-C landing
anywhere inside the library leaves every object usable.
"""

from __future__ import annotations

import dis
import signal
import subprocess
import sys
import textwrap
import threading
from _thread import allocate_lock
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, TypeVar

import pytest
from benchmarks._childproc import wait_until_asleep

import cancellable
from cancellable import _primitives
from cancellable._token import _token_stats

PACKAGE_DIR = Path(cancellable.__file__).resolve().parent


def package_files(*names: str) -> frozenset[str]:
    """Absolute paths of modules of the package, e.g. ``package_files("_token.py")``."""
    return frozenset(str(PACKAGE_DIR / name) for name in names)


_S = TypeVar("_S")


def _no_setup() -> None:
    return None


_EXIT_CALLS = frozenset({"PRECALL", "CALL"})
_quiet_points: dict[tuple[CodeType, int], bool] = {}


def _signal_cannot_land(code: CodeType, offset: int) -> bool:
    """Whether a 'line' event at ``offset`` is one no real signal can land at.

    Tracing reports a 'line' event for a ``with`` statement's line when its
    block ends, just before ``__exit__`` is called; the interpreter checks
    for signals only after that call, so no Ctrl-C lands there, and raising
    there would skip ``__exit__`` (leaving a lock held) as nothing real can.
    The same holds at the start of an exception handler.
    """
    key = (code, offset)
    known = _quiet_points.get(key)
    if known is None:
        ops = [i for i in dis.get_instructions(code) if i.offset >= offset][:5]
        if ops and ops[0].opname == "SWAP":  # a return inside the block: value kept below
            ops = ops[1:]
        names = [i.opname for i in ops]
        with_exit = (
            len(ops) >= 4
            and all(i.opname == "LOAD_CONST" and i.argval is None for i in ops[:3])
            and names[3] in _EXIT_CALLS
        )
        known = _quiet_points[key] = with_exit or (bool(names) and names[0] == "PUSH_EXC_INFO")
    return known


class Injected(KeyboardInterrupt):
    """The `KeyboardInterrupt` the injector raises, told apart from a real one."""


@dataclass
class InjectionReport:
    """What `inject_at_each_line` did: how many runs, and where it raised."""

    lines: int = 0
    hits: list[tuple[str, int]] = field(default_factory=list)


def inject_at_each_line(
    scenario: Callable[[_S], object],
    *,
    files: Iterable[str],
    check: Callable[[_S, BaseException | None], None],
    setup: Callable[[], _S] = _no_setup,  # type: ignore[assignment]
    exception: Callable[[], BaseException] = Injected,
    limit: int = 100_000,
) -> InjectionReport:
    """Run ``scenario`` once per 'line' event it reaches in ``files``, raising at that line.

    Each run first calls ``setup()`` untraced and hands what it returns to
    ``scenario(state)`` and then to ``check(state, error)``, so every run
    works on fresh objects. The first run is untouched and counts N, the
    'line' events the scenario produces on this thread inside ``files``
    (absolute paths, see `package_files`). Then, for every n in 1..N, it runs
    again with a trace function that raises ``exception()`` at the n-th such
    event (a trace function that raises is removed by the interpreter, so
    exactly one exception is injected per run), and ``check(state, error)``
    gets what the scenario raised (None if it completed: the exception was
    swallowed or the run took another path). ``check`` asserts the
    invariants: state consistent, no lock held, the exception came out as
    itself.

    Events no real signal can land at are skipped (see `_signal_cannot_land`):
    the end of a ``with`` block before its ``__exit__``, an exception handler's
    first instruction. Everything else a 'line' event marks is a point a
    Ctrl-C can reach (it is handled at calls, returns into loops and function
    entries, all of which start or follow some line).

    Only the calling thread is traced; other threads of the scenario run
    normally. To target the executor, pass ``package_files("_executor.py",
    "_future.py", "_token.py")``.

    Returns:
        An `InjectionReport` naming the N lines hit, so a test can assert the
        injector actually reached the code it targets.
    """
    targets = frozenset(files)
    report = InjectionReport()

    def counting(frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code.co_filename not in targets:
            return None

        def local(frame: FrameType, event: str, arg: object) -> Any:
            if event == "line" and not _signal_cannot_land(frame.f_code, frame.f_lasti):
                report.lines += 1
                report.hits.append((Path(frame.f_code.co_filename).name, frame.f_lineno))
            return local

        return local(frame, event, arg)

    state = setup()
    previous = sys.gettrace()
    sys.settrace(counting)
    try:
        scenario(state)
    finally:
        sys.settrace(previous)
    check(state, None)
    if report.lines > limit:
        raise AssertionError(f"the scenario reaches {report.lines} lines, over the limit {limit}")

    for target in range(1, report.lines + 1):
        state = setup()
        error = _run_injecting(scenario, state, targets, target, exception)
        try:
            check(state, error)
        except AssertionError as failure:
            where = report.hits[target - 1]
            raise AssertionError(f"injected at line event {target} ({where}): {failure}") from error
    return report


def _run_injecting(
    scenario: Callable[[_S], object],
    state: _S,
    targets: frozenset[str],
    target: int,
    exception: Callable[[], BaseException],
) -> BaseException | None:
    """Run ``scenario`` raising ``exception()`` at its ``target``-th line in ``targets``."""
    seen = 0

    def injecting(frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code.co_filename not in targets:
            return None

        def local(frame: FrameType, event: str, arg: object) -> Any:
            nonlocal seen
            if event == "line" and not _signal_cannot_land(frame.f_code, frame.f_lasti):
                seen += 1
                if seen == target:
                    raise exception()
            return local

        return local(frame, event, arg)

    previous = sys.gettrace()
    sys.settrace(injecting)
    try:
        scenario(state)
    except BaseException as raised:
        return raised
    finally:
        sys.settrace(previous)
    return None


def holds_nothing(token: cancellable.CancellationToken) -> bool:
    """Whether ``token`` holds no registration and no link to a child (`_token_stats`)."""
    stats = _token_stats(token)
    return stats.registrations == stats.children == stats.strong_children == 0


# -- waiter counting ------------------------------------------------------------------


class WaiterLog:
    """Records every blocking acquire of a waiter lock, and lets a test wait for them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.timeouts: list[float] = []

    def started(self, timeout: float) -> None:
        with self._cond:
            self.timeouts.append(timeout)
            self._cond.notify_all()

    def wait_blocked(self, count: int = 1) -> None:
        """Return once ``count`` blocking waits have started in total."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.timeouts) >= count, timeout=10)


class RecordingLock:
    """A waiter lock that reports its blocking acquires to a `WaiterLog`."""

    def __init__(self, log: WaiterLog) -> None:
        self._lock = allocate_lock()
        self._log = log

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking:
            self._log.started(timeout)
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


def install_waiter_log(monkeypatch: pytest.MonkeyPatch) -> WaiterLog:
    """Make every waiter lock a `RecordingLock` reporting to a new log."""
    log = WaiterLog()
    monkeypatch.setattr(_primitives, "_allocate_waiter_lock", lambda: RecordingLock(log))
    return log


@pytest.fixture
def waiters(monkeypatch: pytest.MonkeyPatch) -> WaiterLog:
    return install_waiter_log(monkeypatch)


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None
    thread: threading.Thread | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def in_thread(fn: Callable[[], Any]) -> Outcome:
    """Run ``fn`` on a new thread, capturing its result or exception."""
    outcome = Outcome()

    def run() -> None:
        try:
            outcome.value = fn()
        except BaseException as error:
            outcome.error = error

    outcome.thread = threading.Thread(target=run)
    outcome.thread.start()
    return outcome


def interrupt_when_asleep(thread: threading.Thread, timeout: float = 10) -> None:
    """Send SIGINT to ``thread`` (the main thread) once it sleeps in the kernel.

    A signal that arrives before the thread blocks is handled in whatever
    Python code it is running, maybe test code; waiting until the kernel shows
    it asleep makes the interrupt land in the blocking call. This polls, as
    nothing else shows a thread's kernel state (Linux; elsewhere it sends at
    once).
    """
    wait_until_asleep(f"/proc/self/task/{thread.native_id}/stat", timeout, 0.005)
    assert thread.ident is not None
    signal.pthread_kill(thread.ident, signal.SIGINT)


# -- child processes ------------------------------------------------------------------

HANG_GUARD = 20  # seconds; generous, only there so a regression cannot hang CI


def spawn(code: str, *, prelude: str = "") -> subprocess.Popen[str]:
    """Start ``python -c prelude + code`` (``code`` dedented) with text pipes for its output.

    Children that write from several threads should use ``os.write``:
    ``print()`` is two writes, and ``sys.stdout`` is not safe for concurrent
    writers.
    """
    return subprocess.Popen(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_lines(
    proc: subprocess.Popen[str], *expected: str, guard: float = HANG_GUARD
) -> list[str]:
    """Read the child's output until it has printed every line of ``expected``.

    Returns the lines read (without their newline). Fails with the child's
    stderr if it ends first.
    """
    assert proc.stdout is not None
    missing = list(expected)
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        for candidate in (seen[-1], seen[-1].strip()):
            if candidate in missing:
                missing.remove(candidate)
                break
        if not missing:
            return seen
    proc.wait(timeout=guard)
    assert proc.stderr is not None
    raise AssertionError(f"child ended before printing {missing!r}: {seen!r} {proc.stderr.read()}")


def finish(proc: subprocess.Popen[str], *, guard: float = HANG_GUARD) -> tuple[int, str, str]:
    """Wait for the child within ``guard`` seconds; return its code and remaining output.

    A child still running then has hung: it is killed and the test fails.
    """
    try:
        out, err = proc.communicate(timeout=guard)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"child hung: {out!r} {err!r}") from None
    return proc.returncode, out, err
