"""The asyncio bridge: wait_async, to_thread, run_in_executor on our pool, cancel_on.

Each test runs its coroutine with ``asyncio.run``. Thread tasks are gated with
Events; the asyncio side waits for them with ``asyncio.to_thread(event.wait)``
or a ``loop.call_soon_threadsafe`` wake-up, never with a sleep. What is
checked is often raised at a block's edge, so ``pytest.raises`` wraps whole
blocks (PT012 is off for this file).
"""

# ruff: noqa: PT012
from __future__ import annotations

import asyncio
import contextvars
import functools
import subprocess
import sys
import textwrap
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from benchmarks._childproc import interrupt_when_blocked

from cancellable import (
    CancellableThreadPoolExecutor,
    CancellationToken,
    CancellationTokenSource,
    OperationCancelledError,
    cancel_on,
    current_token,
    to_thread,
    use_token,
)
from cancellable._asyncio import ASYNCIO_CANCELLED

T = TypeVar("T")
WAIT = 10
HANG_GUARD = 30


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def regs_of(token: CancellationToken) -> int:
    # No statistics hook on tokens yet: the private registrations dict.
    regs = token._regs
    return 0 if regs is None else len(regs)


async def wait_event(event: threading.Event) -> None:
    """Wait in asyncio for a threading.Event without blocking the loop."""
    assert await asyncio.to_thread(event.wait, WAIT)


@pytest.fixture
def pool() -> Iterator[CancellableThreadPoolExecutor]:
    ex = CancellableThreadPoolExecutor(max_workers=4, thread_name_prefix="ours")
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def cooperative(started: threading.Event, ended: threading.Event) -> str:
    started.set()
    try:
        current_token().wait()
        current_token().raise_if_cancellation_requested()
        return "not reached"
    finally:
        ended.set()


