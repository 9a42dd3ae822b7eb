"""What uploads may do now: the operator's pause, the schedule's window, the bandwidth cap.

`decide` is pure: given the config's limits, the pause recorded in the journal (if any),
the time and the local zone, it returns the `Limits` the engine applies at each tick
and `status` shows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import TYPE_CHECKING

from reka_sync.windows import Span, Window, in_force, next_start

if TYPE_CHECKING:
    from reka_sync.config import UploadConfig


@dataclass(frozen=True)
class OperatorPause:
    """`reka-sync pause`, as recorded in the journal."""

    by: str  # who: the user, and who ran sudo
    since: float
    until: float | None  # None: until `reka-sync resume`
    abort: bool  # --now: uploads in flight were stopped and re-queued

    def in_force(self, now: float) -> bool:
        """Given the time, return whether the pause still holds uploads back."""
        return self.until is None or now < self.until

    def describe(self) -> str:
        """Return the pause in a few words: who, since when, until when."""
        until = f"until {_local(self.until)}" if self.until is not None else "until resumed"
        return f"paused by {self.by} since {_local(self.since)}, {until}"


@dataclass(frozen=True)
class Limits:
    """What uploads may do now."""

    workers: int  # uploads that may run at once (0: none starts)
    max_rate: int  # bytes per second for all of them (0: no cap)
    abort: bool  # uploads in flight stop now and go back to the queue
    held: str | None  # why no upload starts, in words (None: they may)
    pause: OperatorPause | None  # the operator's pause in force
    window: Span | None  # the schedule's window in force
    next_window: Span | None  # the next one to start


def decide(
    workers: int,
    max_rate: int,
    schedule: tuple[Window, ...],
    pause: OperatorPause | None,
    now: float,
    zone: tzinfo,
) -> Limits:
    """Given upload.workers, upload.max_rate, the schedule, the recorded pause, the time and
    the local zone, return the limits in force. A window's `workers` and `max_rate` replace
    the config's while it is in force."""
    span = in_force(schedule, now, zone)
    upcoming = next_start(schedule, now, zone)
    pause = pause if pause is not None and pause.in_force(now) else None
    window = span.window if span is not None else None
    if window is not None:
        workers = window.workers if window.workers is not None else workers
        max_rate = window.max_rate if window.max_rate is not None else max_rate
    held = None
    abort = False
    if pause is not None:
        held, abort = pause.describe(), pause.abort
    elif span is not None and workers == 0:
        until = f"until {_local(span.end)}" if math.isfinite(span.end) else "at any time"
        held = f"schedule window {span.window.name} allows no uploads {until}"
        abort = span.window.abort_in_flight
    return Limits(
        workers=0 if pause is not None else workers,
        max_rate=max_rate,
        abort=abort,
        held=held,
        pause=pause,
        window=span,
        next_window=upcoming,
    )


def limits_now(upload: UploadConfig, pause: OperatorPause | None, now: float) -> Limits:
    """Given the upload settings, the recorded pause and the time, return the limits in
    force in this machine's local zone (for `status`; the engine's Governor does the same)."""
    zone: tzinfo = UTC  # without a window the zone decides nothing: no tzlocal import
    if upload.schedule:
        from tzlocal import get_localzone

        zone = get_localzone()
    return decide(upload.workers, upload.max_rate, upload.schedule, pause, now, zone)


def _local(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(epoch))
