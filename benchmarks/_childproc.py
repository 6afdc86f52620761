"""Driving a child interpreter with signals, for benchmarks and tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any


def interrupt_when_blocked(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Send SIGINT once the child's main thread sleeps in the kernel.

    A signal that arrives after the main thread last checked for signals but
    before it blocks on a lock interrupts nothing: CPython runs the handler
    only when something else wakes that thread. Readiness lines are written
    just before the main thread blocks, so wait until it really is blocked.
    This polls, as nothing else shows a thread's kernel state (Linux only;
    elsewhere the signal is sent at once).
    """
    wait_until_asleep(f"/proc/{proc.pid}/task/{proc.pid}/stat", timeout, 0.01)
    proc.send_signal(signal.SIGINT)


def wait_until_asleep(stat: str, timeout: float, poll: float) -> None:
    """Poll the kernel state in ``stat`` (a thread's ``/proc/.../stat``) until it
    has read "sleeping" three times in a row, the file is gone, or ``timeout``
    seconds passed. Returns at once where there is no such file."""
    deadline = time.monotonic() + timeout
    asleep = 0
    while os.path.exists(stat) and asleep < 3 and time.monotonic() < deadline:
        with open(stat) as f:
            state = f.read().rpartition(")")[2].split()[0]
        asleep = asleep + 1 if state == "S" else 0
        time.sleep(poll)
