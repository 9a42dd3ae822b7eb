"""The environment's health: is the API there, and does it take our key? (pure: no I/O, no clock)

One owner for the states that are nobody's file's fault:

* **API unreachable.** Every request failed (no connection, a timeout, a 5xx) for
  `grace` seconds with no answer in between: an outage. It pauses everything until
  `next_probe`; the requests that go out then are the probes, and when they fail too
  the next round waits twice as long, up to `cap` (failures within one round count
  once). The first answer ends the outage. Tries that fail during one give their
  attempt back (`outcomes`).
* **Key refused.** A 401/403: everything pauses until the key is fixed (the engine
  probes once a minute; one-shot commands exit 78).

Each state says when it starts (one line), while it lasts (one line every
`remind` seconds) and when it ends (one line): `Said` tells the caller what to log.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

OUTAGE_GRACE = 120.0  # seconds of nothing but failures before the API counts as down
PROBE_FIRST = 5.0
PROBE_CAP = 60.0
REMIND = 600.0  # seconds between "still unreachable" lines


class Said(StrEnum):
    NOTHING = "nothing"
    STARTED = "started"
    LASTS = "lasts"  # a reminder is due
    ENDED = "ended"


@dataclass
class Reachability:
    """Whether the API answers: failures and answers in, outage decisions out."""

    grace: float = OUTAGE_GRACE
    cap: float = PROBE_CAP
    since: float | None = None  # first failure of the current run of failures
    declared: float | None = None  # when that run became an outage
    reason: str = ""
    probes: int = 0  # probe rounds that failed
    next_probe: float = 0.0  # when the current round's pause ends
    reminded: float = 0.0

    def failed(self, now: float, reason: str) -> Said:
        """Given a request that got no answer (or a 5xx) at `now`, return what to say."""
        self.reason = reason
        if self.since is None:
            self.since = now
        if self.declared is None:
            if now - self.since < self.grace:
                return Said.NOTHING
            self.declared = self.reminded = now
            self._next_round(now)
            return Said.STARTED
        if now >= self.next_probe:  # this round's probes failed too: wait longer
            self.probes += 1
            self._next_round(now)
        if now - self.reminded >= REMIND:
            self.reminded = now
            return Said.LASTS
        return Said.NOTHING

    def answered(self, now: float) -> Said:
        """Given an answer from the API at `now` (any status below 500), return what to say."""
        was = self.declared
        self.since = self.declared = None
        self.probes = 0
        return Said.ENDED if was is not None else Said.NOTHING

    @property
    def outage(self) -> bool:
        return self.declared is not None

    def _next_round(self, now: float) -> None:
        self.next_probe = now + min(self.cap, PROBE_FIRST * 2.0 ** min(self.probes, 16))

    def describe(self, at: str) -> str:
        """Given `since` as text, return the outage for status and logs."""
        return f"API unreachable since {at} ({self.reason}); trying again shortly"
