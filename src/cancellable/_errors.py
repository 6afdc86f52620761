"""The exception raised when an operation stops because its token was cancelled."""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._token import CancellationToken

__all__ = ["OperationCancelledError"]


class OperationCancelledError(CancelledError):
    """An operation stopped because its cancellation token was cancelled.

    It subclasses `concurrent.futures.CancelledError`, so existing
    ``except CancelledError`` code keeps working. It is an `Exception`: a broad
    ``except Exception:`` swallows it, so re-raise it first::

        try:
            work(token)
        except OperationCancelledError:
            raise
        except Exception:
            log_and_continue()

    Attributes:
        token: The token whose cancellation stopped the operation.
        reason: The token's reason: what was passed to ``cancel()``, a
            `TimeoutError` for a deadline, or ``None``. When it is an
            exception it is also the ``__cause__``.
    """

    __module__ = "cancellable"

    token: CancellationToken | None
    reason: object

    def __init__(
        self,
        message: str = "the operation was cancelled",
        *,
        token: CancellationToken | None = None,
        reason: object = None,
    ) -> None:
        super().__init__(message)
        self.token = token
        self.reason = reason
        if isinstance(reason, BaseException):
            self.__cause__ = reason

    def __reduce__(self) -> tuple[object, ...]:
        # Tokens do not pickle, so a pickled error keeps its message and reason only.
        return (_rebuild, (str(self), self.reason))


def _rebuild(message: str, reason: object) -> OperationCancelledError:
    return OperationCancelledError(message, reason=reason)
