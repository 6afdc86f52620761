"""Cancellation tokens for threads.

A `CancellationTokenSource` cancels its `CancellationToken`; linked child
sources follow their parents; blocking calls and executor tasks take a token.
"""

from ._asyncio import cancel_on as cancel_on
from ._asyncio import to_thread as to_thread
from ._errors import OperationCancelledError as OperationCancelledError
from ._executor import CancellableThreadPoolExecutor as CancellableThreadPoolExecutor
from ._executor import TokenBoundExecutor as TokenBoundExecutor
from ._futures import as_completed as as_completed
from ._futures import result as result
from ._futures import wait as wait
from ._group import CancelScope as CancelScope
from ._group import TaskGroup as TaskGroup
from ._group import fail_after as fail_after
from ._group import move_on_after as move_on_after
from ._primitives import Barrier as Barrier
from ._primitives import BoundedSemaphore as BoundedSemaphore
from ._primitives import Condition as Condition
from ._primitives import Event as Event
from ._primitives import Lock as Lock
from ._primitives import RLock as RLock
from ._primitives import Semaphore as Semaphore
from ._primitives import join as join
from ._primitives import sleep as sleep
from ._process import CancellableProcessFuture as CancellableProcessFuture
from ._process import CancellableProcessPoolExecutor as CancellableProcessPoolExecutor
from ._queues import LifoQueue as LifoQueue
from ._queues import PriorityQueue as PriorityQueue
from ._queues import Queue as Queue
from ._stats import ExecutorStatistics as ExecutorStatistics
from ._stats import Laggard as Laggard
from ._task import CancellableFuture as CancellableFuture
from ._token import CancellationToken as CancellationToken
from ._token import CancellationTokenRegistration as CancellationTokenRegistration
from ._token import CancellationTokenSource as CancellationTokenSource
from ._token import current_token as current_token
from ._token import use_token as use_token

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "CancelScope",
    "CancellableFuture",
    "CancellableProcessFuture",
    "CancellableProcessPoolExecutor",
    "CancellableThreadPoolExecutor",
    "CancellationToken",
    "CancellationTokenRegistration",
    "CancellationTokenSource",
    "Condition",
    "Event",
    "ExecutorStatistics",
    "Laggard",
    "LifoQueue",
    "Lock",
    "OperationCancelledError",
    "PriorityQueue",
    "Queue",
    "RLock",
    "Semaphore",
    "TaskGroup",
    "TokenBoundExecutor",
    "as_completed",
    "cancel_on",
    "current_token",
    "fail_after",
    "join",
    "move_on_after",
    "result",
    "sleep",
    "to_thread",
    "use_token",
    "wait",
]
