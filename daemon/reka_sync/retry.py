"""The retry timing: exponential backoff with full jitter, and the waits servers ask for (pure).

Which failures are retried, and what they do to a job, is `outcomes`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: delay = U(0, min(cap, base * 2**(attempt-1)))."""

    base: float = 2.0
    cap: float = 900.0

    def delay(self, attempt: int, rand: float) -> float:
        """Given the attempt just failed (1-based) and rand in [0, 1), return seconds to wait."""
        ceiling = min(self.cap, self.base * 2.0 ** min(max(attempt - 1, 0), 32))
        return max(0.0, min(ceiling, ceiling * rand))


def server_wait(retry_after: float | None, reset_after: float | None) -> float | None:
    """Given the server's retry-after and reset (seconds), return the wait they ask for."""
    for wait in (retry_after, reset_after):
        if wait is not None and wait > 0:
            return wait
    return None