class RecordingPool(CancellableThreadPoolExecutor):
    """Our pool, remembering the futures asyncio's calls submit to it."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers)
        self.futures: list[Any] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future


# -- wait_async -------------------------------------------------------------------------


class TestWaitAsync:
    def test_returns_true_once_cancelled_from_another_thread(self) -> None:
        source = CancellationTokenSource()

        async def main() -> bool:
            threads = threading.active_count()
            waiters = [asyncio.ensure_future(source.token.wait_async()) for _ in range(100)]
            await asyncio.sleep(0)
            assert threading.active_count() == threads  # no thread per waiter
            assert regs_of(source.token) == 100
            threading.Thread(target=source.cancel).start()
            results = await asyncio.gather(*waiters)
            return all(results)

        assert run(main())
        assert regs_of(source.token) == 0

    def test_already_cancelled_returns_at_once(self) -> None:
        source = CancellationTokenSource()
        source.cancel()
        assert run(source.token.wait_async()) is True

    def test_cancel_from_the_loop_thread_wakes_it(self) -> None:
        source = CancellationTokenSource()

        async def main() -> bool:
            waiter = asyncio.ensure_future(source.token.wait_async())
            await asyncio.sleep(0)
            source.cancel()
            return await waiter

        assert run(main())

    def test_cancelling_the_awaiting_task_removes_the_registration(self) -> None:
        source = CancellationTokenSource()

        async def main() -> None:
            waiter = asyncio.ensure_future(source.token.wait_async())
            await asyncio.sleep(0)
            assert regs_of(source.token) == 1
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert regs_of(source.token) == 0

        run(main())

    def test_works_under_asyncio_timeout(self) -> None:
        source = CancellationTokenSource()

        async def main() -> None:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0):
                    await source.token.wait_async()

        run(main())
        assert regs_of(source.token) == 0

    def test_none_token_waits_until_the_task_is_cancelled(self) -> None:
        async def main() -> None:
            waiter = asyncio.ensure_future(CancellationToken.NONE.wait_async())
            await asyncio.sleep(0)
            assert not waiter.done()
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter

        run(main())

    def test_a_cancel_after_the_loop_closed_is_harmless(self) -> None:
        source = CancellationTokenSource()

        async def main() -> None:
            waiter = asyncio.ensure_future(source.token.wait_async())
            await asyncio.sleep(0)
            assert not waiter.done()

        run(main())  # asyncio.run cancels the waiter at the end
        source.cancel()  # no loop, no error


# -- to_thread ----------------------------------------------------------------------------


class TestToThread:
    def test_returns_the_result_with_the_tasks_token_current(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        parent = CancellationTokenSource()
        var: contextvars.ContextVar[str] = contextvars.ContextVar("var")

        def inside() -> tuple[CancellationToken, str, str]:
            return current_token(), var.get(), threading.current_thread().name

        async def main() -> tuple[CancellationToken, str, str]:
            var.set("from the task")
            return await to_thread(inside, executor=pool, token=parent.token)

        token, value, name = run(main())
        assert value == "from the task"
        assert name.startswith("ours")
        assert not token.is_cancellation_requested
        parent.cancel("parent")
        assert token.reason == "parent"  # a child of the given token

    def test_token_defaults_to_the_current_token(self, pool: CancellableThreadPoolExecutor) -> None:
        parent = CancellationTokenSource()

        async def main() -> CancellationToken:
            with use_token(parent.token):
                return await to_thread(current_token, executor=pool)

        token = run(main())
        parent.cancel()
        assert token.is_cancellation_requested

    def test_passes_arguments_and_raises_what_fn_raises(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        async def main() -> None:
            assert await to_thread(divmod, 7, 2, executor=pool) == (3, 1)
            assert await to_thread(int, "ff", base=16, executor=pool) == 255
            with pytest.raises(ZeroDivisionError):
                await to_thread(divmod, 1, 0, executor=pool)

        run(main())

    def test_cancelling_the_awaiter_cancels_the_thread_and_waits_for_it(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        started, ended = threading.Event(), threading.Event()

        async def main() -> None:
            task = asyncio.ensure_future(to_thread(cooperative, started, ended, executor=pool))
            await wait_event(started)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert ended.is_set()  # the await returned only once the thread task ended

        run(main())

    def test_asyncio_timeout_reaches_the_thread(self, pool: CancellableThreadPoolExecutor) -> None:
        started, ended = threading.Event(), threading.Event()

        async def main() -> None:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    await to_thread(cooperative, started, ended, executor=pool)
            assert ended.is_set()

        run(main())

    def test_a_task_group_abort_reaches_the_thread(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        started, ended = threading.Event(), threading.Event()

        async def fail_once_started() -> None:
            await wait_event(started)
            raise KeyError("sibling")

        async def main() -> None:
            with pytest.raises(ExceptionGroup) as info:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(to_thread(cooperative, started, ended, executor=pool))
                    tg.create_task(fail_once_started())
            assert [type(e) for e in info.value.exceptions] == [KeyError]
            assert ended.is_set()

        run(main())

    def test_a_task_that_had_not_started_never_runs(self) -> None:
        one = CancellableThreadPoolExecutor(1)
        gate, started = threading.Event(), threading.Event()
        ran: list[int] = []

        def hold() -> None:
            started.set()
            gate.wait()

        async def main() -> None:
            one.submit(hold)
            await wait_event(started)
            task = asyncio.ensure_future(to_thread(ran.append, 1, executor=one))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        try:
            run(main())
        finally:
            gate.set()
            one.shutdown(wait=True)
        assert ran == []

    def test_a_token_cancelled_elsewhere_raises_operation_cancelled(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        source = CancellationTokenSource()
        started, ended = threading.Event(), threading.Event()

        async def main() -> None:
            task = asyncio.ensure_future(
                to_thread(cooperative, started, ended, executor=pool, token=source.token)
            )
            await wait_event(started)
            source.cancel("elsewhere")
            with pytest.raises(OperationCancelledError) as info:
                await task
            assert info.value.reason == "elsewhere"

        run(main())

    def test_cancelled_awaiter_raises_cancelled_even_if_fn_returned(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        started, gate = threading.Event(), threading.Event()

        def stubborn() -> int:
            started.set()
            gate.wait()  # ignores its token
            return 42

        async def main() -> None:
            task = asyncio.ensure_future(to_thread(stubborn, executor=pool))
            await wait_event(started)
            task.cancel()
            await asyncio.sleep(0)
            assert not task.done()  # still waiting for the thread task
            task.cancel()  # a second cancel is absorbed
            gate.set()
            with pytest.raises(asyncio.CancelledError):
                await task

        run(main())

    def test_uses_the_loops_default_executor_when_it_is_ours(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        async def main() -> str:
            asyncio.get_running_loop().set_default_executor(pool)
            return await to_thread(lambda: threading.current_thread().name)

        assert run(main()).startswith("ours")

    def test_otherwise_uses_one_shared_pool(self) -> None:
        async def main() -> tuple[str, str]:
            first = await to_thread(lambda: threading.current_thread().name)
            second = await to_thread(lambda: threading.current_thread().name)
            return first, second

        first, second = run(main())
        assert first.startswith("cancellable-to_thread")
        assert second.startswith("cancellable-to_thread")

    def test_a_token_keyword_for_fn_goes_through_partial(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        def takes_token(*, token: str) -> str:
            return token

        async def main() -> str:
            return await to_thread(functools.partial(takes_token, token="mine"), executor=pool)

        assert run(main()) == "mine"


# -- run_in_executor and asyncio.to_thread on our pool --------------------------------------


class TestPlainAsyncioOnOurPool:
    def test_cancelling_run_in_executor_cancels_the_tasks_token(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        started, ended = threading.Event(), threading.Event()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            task = asyncio.ensure_future(loop.run_in_executor(pool, cooperative, started, ended))
            await wait_event(started)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await wait_event(ended)

        run(main())

    def test_the_reason_says_asyncio_cancelled_it(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        started = threading.Event()
        reasons: list[object] = []

        def record() -> None:
            started.set()
            current_token().wait()
            reasons.append(current_token().reason)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(pool, record)
            await wait_event(started)
            future.cancel()
            await asyncio.to_thread(pool.shutdown, True)

        run(main())
        assert reasons == [ASYNCIO_CANCELLED]

    def test_asyncio_to_thread_with_our_default_executor_cancels_the_token(self) -> None:
        # The task's future is caught at submit, to read its token afterwards.
        pool = RecordingPool(max_workers=2)
        started, gate = threading.Event(), threading.Event()

        def hold() -> None:
            started.set()
            gate.wait()

        async def main() -> None:
            asyncio.get_running_loop().set_default_executor(pool)
            task = asyncio.ensure_future(asyncio.to_thread(hold))
            await wait_event(started)
            task.cancel()
            try:
                with pytest.raises(asyncio.CancelledError):
                    await task
            finally:
                gate.set()  # or asyncio.run's executor shutdown waits forever
            # The other one is wait_event's own to_thread, which returned True.
            [future] = [f for f in pool.futures if f.result(timeout=WAIT) is None]
            assert future.token.is_cancellation_requested
            assert future.token.reason == ASYNCIO_CANCELLED

        try:
            run(main())
        finally:
            gate.set()
            pool.shutdown(wait=True)

    def test_current_token_inside_asyncio_to_thread_is_the_tasks(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        async def main() -> bool:
            asyncio.get_running_loop().set_default_executor(pool)
            return await asyncio.to_thread(lambda: current_token().can_be_cancelled)

        assert run(main())

    def test_a_cooperative_asyncio_to_thread_call_stops_when_its_awaiter_is_cancelled(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        started = threading.Event()
        seen: list[bool] = []

        def cooperate() -> None:
            started.set()
            seen.append(current_token().wait(WAIT))

        async def main() -> None:
            asyncio.get_running_loop().set_default_executor(pool)
            task = asyncio.ensure_future(asyncio.to_thread(cooperate))
            await wait_event(started)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run(main())
        pool.shutdown(wait=True)
        assert seen == [True]

    def test_a_context_run_partial_leaves_the_callers_context_as_it_was(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        ctx = contextvars.copy_context()
        inside = pool.submit(
            functools.partial(ctx.run, lambda x: (x, current_token().can_be_cancelled), 7)
        )
        assert inside.result(timeout=WAIT) == (7, True)
        assert not ctx.run(current_token).can_be_cancelled

    def test_a_pending_task_cancelled_from_asyncio_never_runs(self) -> None:
        one = CancellableThreadPoolExecutor(1)
        gate, started = threading.Event(), threading.Event()
        ran: list[int] = []

        def hold() -> None:
            started.set()
            gate.wait()

        async def main() -> None:
            one.submit(hold)
            await wait_event(started)
            future = asyncio.get_running_loop().run_in_executor(one, ran.append, 1)
            future.cancel()
            with pytest.raises(asyncio.CancelledError):
                await future

        try:
            run(main())
        finally:
            gate.set()
            one.shutdown(wait=True)
        assert ran == []

    def test_futures_not_awaited_from_asyncio_keep_the_stdlib_cancel(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        started, gate = threading.Event(), threading.Event()

        def hold() -> None:
            started.set()
            gate.wait()

        future = pool.submit(hold)
        future.add_done_callback(lambda f: None)
        assert started.wait(WAIT)
        assert not future.cancel()
        assert not future.token.is_cancellation_requested
        gate.set()
        future.result(timeout=WAIT)


# -- cancel_on ----------------------------------------------------------------------------


class TestCancelOn:
    def test_a_token_cancel_from_another_thread_raises_at_the_edge(self) -> None:
        source = CancellationTokenSource()

        async def main() -> None:
            task = asyncio.current_task()
            assert task is not None
            before = task.cancelling()
            threads = threading.active_count()
            with pytest.raises(OperationCancelledError) as info:
                async with cancel_on(source.token):
                    assert threading.active_count() == threads  # no helper thread
                    threading.Thread(target=source.cancel, args=("stop",)).start()
                    await asyncio.sleep(WAIT)
            assert info.value.reason == "stop"
            assert isinstance(info.value.__context__, asyncio.CancelledError)
            assert task.cancelling() == before
            await asyncio.sleep(0)  # the task is usable again

        run(main())
        assert regs_of(source.token) == 0

    def test_an_already_cancelled_token_cancels_at_the_first_await(self) -> None:
        source = CancellationTokenSource()
        source.cancel("early")

        async def main() -> None:
            with pytest.raises(OperationCancelledError):
                async with cancel_on(source.token):
                    await asyncio.sleep(WAIT)

        run(main())

    def test_a_block_that_ends_first_is_untouched(self) -> None:
        source = CancellationTokenSource()

        async def main() -> None:
            async with cancel_on(source.token):
                await asyncio.sleep(0)
            assert regs_of(source.token) == 0
            source.cancel()
            await asyncio.sleep(0)  # no late cancel reaches the task

        run(main())

    @pytest.mark.parametrize("token_cancelled_too", [False, True])
    def test_a_cancel_from_elsewhere_stays_cancelled_error(self, token_cancelled_too: bool) -> None:
        # task.cancel() from elsewhere is asyncio's own cancel, also when the
        # block's token is cancelled at the same moment.
        source = CancellationTokenSource()

        async def body(entered: asyncio.Event) -> None:
            async with cancel_on(source.token):
                entered.set()
                await asyncio.sleep(WAIT)

        async def main() -> None:
            entered = asyncio.Event()
            task = asyncio.ensure_future(body(entered))
            await entered.wait()
            if token_cancelled_too:
                source.cancel()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run(main())

    def test_nested_in_asyncio_timeout(self) -> None:
        source = CancellationTokenSource()

        async def main() -> None:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01), cancel_on(source.token):
                    await asyncio.sleep(WAIT)

        run(main())

    def test_cancels_a_to_thread_inside_the_block(
        self, pool: CancellableThreadPoolExecutor
    ) -> None:
        source = CancellationTokenSource()
        started, ended = threading.Event(), threading.Event()

        async def main() -> None:
            with pytest.raises(OperationCancelledError):
                async with cancel_on(source.token):
                    waiter = asyncio.ensure_future(wait_event(started))
                    thread = to_thread(cooperative, started, ended, executor=pool)
                    await asyncio.gather(thread, waiter, source.token.wait_async())

        def cancel_when_started() -> None:
            started.wait(WAIT)
            source.cancel()

        threading.Thread(target=cancel_when_started).start()
        run(main())
        assert ended.is_set()

    def test_entering_outside_a_task_or_twice_raises(self) -> None:
        scope = cancel_on(CancellationTokenSource().token)

        async def main() -> None:
            async with scope:
                with pytest.raises(RuntimeError, match="only once"):
                    await scope.__aenter__()

        run(main())


# -- Ctrl-C under asyncio.run ------------------------------------------------------------


CTRL_C_CHILD = r"""
import asyncio, os, threading
from cancellable import CancellableThreadPoolExecutor, current_token, to_thread

