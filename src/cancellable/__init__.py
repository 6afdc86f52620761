"""Cancellation tokens for threads.

A `CancellationTokenSource` cancels its `CancellationToken`; linked child
sources follow their parents; blocking calls and executor tasks take a token.
"""

from ._errors import OperationCancelledError as OperationCancelledError
from ._executor import CancellableThreadPoolExecutor as CancellableThreadPoolExecutor
from ._executor import TokenBoundExecutor as TokenBoundExecutor
from ._future import CancellableFuture as CancellableFuture
from ._token import CancellationToken as CancellationToken
from ._token import CancellationTokenRegistration as CancellationTokenRegistration
from ._token import CancellationTokenSource as CancellationTokenSource
from ._token import current_token as current_token
from ._token import use_token as use_token

__all__ = [
    "CancellableFuture",
    "CancellableThreadPoolExecutor",
    "CancellationToken",
    "CancellationTokenRegistration",
    "CancellationTokenSource",
    "OperationCancelledError",
    "TokenBoundExecutor",
    "current_token",
    "use_token",
]
