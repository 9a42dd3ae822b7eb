"""The engine's operator controls: reads the pause from the journal, asks `controls.decide`
for the limits in force, and sets the shared bandwidth cap from them.

The pause is read at most every PAUSE_READ seconds (a dispatch runs at every finished
upload); `reka-sync pause` is therefore seen within a second or two, by the service
and by a backfill alike. A decision is kept until the next boundary (a window's end,
the next one's start, the pause's end) or a new config or pause: working out the
windows takes milliseconds, and small files finish hundreds of times a second.
"""

from __future__ import annotations

import threading
from datetime import tzinfo

import structlog

from reka_sync.config import UploadConfig
from reka_sync.controls import Limits, OperatorPause, decide
from reka_sync.journal import Journal
from reka_sync.progress import human_size
from reka_sync.throttle import Throttle

log = structlog.get_logger("reka_sync.governor")
PAUSE_READ = 0.5  # seconds between reads of the operator's pause, at least


class Governor:
    """Decides, at each dispatch, how many uploads may run and how fast; thread-safe."""

    def __init__(self, journal: Journal, zone: tzinfo) -> None:
        self.journal = journal
        self.zone = zone
        self.throttle = Throttle()
        self._lock = threading.Lock()
        self._pause: OperatorPause | None = None
        self._read_at = float("-inf")
        self._kept: tuple[UploadConfig, OperatorPause | None, float, float] | None = None
        self.limits: Limits | None = None

    def decide(self, upload: UploadConfig, now: float) -> Limits:
        """Given the upload settings and the time, return the limits in force, set the
        bandwidth cap to theirs, and log what changed."""
        with self._lock:
            if abs(now - self._read_at) >= PAUSE_READ:
                self._pause = self.journal.operator_pause()
                self._read_at = now
            kept = self._kept
            if (
                self.limits is not None
                and kept is not None
                and kept[0] is upload
                and kept[1] == self._pause
                and kept[2] <= now < kept[3]
            ):
                self.throttle.set_rate(self.limits.max_rate)  # under the lock: never stale
                return self.limits
            limits = decide(
                upload.workers,
                upload.max_rate,
                upload.schedule,
                self._pause,
                now,
                self.zone,
            )
            self._kept = (upload, self._pause, now, _next_boundary(limits))
            before, self.limits = self.limits, limits
            self.throttle.set_rate(limits.max_rate)
        _say_changes(before, limits)
        return limits

    def forget(self) -> None:
        """Read the pause again and decide afresh at the next decision (a reload, a test)."""
        with self._lock:
            self._read_at = float("-inf")
            self._kept = None


def _next_boundary(limits: Limits) -> float:
    """Given limits, return when they may change next by the clock alone."""
    pause = limits.pause
    return min(
        limits.window.end if limits.window else float("inf"),
        limits.next_window.start if limits.next_window else float("inf"),
        pause.until if pause is not None and pause.until is not None else float("inf"),
    )


def _say_changes(before: Limits | None, now: Limits) -> None:
    if before is None:
        if now.held:
            log.warning("uploads wait", reason=now.held)
        return
    if before.held != now.held:
        if now.held:
            log.warning("uploads wait", reason=now.held, abort_in_flight=now.abort)
        else:
            log.info("uploads go on", was=before.held)
    window = now.window.window.name if now.window else None
    if (before.window.window.name if before.window else None) != window or (
        before.max_rate != now.max_rate
    ):
        log.info(
            "upload limits changed",
            window=window,
            workers=now.workers,
            max_rate=f"{human_size(now.max_rate)}/s" if now.max_rate else "no cap",
        )
