"""The retry policy: what to do after a failed step (pure: values in, decision out)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reka_sync.errors import (
    AuthError,
    Cancelled,
    Conflict,
    FileChanged,
    FileVanished,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    TransportError,
    ValidationFailed,
)


class Action(StrEnum):
    RETRY = "retry"  # wait `delay`, then try again
    FAIL = "fail"  # permanent for this file
    PAUSE_KIND = "pause_kind"  # 429: every worker waits `delay` before the same kind of request
    PAUSE_ALL = "pause_all"  # 401/403: stop everything until the operator fixes the key
    SETTLE = "settle"  # the file changed: back to settling, no attempt spent
    VANISHED = "vanished"  # the file is gone
    RELEASE = "release"  # we stopped on purpose (shutdown): requeue now, no attempt spent


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: delay = U(0, min(cap, base * 2**(attempt-1)))."""

    base: float = 2.0
    cap: float = 900.0

    def delay(self, attempt: int, rand: float) -> float:
        """Given the attempt just failed (1-based) and rand in [0, 1), return seconds to wait."""
        ceiling = min(self.cap, self.base * 2.0 ** min(max(attempt - 1, 0), 32))
        return max(0.0, min(ceiling, ceiling * rand))


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float
    reason: str
    outcome_unknown: bool = False


def decide(
    error: Exception, attempts: int, max_attempts: int, backoff: Backoff, rand: float
) -> Decision:
    """Given a failed step's error, the attempts spent and a random draw, return what to do.

    `retry-after` and the rate-limit reset win over the backoff; attempts never exceed
    `max_attempts`.
    """
    reason = str(error) or type(error).__name__
    if isinstance(error, FileChanged):
        return Decision(Action.SETTLE, 0.0, reason)
    if isinstance(error, FileVanished):
        return Decision(Action.VANISHED, 0.0, reason)
    if isinstance(error, Cancelled) and not error.body_complete:
        return Decision(Action.RELEASE, 0.0, reason)
    if isinstance(error, AuthError):
        return Decision(Action.PAUSE_ALL, 0.0, f"API key refused: {reason}")
    if isinstance(error, RateLimited):
        wait = server_wait(error.retry_after, error.reset_after)
        return Decision(
            Action.PAUSE_KIND, wait if wait is not None else backoff.delay(attempts, rand), reason
        )
    if isinstance(error, (ValidationFailed, Conflict, NotFound)):
        return Decision(Action.FAIL, 0.0, reason)
    if isinstance(error, (ServerError, TransportError)):
        unknown = isinstance(error, (OutcomeUnknown, Cancelled))
        if attempts >= max_attempts:
            return Decision(
                Action.FAIL,
                0.0,
                f"gave up after {attempts} attempts: {reason}",
                outcome_unknown=unknown,
            )
        retry_after = error.retry_after if isinstance(error, ServerError) else None
        wait = server_wait(retry_after, None)
        delay = max(wait or 0.0, backoff.delay(attempts, rand))
        return Decision(Action.RETRY, delay, reason, outcome_unknown=unknown)
    return Decision(Action.FAIL, 0.0, f"unexpected error: {reason}")


def server_wait(retry_after: float | None, reset_after: float | None) -> float | None:
    """Given the server's retry-after and reset (seconds), return the wait they ask for."""
    for wait in (retry_after, reset_after):
        if wait is not None and wait > 0:
            return wait
    return None
