"""Request pauses: after a 429 every worker waits for the reset; after a 401 everything waits.

`pause_for` decides (pure) which pause an answer calls for; the engine applies it.

The board is in memory, shared by the threads of one process, and checked before
every request, so no request leaves before a `retry-after` has expired. The
engine mirrors it into the journal so `status` (and another process) can see it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from reka_sync.errors import Paused
from reka_sync.retry import Backoff, server_wait

AUTH_PAUSE = 60.0  # seconds between probes while the API refuses the key
UPLOADS = "uploads"  # POST /v2/videos
REQUESTS = "requests"  # every other call
ALL = "all"  # the key was refused


def kind_of(method: str, path: str) -> str:
    """Given a request's method and path, return the kind of pause that applies to it."""
    return UPLOADS if (method, path) == ("POST", "/v2/videos") else REQUESTS


# -- pauses --------------------------------------------------------------------------------


class Answer(Protocol):
    """What a response tells besides its body (an API `ResponseInfo` has it)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def retry_after(self) -> float | None: ...
    @property
    def reset_after(self) -> float | None: ...


@dataclass(frozen=True)
class PauseOrder:
    """Hold every request of `kind` back until `until`."""

    kind: str
    until: float
    reason: str


def pause_for(answer: Answer, now: float) -> PauseOrder | None:
    """Given a response, return the pause it calls for: a 429 pauses that kind of request
    until `retry-after` (else the rate-limit reset, else a backoff); a 401/403 pauses
    everything for a while; anything else none."""
    if answer.status == 429:
        wait = server_wait(answer.retry_after, answer.reset_after)
        wait = wait if wait is not None else Backoff().delay(1, 1.0)
        return PauseOrder(
            kind_of(answer.method, answer.path),
            now + wait,
            f"429 from the API (request {answer.request_id}), retry-after {wait:g}s",
        )
    if answer.status in (401, 403):
        return PauseOrder(
            ALL,
            now + AUTH_PAUSE,
            f"the API refused the key (HTTP {answer.status}); fix api_key_file or "
            "$REKA_API_KEY, then reload the service (or run the command again)",
        )
    return None


@dataclass(frozen=True)
class PauseState:
    kind: str
    until: float
    reason: str


class PauseBoard:
    """Pauses per kind of request; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pauses: dict[str, PauseState] = {}

    def pause(self, kind: str, until: float, reason: str) -> PauseState:
        """Given a kind, pause it until `until` (extending, never shortening); return the pause."""
        with self._lock:
            current = self._pauses.get(kind)
            if current is None or until > current.until:
                self._pauses[kind] = PauseState(kind, until, reason)
            return self._pauses[kind]

    def lift(self, kind: str) -> None:
        """Given a kind, end its pause now."""
        with self._lock:
            self._pauses.pop(kind, None)

    def take_over(self, kind: str, now: float) -> bool:
        """Given a kind, forget its pause if it has expired; return True if one was forgotten."""
        with self._lock:
            pause = self._pauses.get(kind)
            if pause is None or pause.until > now:
                return False
            del self._pauses[kind]
            return True

    def blocking(self, kind: str, now: float) -> PauseState | None:
        """Given a kind and the time, return the pause that holds it back, if any."""
        with self._lock:
            found = [p for k, p in self._pauses.items() if k in (kind, ALL) and p.until > now]
        return max(found, key=lambda p: p.until) if found else None

    def check(self, kind: str, now: float) -> None:
        """Given a kind and the time, raise Paused if requests of that kind must wait."""
        pause = self.blocking(kind, now)
        if pause is not None:
            raise Paused(
                f"{pause.kind} paused for {pause.until - now:.0f}s more: {pause.reason}",
                seconds=pause.until - now,
            )

    def active(self, now: float) -> list[PauseState]:
        """Return the pauses still in force."""
        with self._lock:
            return [p for p in self._pauses.values() if p.until > now]
