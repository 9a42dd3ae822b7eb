"""Schedule windows (`[[upload.schedule]]`): which one is in force at a given time. Pure.

A window names the days it starts on (`days = "mon-fri"`, cron's day-of-week syntax) and
a span of wall-clock time (`hours = "08:00-19:00"`; an end at or before the start runs
past midnight; "24:00" is the end of the day), in the server's local time zone. APScheduler's
`CronTrigger` does the calendar arithmetic: it finds the starts, through daylight-saving
changes, and each end is the same wall-clock time on the day it falls on, so a window
"01:00-04:00" is two hours long on the night the clocks go forward.

Every answer is a function of the time it is given (`now`, seconds since the epoch) and
the zone: the engine asks at each tick, so a late tick sees the window that is in force
now, never one whose boundary it skipped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a schedule is used: `status` without one need not pay
    from apscheduler.triggers.cron import CronTrigger

ALL_DAYS = "mon-sun"
ALL_HOURS = "00:00-24:00"
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_LOOK_BACK = timedelta(hours=26)  # a window lasts a day at most; a start this far back is over


@dataclass(frozen=True)
class Window:
    """One `[[upload.schedule]]` entry; `index` is its place in the file (later wins)."""

    days: str = ALL_DAYS
    hours: str = ALL_HOURS
    max_rate: int | None = None  # bytes per second; None: upload.max_rate stays
    workers: int | None = None  # uploads at once; 0: none starts; None: upload.workers
    abort_in_flight: bool = False  # with workers = 0: re-queue uploads in flight too
    index: int = 0

    @property
    def name(self) -> str:
        return f"{self.days} {self.hours}"


@dataclass(frozen=True)
class Span:
    """One occurrence of a window: from `start` to `end`, seconds since the epoch."""

    window: Window
    start: float
    end: float


def days_problem(days: str) -> str | None:
    """Given a `days` value, return what is wrong with it, or None if cron can read it."""
    if not days.strip():
        return 'must name days, e.g. "mon-fri", "sat,sun" or "mon-sun"'
    if any(c.isdigit() for c in days):
        return f'{days!r}: name the days ("mon-fri"); numbers mean different days to cron'
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger(day_of_week=days.lower())
    except ValueError as exc:
        return f'{days!r}: {exc}; use day names such as "mon-fri" or "sat,sun"'
    return None


def hours_problem(hours: str) -> str | None:
    """Given an `hours` value, return what is wrong with it, or None if it is "HH:MM-HH:MM"."""
    span = _parse_hours(hours)
    if span is None:
        return f'{hours!r}: use "HH:MM-HH:MM" in 24-hour time, e.g. "08:00-19:00"'
    (start_h, start_m), (end_h, end_m) = span
    if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m):
        return f"{hours!r}: hours run from 00:00 to 24:00 and minutes from 00 to 59"
    if (start_h, start_m) == (end_h, end_m):
        return f'{hours!r}: starts and ends at the same time; use "00:00-24:00" for all day'
    return None


def _parse_hours(hours: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
    found = _HOURS.match(hours)
    if found is None:
        return None
    sh, sm, eh, em = (int(g) for g in found.groups())
    return (sh, sm), (eh, em)


def in_force(windows: tuple[Window, ...], now: float, zone: tzinfo) -> Span | None:
    """Given the windows, the time and the local zone, return the occurrence in force (of
    overlapping ones, the later entry's), or None."""
    found = [span for w in windows if (span := _open_span(w, now, zone)) is not None]
    return max(found, key=lambda s: s.window.index) if found else None


def next_start(windows: tuple[Window, ...], now: float, zone: tzinfo) -> Span | None:
    """Given the windows, the time and the zone, return the next occurrence to start after
    `now` (of those starting together, the later entry's), or None if there are none."""
    found = [span for w in windows if (span := _next_span(w, now, zone)) is not None]
    return min(found, key=lambda s: (s.start, -s.window.index)) if found else None


def _trigger(window: Window, zone: tzinfo) -> CronTrigger:
    from apscheduler.triggers.cron import CronTrigger

    (hour, minute), _ = _parse_hours(window.hours) or ((0, 0), (24, 0))
    return CronTrigger(day_of_week=window.days.lower(), hour=hour, minute=minute, timezone=zone)


def _end(window: Window, start: datetime, zone: tzinfo) -> float:
    """Given an occurrence's start, return its end: the same wall-clock end on its day."""
    (sh, sm), (eh, em) = _parse_hours(window.hours) or ((0, 0), (24, 0))
    day: date = start.date()
    if (eh, em) <= (sh, sm) or eh == 24:
        day += timedelta(days=1)
        eh = 0 if eh == 24 else eh
    return _instant(datetime.combine(day, time(eh, em)), zone)


def _instant(wall: datetime, zone: tzinfo) -> float:
    """Given a wall-clock time in `zone`, return its instant: the first of two in the hour
    the clocks go back; for a time the clocks skip, the moment they jump past it (as cron
    runs what falls in the skipped hour)."""
    naive = wall.replace(tzinfo=None)
    first = naive.replace(tzinfo=zone, fold=0).timestamp()
    if datetime.fromtimestamp(first, zone).replace(tzinfo=None) == naive:
        return first
    low, high = naive.replace(tzinfo=zone, fold=1).timestamp(), first  # the jump is between
    while high - low > 1:
        middle = (low + high) / 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return float(int(high))


def _open_span(window: Window, now: float, zone: tzinfo) -> Span | None:
    trigger = _trigger(window, zone)
    moment = datetime.fromtimestamp(now, zone)
    start = trigger.get_next_fire_time(None, moment - _LOOK_BACK)
    while start is not None and _instant(start, zone) <= now:
        end = _end(window, start, zone)
        if end > now:
            return _joined(Span(window, _instant(start, zone), end), trigger, zone)
        start = trigger.get_next_fire_time(start, start + timedelta(minutes=1))
    return None


def _joined(span: Span, trigger: CronTrigger, zone: tzinfo) -> Span:
    """Given an occurrence, return it run on through the occurrences that start as it ends
    ("sat,sun 00:00-24:00" is one span of two days); one that never ends (every day, all
    day) ends at infinity."""
    end = span.end
    for _ in range(8):
        following = trigger.get_next_fire_time(None, datetime.fromtimestamp(end, zone))
        if following is None or _instant(following, zone) > end:
            return Span(span.window, span.start, end)
        end = _end(span.window, following, zone)
    return Span(span.window, span.start, math.inf)


def _next_span(window: Window, now: float, zone: tzinfo) -> Span | None:
    """The next occurrence that starts after `now` and after the one in force, if any."""
    trigger = _trigger(window, zone)
    current = _open_span(window, now, zone)
    after = max(now, current.end) if current is not None else now
    if math.isinf(after):
        return None
    start = trigger.get_next_fire_time(None, datetime.fromtimestamp(after, zone))
    while start is not None and _instant(start, zone) <= after:  # one starting this second
        start = trigger.get_next_fire_time(start, start + timedelta(minutes=1))
    if start is None:
        return None
    span = Span(window, _instant(start, zone), _end(window, start, zone))
    return _joined(span, trigger, zone)
