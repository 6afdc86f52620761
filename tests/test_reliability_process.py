"""Whole-process behaviour, each case in a child interpreter with a hang guard.

Extends tests/test_executor_process.py: Ctrl-C during ``map``, deadlines
firing while the interpreter waits at exit, threads blocked in every
cancellable primitive at exit, and ``os.fork()`` from a process with live
pools, timers and held module locks. The parent learns that a child is ready
from lines the child writes, never by sleeping.
"""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest
from benchmarks._childproc import interrupt_when_blocked

from _helpers import finish, spawn, wait_for_lines

HANG_GUARD = 10  # seconds; a child still running then has hung

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# Children write lines with os.write: print() from several threads can interleave.
PRELUDE = r"""
import os, signal, sys, threading, warnings
# Python 3.12+ warns when a process with threads forks; these tests mean to.
warnings.filterwarnings("ignore", ".*fork.*", DeprecationWarning)
def say(*words):
    os.write(1, (" ".join(map(str, words)) + "\n").encode())
"""


def _spawn(code: str) -> subprocess.Popen[str]:
    return spawn(code, prelude=PRELUDE)


def _wait_for(proc: subprocess.Popen[str], *expected: str) -> list[str]:
    return wait_for_lines(proc, *expected, guard=HANG_GUARD)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    return finish(proc, guard=HANG_GUARD)


def _run(code: str) -> tuple[int, str, str]:
    return _finish(_spawn(code))


class TestCtrlC:
    def test_ctrl_c_during_map_cancels_what_was_not_yielded(self) -> None:
        proc = _spawn(
            r"""
            import time
            from cancellable import CancellableThreadPoolExecutor, current_token, _token
            def work(n):
                if n == 3:
                    # This task's future stands in for its token until touched.
                    future = _token._ambient.get()
                    # Poll, as nothing else tells that the main thread is blocked
                    # inside next() on this very future (not between two items).
                    while not (future._sync and future._sync.cond._waiters):
                        time.sleep(0.001)
                    say("blocking")
                    current_token().wait()
                    say("task 3 stopped")
                    current_token().raise_if_cancellation_requested()
                return n
            ex = CancellableThreadPoolExecutor(2)
            results = ex.map(work, range(100))
            try:
                for r in results:
                    say("result", r)
            except KeyboardInterrupt:
                say("interrupted")
            say("exiting")
            """
        )
        lines = _wait_for(proc, "result 2", "blocking")
        interrupt_when_blocked(proc)
        code, out, err = _finish(proc)
        lines += out.splitlines()
        assert code == 0, err
        assert "interrupted" in lines
        assert "task 3 stopped" in lines
        # Nothing after the interrupted item was delivered, nor ran at exit.
        assert not [line for line in lines if line.startswith("result") and int(line[7:]) > 3]
        assert not err

    def test_ctrl_c_during_map_in_a_with_block(self) -> None:
        proc = _spawn(
            r"""
            from cancellable import CancellableThreadPoolExecutor, current_token, sleep
            import math
            ran = []
            def work(n):
                ran.append(n)
                say("sleeping")
                sleep(math.inf)  # only a cancel ends it
            try:
                with CancellableThreadPoolExecutor(4) as ex:
                    # Start all four workers first: an interrupt landing inside
                    # Thread.start() is another case (see test_faults.py).
                    warm = threading.Barrier(5)
                    for _ in range(4):
                        ex.submit(warm.wait)
                    warm.wait()
                    for r in ex.map(work, range(1000)):
                        pass
            except KeyboardInterrupt:
                say("ran", len(ran))
            """
        )
        _wait_for(proc, *["sleeping"] * 4)
        interrupt_when_blocked(proc)
        code, out, err = _finish(proc)
        assert code == 0, err
        # Only the four running calls started; the backlog never did.
        assert out.splitlines() == ["ran 4"], (out, err)

    def test_ctrl_c_while_tasks_block_in_every_primitive_at_exit(self) -> None:
        proc = _spawn(BLOCKED_EVERYWHERE + POOLED)
        _wait_for(proc, *(f"blocked {name}" for name in PRIMITIVES), "waiting")
        interrupt_when_blocked(proc)
        code, out, err = _finish(proc)
        woke = sorted(line.split()[1] for line in out.splitlines() if line.startswith("woke"))
        assert woke == sorted(PRIMITIVES), (out, err)
        assert code == 0, err


