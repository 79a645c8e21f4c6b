"""Retry policy: exponential backoff with full jitter, on UNAVAILABLE only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

from lb_service.client._errors import ClientError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try a unary RPC again, and how long to wait first.

    Only UNAVAILABLE is retried, and only when the call did not reach lb-service's
    logic (no connection, a TLS failure, a server shutting down): the error then has no
    lb.v1 reason. An UNAVAILABLE that lb-service decided on (``NO_AGENTS_REGISTERED``)
    is an answer like every other code: it would not change within a backoff window,
    and each retry would be counted as one more failed selection. Asking again after
    DEADLINE_EXCEEDED could repeat work the server already did, so it is not retried.

    The wait before retry ``n`` (0-based) is uniform in ``[0, min(max_backoff_s,
    initial_backoff_s * multiplier**n))`` — "full jitter", so clients that failed
    together do not retry together. Retries never outlive the call's deadline.
    ``RetryPolicy(attempts=1)`` turns retries off.
    """

    #: Attempts in all, the first one included.
    attempts: int = 4
    #: Upper bound of the first wait, in seconds.
    initial_backoff_s: float = 0.05
    #: Growth of the upper bound per retry.
    multiplier: float = 2.0
    #: Cap on the upper bound, in seconds.
    max_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        """Reject a policy that could never make a call or would wait a negative time."""
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoff times must be >= 0")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")

    def delay(
        self,
        failed_attempts: int,
        error: ClientError,
        remaining_s: float,
        random: Callable[[], float],
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up and raise ``error``.

        ``failed_attempts`` counts the attempts made so far; ``remaining_s`` is the time
        left before the call's deadline; ``random`` returns a float in [0, 1).
        """
        if not retryable(error) or failed_attempts >= self.attempts:
            return None
        ceiling = self.initial_backoff_s * self.multiplier ** (failed_attempts - 1)
        wait = random() * min(self.max_backoff_s, ceiling)
        # Waiting past the deadline would only turn UNAVAILABLE into DEADLINE_EXCEEDED
        # and hide the real cause; give up with the error we have instead.
        return wait if wait < remaining_s else None


def retryable(error: ClientError) -> bool:
    """Whether ``error`` says the call never reached lb-service, so trying again may work."""
    return error.code == grpc.StatusCode.UNAVAILABLE and not error.reason
