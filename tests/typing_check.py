"""Static typing checks for the executor: ``mypy --strict tests/typing_check.py``.

Never run; mypy reads it (``.ci/run`` does). Each ``assert_type`` pins what a
caller sees; the ``type: ignore`` lines must stay errors (mypy's
``warn_unused_ignores`` under ``--strict`` fails if they stop being errors).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import assert_type

from cancellable import (
    CancellableFuture,
    CancellableThreadPoolExecutor,
    CancellationToken,
    CancellationTokenSource,
    TokenBoundExecutor,
)


def add(a: int, b: int, *, scale: float = 1.0) -> float:
    return (a + b) * scale


def negate(x: int) -> int:
    return -x


def check() -> None:
    cts = CancellationTokenSource()
    with CancellableThreadPoolExecutor(max_workers=2, token=cts.token, max_pending=10) as ex:
        assert_type(ex.submit(add, 1, 2), CancellableFuture[float])
        assert_type(ex.submit(add, 1, 2, token=cts.token), CancellableFuture[float])
        bound = ex.with_token(cts.token)
        assert_type(bound, TokenBoundExecutor)
        assert_type(bound.submit(add, 1, 2, scale=2.0), CancellableFuture[float])
        bound.submit(add, "1", 2)  # type: ignore[arg-type]
        bound.submit(add, 1)  # type: ignore[call-arg]
        bound.submit(add, 1, 2, scale="x")  # type: ignore[arg-type]
        assert_type(ex.map(negate, [1, -2]), Iterator[int])
        assert_type(ex.map(negate, [1], buffersize=4, token=cts.token), Iterator[int])
        assert_type(ex.map(add, [1], [2]), Iterator[float])
        assert_type(bound.map(negate, [1]), Iterator[int])
        fut = ex.submit(add, 1, 2)
        assert_type(fut.result(), float)
        assert_type(fut.token, CancellationToken)
        fut.request_cancel("reason")
        stdlib_view: Future[float] = fut
        pool_view: ThreadPoolExecutor = ex
        del stdlib_view, pool_view
        ex.cancel_all()