PRIMITIVES = [
    "Lock",
    "RLock",
    "Event",
    "Condition",
    "Semaphore",
    "BoundedSemaphore",
    "Barrier",
    "Queue.get",
    "Queue.put",
    "Queue.join",
    "sleep",
    "join",
    "wait",
    "as_completed",
    "result",
    "token.wait",
]

# Defines blockers[name]() that each block in one primitive until cancelled,
# reading the ambient token (token=None), then say "woke <name>".
BLOCKED_EVERYWHERE = r"""
import math
from concurrent.futures import Future
import cancellable as c
lock = c.Lock(); lock.acquire()
rlock = c.RLock(); threading.Thread(target=rlock.acquire).start()
full = c.Queue(1); full.put(0)
unfinished = c.Queue(); unfinished.put(0)
forever = threading.Thread(target=threading.Event().wait, daemon=True); forever.start()
never = Future()
cond = c.Condition()
def on_cond():
    with cond:
        cond.wait()
blockers = {
    "Lock": lock.acquire,
    "RLock": rlock.acquire,
    "Event": c.Event().wait,
    "Condition": on_cond,
    "Semaphore": c.Semaphore(0).acquire,
    "BoundedSemaphore": c.BoundedSemaphore(1).acquire,
    "Barrier": c.Barrier(2).wait,
    "Queue.get": c.Queue().get,
    "Queue.put": lambda: full.put(1),
    "Queue.join": unfinished.join,
    "sleep": lambda: c.sleep(math.inf),
    "join": lambda: c.join(forever),
    "wait": lambda: c.wait([never]),
    "as_completed": lambda: list(c.as_completed([never])),
    "result": lambda: c.result(never),
    "token.wait": lambda: c.current_token().wait() and c.current_token()._raise_cancelled(),
}
bounded = blockers["BoundedSemaphore"].__self__
bounded.acquire()  # its one permit: the next acquire blocks
def blocked(name):
    say("blocked", name)
    try:
        blockers[name]()
    except c.OperationCancelledError:
        say("woke", name)
        raise
"""

# Runs every blocker as a task of one pool and leaves the main thread, so the
# interpreter waits for them at exit; the parent then sends Ctrl-C.
POOLED = r"""
from cancellable import _executor
_executor._exit_wait_hooks.append(lambda phase: say(phase))
ex = c.CancellableThreadPoolExecutor(len(blockers))
for name in blockers:
    ex.submit(blocked, name)
"""


class TestExit:
    def test_deadline_fires_while_the_interpreter_waits_at_exit(self) -> None:
        code, out, err = _run(
            r"""
            from cancellable import CancellableThreadPoolExecutor, CancellationTokenSource
            from cancellable import current_token, sleep
            import math
            # The executor's token times out after the main thread has ended.
            deadline = CancellationTokenSource(timeout=0.2)
            ex = CancellableThreadPoolExecutor(2, token=deadline.token)
            def slow():
                say("started")
                sleep(math.inf)  # ends only when cancelled
            running = [ex.submit(slow) for _ in range(2)]
            backlog = [ex.submit(say, "backlog ran") for _ in range(50)]
            """
        )
        assert code == 0, err
        assert out.count("started") == 2
        assert "backlog ran" not in out
        assert not err

    def test_daemon_threads_blocked_in_every_primitive_do_not_hold_up_exit(self) -> None:
        code, out, err = _run(
            BLOCKED_EVERYWHERE
            + textwrap.dedent(
                r"""
            source = c.CancellationTokenSource()
            ready = []
            def run(name):
                with c.use_token(source.token):
                    blocked(name)
            for name in blockers:
                threading.Thread(target=run, args=(name,), daemon=True).start()
            say("main done")
            """
            )
        )
        assert code == 0, err
        assert sorted(line.split()[1] for line in out.splitlines() if "blocked" in line) == sorted(
            PRIMITIVES
        )
        assert not err

    def test_cancel_from_an_exit_hook_wakes_every_blocked_thread(self) -> None:
        code, out, err = _run(
            BLOCKED_EVERYWHERE
            + textwrap.dedent(
                r"""
            source = c.CancellationTokenSource()
            def run(name):
                with c.use_token(source.token):
                    try:
                        blocked(name)
                    except c.OperationCancelledError:
                        pass
            for name in blockers:
                threading.Thread(target=run, args=(name,)).start()
            # Runs before the interpreter joins non-daemon threads.
            threading._register_atexit(source.cancel, "exiting")
            """
            )
        )
        assert code == 0, err
        woke = sorted(line.split()[1] for line in out.splitlines() if line.startswith("woke"))
        assert woke == sorted(PRIMITIVES), (out, err)
        assert not err


