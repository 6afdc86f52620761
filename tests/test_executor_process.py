"""Interpreter exit, Ctrl-C and fork, each in a child process (with a hang guard)."""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest
from benchmarks._childproc import interrupt_when_blocked

from _helpers import finish, spawn, wait_for_lines

HANG_GUARD = 20  # seconds; generous, only there so a regression cannot hang CI


# Children write lines from several threads with os.write: print() is two
# writes, and sys.stdout is not safe for concurrent writers.


def _spawn(code: str) -> subprocess.Popen[str]:
    return spawn(code)


def _wait_for_line(proc: subprocess.Popen[str], *expected: str) -> None:
    wait_for_lines(proc, *expected, guard=HANG_GUARD)


def _rest(proc: subprocess.Popen[str]) -> tuple[str, str]:
    _, out, err = finish(proc, guard=HANG_GUARD)
    return out, err


def test_backlog_runs_at_interpreter_exit() -> None:
    proc = _spawn(
        r"""
        from cancellable import CancellableThreadPoolExecutor
        ex = CancellableThreadPoolExecutor(2)
        for i in range(200):
            ex.submit(print, "ran", flush=True)
        """
    )
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0, err
    assert out.count("ran") == 200
    assert not err


def test_submit_at_interpreter_exit_raises() -> None:
    proc = _spawn(
        r"""
        import atexit
        from cancellable import CancellableThreadPoolExecutor
        ex = CancellableThreadPoolExecutor(2)
        @atexit.register
        def late():
            try:
                ex.submit(print)
            except RuntimeError as e:
                print(e)
        """
    )
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert "cannot schedule new futures after interpreter shutdown" in out, err


def test_ctrl_c_in_with_block_cancels_backlog() -> None:
    proc = _spawn(
        r"""
        import os, threading
        from cancellable import CancellableThreadPoolExecutor, current_token
        def cooperative():
            os.write(1, b"started\n")
            current_token().wait()
            os.write(1, b"stopped\n")
        try:
            with CancellableThreadPoolExecutor(2) as ex:
                for _ in range(2):
                    ex.submit(cooperative)
                backlog = [ex.submit(print, "backlog") for _ in range(100)]
                os.write(1, b"ready\n")
                threading.Event().wait()
        except KeyboardInterrupt:
            print("cancelled", sum(f.cancelled() for f in backlog), flush=True)
        """
    )
    _wait_for_line(proc, "started", "started", "ready")
    interrupt_when_blocked(proc)
    out, err = _rest(proc)
    assert out.split("\n").count("stopped") == 2, (out, err)
    assert "cancelled 100" in out
    assert "backlog" not in out


EXIT_HOOK = r"""
import os, threading
from cancellable import CancellableThreadPoolExecutor, current_token, _executor
_executor._exit_wait_hooks.append(lambda phase: os.write(1, phase.encode() + b"\n"))
ex = CancellableThreadPoolExecutor(2)
"""


def test_first_ctrl_c_at_exit_cancels_cooperative_tasks() -> None:
    proc = _spawn(
        EXIT_HOOK
        + textwrap.dedent(
            r"""
            def cooperative():
                os.write(1, b"started\n")
                current_token().wait()
                os.write(1, b"stopped\n")
            for _ in range(2):
                ex.submit(cooperative)
            backlog = [ex.submit(print, "backlog") for _ in range(100)]
            """
        )
    )
    _wait_for_line(proc, "started", "started", "waiting")
    interrupt_when_blocked(proc)
    out, err = _rest(proc)
    assert out.split("\n").count("stopped") == 2, (out, err)
    assert "backlog" not in out


def test_second_ctrl_c_at_exit_stops_waiting() -> None:
    proc = _spawn(
        EXIT_HOOK
        + textwrap.dedent(
            r"""
            ex.submit(threading.Event().wait)  # ignores cancellation
            """
        )
    )
    _wait_for_line(proc, "waiting")
    interrupt_when_blocked(proc)
    _wait_for_line(proc, "cancelled")
    interrupt_when_blocked(proc)
    _rest(proc)
    assert proc.returncode is not None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_pool_inherited_through_fork_is_broken() -> None:
    proc = _spawn(
        r"""
        import os
        from concurrent.futures.thread import BrokenThreadPool
        from cancellable import CancellableThreadPoolExecutor
        with CancellableThreadPoolExecutor(2) as ex:
            ex.submit(print).result()
            pid = os.fork()
            if pid == 0:
                try:
                    ex.submit(print)
                except BrokenThreadPool:
                    with CancellableThreadPoolExecutor(1) as fresh:
                        code = 0 if fresh.submit(pow, 2, 3).result() == 8 else 2
                    os._exit(code)
                os._exit(1)
            _, status = os.waitpid(pid, 0)
            print("child", os.waitstatus_to_exitcode(status))
        """
    )
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert "child 0" in out, (out, err)