def cooperative(name):
    os.write(1, f"started {name}\n".encode())
    current_token().wait()
    os.write(1, f"stopped {name}\n".encode())

async def main():
    loop = asyncio.get_running_loop()
    loop.set_default_executor(CancellableThreadPoolExecutor(4))
    ready = asyncio.Event()
    async def announce():
        while threading.active_count() < 3:
            await asyncio.sleep(0.01)
        os.write(1, b"ready\n")
    await asyncio.gather(
        to_thread(cooperative, "to_thread"),
        loop.run_in_executor(None, cooperative, "run_in_executor"),
        announce(),
    )

try:
    asyncio.run(main())
except KeyboardInterrupt:
    os.write(1, b"interrupted\n")
"""


@pytest.mark.timeout(60)
def test_asyncio_run_with_cooperative_thread_tasks_ends_at_the_first_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CTRL_C_CHILD)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line.strip())
        if line.strip() == "ready":
            break
    assert "ready" in seen, (seen, proc.stderr.read())
    interrupt_when_blocked(proc)  # once, and only once
    try:
        proc.wait(timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    with proc.stdout, proc.stderr:
        out, err = proc.stdout.read(), proc.stderr.read()
    lines = out.split("\n")
    for name in ("to_thread", "run_in_executor"):
        assert f"stopped {name}" in lines, (out, err)
    assert "interrupted" in lines, (out, err)
