"""What the engine knows of its surroundings: whether the API answers, whether it takes the
key, whether the journal can be written; and the pauses those call for.

Every answer of the API passes through `observe`, every request that got none through
`no_answer`: a 5xx or no answer counts toward an outage (everything pauses until a probe
gets through), a 429 pauses that kind of request for its retry-after, a 401/403 pauses
everything. Each pause is mirrored into the journal so `status` and another process see
it. A journal that cannot be written is said once, then every JOURNAL_REMIND seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from reka_sync import pauses
from reka_sync.api import ResponseInfo
from reka_sync.errors import TransportError
from reka_sync.health import Reachability, Said
from reka_sync.journal import Journal
from reka_sync.metrics import Meter
from reka_sync.pauses import ALL, PauseBoard

log = structlog.get_logger("reka_sync.vitals")
JOURNAL_REMIND = 600.0  # seconds between lines while the journal cannot be written
JOURNAL_RECOVERED = 3.0  # seconds of writes without a failure before the trouble is over


class Vitals:
    """The API's reachability, the key's standing and the journal's health; thread-safe."""

    def __init__(
        self,
        journal: Journal,
        board: PauseBoard,
        meter: Meter,
        clock: Callable[[], float],
        grace: float,
    ) -> None:
        self.journal = journal
        self.pauses = board
        self.meter = meter
        self.clock = clock
        self.reach = Reachability(grace=grace)
        self.key_refused: str | None = None  # why, once the API refused the key
        # (since, last said, last failure) while the journal cannot be written
        self.journal_trouble: tuple[float, float, float] | None = None
        self.journal_error = ""
        self._lock = threading.Lock()

    def no_answer(self, error: TransportError) -> None:
        """Given a request that got no answer, count it toward an outage."""
        self._unreachable(self.clock(), str(error))

    def observe(self, info: ResponseInfo) -> None:
        """Given an answer, note what it says of the API and the key; pause what it asks."""
        now = self.clock()
        if info.status >= 500:
            self._unreachable(now, f"HTTP {info.status} from {info.method} {info.path}")
        else:
            self._reachable(now)
        if info.status in (401, 403):
            self.key_refused = f"the API refused the key (HTTP {info.status})"
        elif info.status < 400:
            self.key_refused = None
        self.meter.rate_limits(info.limit, info.remaining, info.reset_after)
        order = pauses.pause_for(info, now)
        if order is not None:
            self._pause(info, order, now)
        elif info.status < 400 and self.pauses.take_over(ALL, now):
            self.journal.clear_pause(ALL)

    def _pause(self, info: ResponseInfo, order: pauses.PauseOrder, now: float) -> None:
        if info.status == 429:
            self.meter.pauses.inc()
            self.meter.pause_seconds.inc(max(0.0, order.until - now))
        pause = self.pauses.pause(order.kind, order.until, order.reason)
        self.journal.set_pause(pause.kind, pause.until, pause.reason)
        if order.kind == ALL:
            log.error("API key refused; pausing all requests", status=info.status)
        else:
            log.warning(
                "rate limited; pausing",
                kind=order.kind,
                seconds=round(order.until - now, 1),
                request_id=info.request_id,
            )

    def _unreachable(self, now: float, reason: str) -> None:
        with self._lock:
            said = self.reach.failed(now, reason)
            if not self.reach.outage:
                return
            since = _iso(self.reach.since or now)
            text = self.reach.describe(since)
            pause = self.pauses.pause(ALL, self.reach.next_probe, text)
        self.journal.set_pause(pause.kind, pause.until, pause.reason)
        if said is Said.STARTED:
            log.warning("API unreachable; everything waits for it", since=since, reason=reason)
        elif said is Said.LASTS:
            log.warning("API still unreachable", since=since, reason=reason)

    def _reachable(self, now: float) -> None:
        with self._lock:
            said = self.reach.answered(now)
            if said is Said.ENDED:
                self.pauses.lift(ALL)
        if said is Said.ENDED:
            self.journal.clear_pause(ALL)
            log.warning("API reachable again; carrying on")

    def journal_failed(self, reason: str) -> None:
        """Given why a journal write failed, say so once (then every ten minutes)."""
        now = self.clock()
        with self._lock:
            first = self.journal_trouble is None
            since, said, _ = self.journal_trouble or (now, 0.0, now)
            speak = first or now - said >= JOURNAL_REMIND
            self.journal_trouble = (since, now if speak else said, now)
            self.journal_error = reason
        if speak:
            log.error(
                "the journal cannot be written; nothing new is recorded until it can",
                error=reason,
                journal=str(self.journal.path),
            )

    def journal_worked(self) -> bool:
        """A write went through: return True if that ends a trouble (none has failed for
        JOURNAL_RECOVERED seconds)."""
        with self._lock:
            trouble = self.journal_trouble
            if trouble is None or self.clock() - trouble[2] < JOURNAL_RECOVERED:
                return False
            self.journal_trouble = None
        log.warning("the journal is writable again; carrying on")
        return True

    def health_line(self) -> str | None:
        """Return what is wrong with the environment, in a few words, or None."""
        if self.key_refused:
            return f"PAUSED: {self.key_refused}"
        if self.reach.outage and self.reach.since is not None:
            return f"PAUSED: API unreachable since {_iso(self.reach.since)}"
        if self.journal_trouble is not None:
            return f"JOURNAL NOT WRITABLE since {_iso(self.journal_trouble[0])}"
        return None


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
