"""A backfill's start and end: it loads no machinery it does not use, and its last videos
are polled as soon as the last upload is answered, not when their first poll comes due.

Imports are checked in a fresh interpreter, never by timing; the end is checked with the
first poll pushed far out (monkeypatched), so a margin of seconds separates the two.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from reka_sync import outcomes, scheduler
from reka_sync.backfill import files_of, targets
from reka_sync.config import load_config
from reka_sync.credentials import Secret
from reka_sync.journal import Journal
from reka_sync.lifecycle import State
from reka_sync.metrics import Meter
from tests.conftest import (
    API_KEY,
    PYTHON,
    cli_env,
    emulator_requests,
    engine_config,
    make_tree,
    set_faults,
    wait_for,
)

# What a backfill that serves no metrics must never load: it does not watch, serves no
# scrape, and never runs httpx's own command line.
NOT_FOR_BACKFILL = (
    "watchdog",
    "prometheus_client",
    "reka_sync.watcher",
    "reka_sync.telemetry",
    "reka_sync.statuspage",
    "httpx._main",
    "pygments",
)

PROBE = """
import contextlib, io, json, sys
import reka_sync.cli as cli

with contextlib.redirect_stdout(io.StringIO()):
    code = cli.main(["backfill", "--config", sys.argv[1], "--log-level", "warning"])
names = json.loads(sys.argv[2])
loaded = sorted(
    m for m in sys.modules
    if sys.modules[m] is not None and any(m == n or m.startswith(n + ".") for n in names)
)
print(json.dumps({"code": code, "loaded": loaded}))
"""

SLOW_FIRST_POLL = 5.0  # seconds: far longer than a backfill of a few small files takes


def test_a_backfill_loads_no_watcher_metrics_or_http_command_line(
    emu: Any, tmp_path: Path, media: Path
) -> None:
    make_tree(media, 3)
    config = engine_config(tmp_path, media, emu.url)
    done = subprocess.run(
        [PYTHON, "-c", PROBE, str(config), json.dumps(NOT_FOR_BACKFILL)],
        capture_output=True,
        text=True,
        env=cli_env(REKA_API_KEY=API_KEY),
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found == {"code": 0, "loaded": []}


def test_a_meter_that_keeps_nothing_takes_every_update() -> None:
    meter = Meter(kept=False)
    meter.started.inc()
    meter.failed.labels(error_class="retryable").inc()
    meter.uploaded(1024, 0.5, 1000.0)
    meter.rate_limits(10, 9, 1.0)
    meter.rescan_seconds.observe(0.1)
    assert meter.registry is None


def test_the_last_videos_are_polled_once_the_last_upload_is_answered(
    emu: Any, tmp_path: Path, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the first poll due SLOW_FIRST_POLL after acceptance, a one-shot engine still
    confirms every file well before that: once no upload is in flight, it polls the
    videos sent at once, in one batched look (fewer poll requests than files)."""
    monkeypatch.setattr(outcomes, "FIRST_POLL", SLOW_FIRST_POLL)
    monkeypatch.setattr(scheduler, "FIRST_POLL", SLOW_FIRST_POLL)
    set_faults(emu.url, [], processing_delay=0.0)
    make_tree(media, 3)
    config = load_config(engine_config(tmp_path, media, emu.url, poll_interval=30.0))
    journal = Journal.open(config.journal.path)
    journal.record_scan(list(files_of(config, targets(config, [], {}), [], [])), 0.0)
    engine = scheduler.Engine(config, journal, Secret(API_KEY), one_shot=True)
    began = time.monotonic()
    try:
        engine.start()
        wait_for(
            lambda: len(journal.jobs([State.DONE])) == 3,
            timeout=SLOW_FIRST_POLL * 4,
            message="all files done",
        )
        took = time.monotonic() - began
    finally:
        engine.stop()
        journal.close()
    assert took < SLOW_FIRST_POLL, f"confirmed {took:.1f}s after the start"
    polls = [
        r for r in emulator_requests(emu.url) if (r["method"], r["path"]) == ("GET", "/v2/videos")
    ]
    assert len(polls) < 3 + 1, f"{len(polls)} listings and polls for 3 files"
