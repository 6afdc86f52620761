"""Task functions for the process-pool and Dask tests: importable by every start method."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import cancellable
from cancellable import CancellationToken, OperationCancelledError, current_token


def add(a: int, b: int) -> int:
    return a + b


def identity(value: Any) -> Any:
    return value


def pid() -> int:
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def crash() -> None:
    os._exit(3)


def raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def token_state() -> tuple[bool, bool, str]:
    tok = current_token()
    return tok.can_be_cancelled, tok.is_cancellation_requested, type(tok).__name__


def _touch(started: Any) -> None:
    """Report the start: ``started`` is a manager Event proxy (or None)."""
    if started is not None:
        started.set()


def wait_for_cancel(started: Any = None, timeout: float = 30.0) -> object:
    """Block on the task's token (no polling); return its reason once cancelled."""
    _touch(started)
    tok = current_token()
    if not tok.wait(timeout):
        return "not cancelled"
    return tok.reason


def cooperative(started: Any = None, timeout: float = 30.0) -> str:
    """Sleep through `cancellable.sleep`, which raises once the task's token is cancelled."""
    _touch(started)
    cancellable.sleep(timeout)
    return "slept"


def cancel_own_raise(started: Any = None) -> None:
    """Raise an OperationCancelledError of an unrelated token."""
    _touch(started)
    raise OperationCancelledError("unrelated", token=CancellationToken.NONE)


def ignore_cancel(started: Any = None, timeout: float = 30.0) -> str:
    """Ignore the token: block in time.sleep after reporting start, SIGTERM ignored too."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _touch(started)
    time.sleep(timeout)
    return "ignored"


def gated(started: Any, gate: Any, timeout: float = 30.0) -> str:
    """Report the start, then block (ignoring the token) until ``gate`` is set."""
    _touch(started)
    return "gated" if gate.wait(timeout) else "timeout"


def record(log: Any, value: object) -> object:
    """Append ``value`` to a manager list proxy: proof that the task ran."""
    log.append(value)
    return value


def notice_latency(started: Any = None) -> float:
    """Return time.monotonic() when the token was noticed (CLOCK_MONOTONIC is system-wide)."""
    _touch(started)
    current_token().wait(30)
    return time.monotonic()


def reason_type(started: Any = None) -> str:
    _touch(started)
    tok = current_token()
    tok.wait(30)
    return type(tok.reason).__name__ + ":" + str(tok.reason)


def init_fail() -> None:
    raise RuntimeError("initializer failed")


_initialized: list[str] = []


def init_mark(value: str) -> None:
    _initialized.append(value)


def initialized() -> list[str]:
    return list(_initialized)


def size_of(data: bytes) -> int:
    return len(data)


def make_bytes(n: int) -> bytes:
    return b"x" * n