@needs_fork
class TestFork:
    def test_child_of_a_process_with_live_pools_and_timers(self) -> None:
        code, out, err = _run(
            r"""
            from concurrent.futures.thread import BrokenThreadPool
            import cancellable as c
            busy = c.CancellableThreadPoolExecutor(2)
            gate = threading.Event()
            started = threading.Barrier(3)
            held = [busy.submit(lambda: (started.wait(), gate.wait())) for _ in range(2)]
            backlog = busy.submit(int)
            started.wait()
            armed = c.CancellationTokenSource(timeout=0.3)  # due after the fork
            far = c.CancellationTokenSource(timeout=3600)
            linked = c.CancellationTokenSource(far.token)
            pid = os.fork()
            if pid == 0:
                signal.alarm(8)  # the child's own hang guard: the parent only waits for it
                try:
                    busy.submit(int)
                except BrokenThreadPool:
                    say("child: inherited pool broken")
                assert not backlog.done()
                busy.shutdown(wait=True)  # no workers here: returns at once
                say("child: shutdown returned")
                assert armed.token.wait(5), "an inherited deadline did not fire"
                say("child: inherited deadline fired", type(armed.token.reason).__name__)
                fresh = c.CancellationTokenSource(timeout=0.05)
                assert fresh.token.wait(5)
                say("child: new deadline fired")
                ran = []
                linked.token.register(ran.append, "callback")
                far.cancel("in the child")
                say("child: linked", ran, linked.token.reason)
                with c.CancellableThreadPoolExecutor(2) as pool:
                    say("child: new pool", pool.submit(pow, 2, 10).result(timeout=5))
                sys.exit(7)  # a normal exit: the exit hook must not wait for the parent's workers
            _, status = os.waitpid(pid, 0)
            say("parent: child exited", os.waitstatus_to_exitcode(status))
            gate.set()
            say("parent: backlog", backlog.result(timeout=5))
            say("parent: far", far.token.is_cancellation_requested)
            """
        )
        assert code == 0, err
        assert out.splitlines() == [
            "child: inherited pool broken",
            "child: shutdown returned",
            "child: inherited deadline fired TimeoutError",
            "child: new deadline fired",
            "child: linked ['callback'] in the child",
            "child: new pool 1024",
            "parent: child exited 7",
            "parent: backlog 0",
            "parent: far False",
        ], err

    def test_module_locks_held_by_another_thread_at_fork_are_free_in_the_child(self) -> None:
        # join() and the future waits keep a registry behind one module lock
        # each; a thread holding one at the moment of fork() must not leave it
        # held forever in the child.
        code, out, err = _run(
            r"""
            from concurrent.futures import Future
            import cancellable as c
            from cancellable import _futures, _primitives
            holding, release = threading.Event(), threading.Event()
            def hold():
                with _primitives._join_lock, _futures._registry_lock:
                    holding.set()
                    release.wait()
            holder = threading.Thread(target=hold)
            holder.start()
            holding.wait()
            pid = os.fork()
            if pid == 0:
                signal.alarm(8)  # the child's own hang guard: the parent only waits for it
                source = c.CancellationTokenSource()
                stop = threading.Event()
                worker = threading.Thread(target=stop.wait)
                worker.start()
                source.cancel_after(0.05)
                try:
                    c.join(worker, token=source.token)
                except c.OperationCancelledError:
                    say("child: join cancelled")
                stop.set()
                future = Future()
                threading.Timer(0.05, future.set_result, (5,)).start()
                say("child: result", c.result(future, token=c.CancellationTokenSource().token))
                os._exit(0)
            release.set()
            _, status = os.waitpid(pid, 0)
            say("parent: child exited", os.waitstatus_to_exitcode(status))
            """
        )
        assert code == 0, err
        assert out.splitlines() == [
            "child: join cancelled",
            "child: result 5",
            "parent: child exited 0",
        ], err
