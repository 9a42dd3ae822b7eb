"""Schedule windows and the operator's pause, decided with an injected clock.

The calendar tests pin the zone (Europe/Berlin) and the days daylight saving changes,
so a window's real length differs from its wall-clock length: a window computed as
"start + duration" instead of "the end's wall-clock time on its day" fails them.
The engine test drives real ticks against the emulator over loopback.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from reka_sync.config import load_config
from reka_sync.controls import OperatorPause, decide
from reka_sync.credentials import Secret
from reka_sync.journal import Journal
from reka_sync.lifecycle import State
from reka_sync.scheduler import Engine
from reka_sync.windows import Window, days_problem, hours_problem, in_force, next_start
from tests.conftest import (
    API_KEY,
    emulator_records,
    engine_config,
    make_tree,
    reka_done,
    with_settings,
)

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, zone: ZoneInfo = BERLIN) -> float:
    """Seconds since the epoch of a wall-clock time in `zone` ("2026-03-29 01:30")."""
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def utc(text: str) -> float:
    return datetime.fromisoformat(f"{text}+00:00").timestamp()


NIGHT = Window(days="sun", hours="01:00-04:00", workers=0)


def test_a_window_across_the_spring_change_is_two_hours_long() -> None:
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; 01:00 CET is 00:00 UTC, 04:00 CEST 02:00 UTC.
    assert in_force((NIGHT,), utc("2026-03-28T23:59:59"), BERLIN) is None
    span = in_force((NIGHT,), utc("2026-03-29T00:00:00"), BERLIN)
    assert span is not None and span.start == utc("2026-03-29T00:00:00")
    assert span.end == utc("2026-03-29T02:00:00")
    assert in_force((NIGHT,), utc("2026-03-29T01:59:59"), BERLIN) is not None
    assert in_force((NIGHT,), utc("2026-03-29T02:00:00"), BERLIN) is None


def test_a_window_across_the_autumn_change_is_four_hours_long() -> None:
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 01:00 CEST is 23:00 UTC the day before.
    span = in_force((NIGHT,), utc("2026-10-25T02:30:00"), BERLIN)
    assert span is not None
    assert (span.start, span.end) == (utc("2026-10-24T23:00:00"), utc("2026-10-25T03:00:00"))
    assert in_force((NIGHT,), utc("2026-10-25T03:00:00"), BERLIN) is None


def test_an_overnight_window_runs_into_the_next_day_and_later_entries_win() -> None:
    evenings = Window(days="fri", hours="22:00-06:00", workers=0, index=0)
    capped = Window(days="sat", hours="05:00-07:00", max_rate=1000, index=1)
    schedule = (evenings, capped)
    span = in_force(schedule, at("2026-12-05 03:00"), BERLIN)  # Saturday 03:00
    assert span is not None and span.window is evenings
    assert span.end == at("2026-12-05 06:00")
    overlap = in_force(schedule, at("2026-12-05 05:30"), BERLIN)
    assert overlap is not None and overlap.window is capped, "the later entry must win"
    assert in_force(schedule, at("2026-12-04 21:59"), BERLIN) is None  # Friday, before
    upcoming = next_start(schedule, at("2026-12-04 12:00"), BERLIN)
    assert upcoming is not None and upcoming.window is evenings
    assert upcoming.start == at("2026-12-04 22:00")


def test_back_to_back_days_are_one_span_and_the_next_start_follows_it() -> None:
    weekend = Window(days="sat,sun", hours="00:00-24:00", workers=0)
    span = in_force((weekend,), at("2026-12-05 10:00"), BERLIN)
    assert span is not None and span.end == at("2026-12-07 00:00")
    upcoming = next_start((weekend,), at("2026-12-05 10:00"), BERLIN)
    assert upcoming is not None and upcoming.start == at("2026-12-12 00:00")


def test_a_start_in_the_skipped_hour_begins_when_the_clocks_jump() -> None:
    # 2026-03-29: clocks jump from 02:00 CET (01:00 UTC) to 03:00 CEST; 02:30 never exists.
    skipped = Window(days="sun", hours="02:30-03:30", workers=0)
    span = in_force((skipped,), utc("2026-03-29T01:00:00"), BERLIN)
    assert span is not None, "a window starting in the skipped hour must still happen"
    assert (span.start, span.end) == (utc("2026-03-29T01:00:00"), utc("2026-03-29T01:30:00"))
    assert in_force((skipped,), utc("2026-03-29T00:59:59"), BERLIN) is None


def test_a_window_that_never_ends_has_no_end_and_no_next_start() -> None:
    always = Window(days="mon-sun", hours="00:00-24:00", workers=0)
    span = in_force((always,), at("2026-12-02 12:00"), BERLIN)
    assert span is not None and span.end == float("inf")
    assert next_start((always,), at("2026-12-02 12:00"), BERLIN) is None
    limits = decide(4, 0, (always,), None, at("2026-12-02 12:00"), BERLIN)
    assert limits.workers == 0 and "at any time" in str(limits.held)


def test_malformed_days_and_hours_are_named() -> None:
    assert days_problem("mon-fri") is None and days_problem("sat,sun") is None
    assert days_problem("") and days_problem("mon-fir") and days_problem("weekdays")
    assert days_problem("1-5"), "cron and APScheduler number the days differently"
    assert hours_problem("08:00-19:00") is None and hours_problem("22:00-06:00") is None
    assert hours_problem("00:00-24:00") is None
    for bad in ("8-19", "08:00", "25:00-26:00", "08:60-09:00", "24:30-01:00", "09:00-09:00"):
        assert hours_problem(bad), bad


def test_check_config_lists_each_bad_window_with_its_key_path(tmp_path: Path, media: Path) -> None:

    config = engine_config(tmp_path, media, "http://127.0.0.1:9")
    with_settings(
        config,
        "upload",
        max_rate="fast",
        schedule=[
            {"days": "mon-fir", "hours": "08:00-19:00", "workers": 0},
            {"days": "sat", "hours": "7pm-9pm", "max_rate": "1MiB"},
            {"days": "sun", "abort_in_flight": True, "max_rate": "1MiB"},
        ],
    )
    done = reka_done(config, "check-config")
    assert done.returncode == 78, done.stdout + done.stderr
    for where in (
        "upload.max_rate:",
        "upload.schedule[0].days: 'mon-fir'",
        "upload.schedule[1].hours: '7pm-9pm'",
        "upload.schedule[2].abort_in_flight:",
    ):
        assert where in done.stderr, f"{where} missing from:\n{done.stderr}"


def test_a_pause_holds_everything_and_a_window_sets_workers_and_rate() -> None:
    schedule = (Window(days="mon-sun", hours="08:00-19:00", max_rate=5000, workers=2),)
    noon = at("2026-12-02 12:00")
    inside = decide(4, 20000, schedule, None, noon, BERLIN)
    assert (inside.workers, inside.max_rate, inside.held) == (2, 5000, None)
    outside = decide(4, 20000, schedule, None, at("2026-12-02 20:00"), BERLIN)
    assert (outside.workers, outside.max_rate) == (4, 20000)
    pause = OperatorPause("alice", noon - 60, noon + 3600, abort=True)
    paused = decide(4, 20000, schedule, pause, noon, BERLIN)
    assert paused.workers == 0 and paused.abort and paused.held and "alice" in paused.held
    over = decide(4, 20000, schedule, pause, noon + 3601, BERLIN)
    assert over.workers == 2 and over.pause is None, "an expired pause must not hold"


def test_only_a_window_that_says_so_stops_uploads_in_flight() -> None:
    noon = at("2026-12-02 12:00")
    closed = Window(days="mon-sun", hours="11:00-13:00", workers=0)
    aborting = Window(days="mon-sun", hours="11:00-13:00", workers=0, abort_in_flight=True)
    assert not decide(4, 0, (closed,), None, noon, BERLIN).abort
    limits = decide(4, 0, (aborting,), None, noon, BERLIN)
    assert limits.abort and limits.workers == 0
    assert not decide(4, 0, (aborting,), None, at("2026-12-02 13:00"), BERLIN).abort


@pytest.fixture
def dst_engine(tmp_path: Path, media: Path, emu: Any) -> Any:
    config_path = engine_config(tmp_path, media, emu.url)
    with_settings(
        config_path, "upload", schedule=[{"days": "sun", "hours": "01:00-04:00", "workers": 0}]
    )
    config = load_config(config_path)
    journal = Journal.open(config.journal.path)
    now = [utc("2026-03-29T00:30:00")]  # 01:30 CET on the day clocks go forward
    make_tree(media, 3)
    for path in media.rglob("*.mp4"):
        os.utime(path, (now[0] - 3600, now[0] - 3600))
    engine = Engine(config, journal, Secret(API_KEY), clock=lambda: now[0], zone=BERLIN)
    yield engine, journal, now
    engine.stop()
    journal.close()


def test_a_closed_window_starts_nothing_and_its_end_on_a_dst_day_resumes(
    dst_engine: Any, emu: Any
) -> None:
    engine, journal, now = dst_engine
    engine.rescan(now[0])
    assert engine.settle(now[0]) == 3
    assert engine.dispatch(now[0]) == 0, "an upload started inside a workers = 0 window"
    assert engine.governor.limits is not None and "allows no uploads" in str(
        engine.governor.limits.held
    )
    now[0] = utc("2026-03-29T01:59:00")  # 03:59 CEST: 2 h 59 min of wall clock, still closed
    assert engine.dispatch(now[0]) == 0
    assert journal.counts()[State.QUEUED] == 3
    now[0] = utc("2026-03-29T02:00:01")  # 04:00:01 CEST: the window is over
    assert engine.dispatch(now[0]) == 3
    assert engine.wait_idle(30)
    assert len(emulator_records(emu.url)) == 3
    assert journal.counts()[State.UPLOADED] + journal.counts()[State.DONE] == 3


def test_status_shows_the_window_in_force_and_the_next(tmp_path: Path, media: Path) -> None:

    config = engine_config(tmp_path, media, "http://127.0.0.1:9")
    hour = datetime.now(BERLIN).hour  # a two-hour window around now, Berlin time
    hours = f"{hour:02d}:00-{(hour + 2) % 24:02d}:00"
    with_settings(
        config,
        "upload",
        max_rate="20MiB",
        schedule=[{"days": "mon-sun", "hours": hours, "max_rate": "1MiB"}],
    )
    Journal.open(load_config(config).journal.path).close()
    done = reka_done(config, "status", TZ="Europe/Berlin")
    assert done.returncode == 0, done.stderr
    assert f"window mon-sun {hours} in force until" in done.stdout, done.stdout
    assert f"next window mon-sun {hours} starts" in done.stdout, done.stdout
    assert "+01:00" in done.stdout or "+02:00" in done.stdout, "times must be local"
    assert "bandwidth cap: 1.0 MiB/s" in done.stdout, done.stdout
