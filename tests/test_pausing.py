"""`reka-sync pause` / `resume` from a second shell, against `run` and `backfill` as
subprocesses and the emulator over loopback; and a schedule window that holds backfill."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reka_sync.config import load_config
from reka_sync.journal import Journal
from tests.conftest import (
    ServiceProcess,
    assert_uploaded_exactly_once,
    emulator_records,
    emulator_requests,
    engine_config,
    make_tree,
    reka_done,
    reka_ok,
    report_json,
    run_backfill,
    start_backfill,
    wait_for,
    with_settings,
)


def posts(url: str) -> int:
    return sum(
        1 for r in emulator_requests(url) if (r["method"], r["path"]) == ("POST", "/v2/videos")
    )


def counts(config: Path) -> dict[str, int]:
    report = report_json("status", config)
    return report["counts"] if report else {}


def holds(condition: Callable[[], bool], seconds: float, message: str) -> None:
    """Check `condition` stays true for `seconds` (several dispatch ticks): what must not
    happen is watched for that long, since its absence cannot be waited on."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), message
        time.sleep(0.1)  # polling interval of a bounded observation


def test_a_pause_from_another_shell_holds_run_survives_a_restart_and_resume_lifts_it(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url)
    service = ServiceProcess(config)
    said = reka_ok(config, "pause")
    assert "paused by" in said and "until resumed" in said
    wait_for(lambda: service.logged("uploads wait"), message="the service to see the pause")
    expected = make_tree(media, 4)
    wait_for(lambda: counts(config).get("queued") == 4, message="4 files queued")
    holds(lambda: posts(emu.url) == 0, 1.5, "an upload started during the pause")
    assert service.stop() == 0
    service = ServiceProcess(config)
    wait_for(lambda: service.logged("uploads wait"), message="the pause to hold after a restart")
    report = report_json("status", config)
    assert report is not None and report["controls"]["paused"]["until"] is None
    assert report["controls"]["paused"]["by"], report["controls"]
    holds(lambda: posts(emu.url) == 0, 1.5, "an upload started after the restart")
    assert "resumed" in reka_ok(config, "resume")
    wait_for(lambda: len(emulator_records(emu.url)) == 4, timeout=60, message="4 uploads")
    assert_uploaded_exactly_once(emu.url, expected)
    assert service.stop() == 0
    assert "nothing to resume" in reka_ok(config, "resume")


def test_pause_now_requeues_uploads_in_flight_without_spending_an_attempt(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url, max_rate="256KiB", workers=2)
    expected = make_tree(media, 2, size=8 * 1024 * 1024)  # 32 s each at the cap
    service = ServiceProcess(config)
    wait_for(lambda: counts(config).get("uploading") == 2, message="2 uploads in flight")
    reka_ok(config, "pause", "--now")
    wait_for(lambda: counts(config).get("uploading", 0) == 0, timeout=20, message="uploads stopped")
    assert emulator_records(emu.url) == [], "a cut upload was stored"
    for path in expected:
        shown = report_json("show", config, path)
        assert shown is not None and shown["attempts"] == 0, shown
        assert shown["state"] in ("queued", "retry_wait"), shown["state"]
    with_settings(config, "upload", max_rate=0)
    service.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: service.logged("configuration reloaded"), message="the reload")
    reka_ok(config, "resume")
    wait_for(lambda: len(emulator_records(emu.url)) == 2, timeout=60, message="2 uploads")
    assert_uploaded_exactly_once(emu.url, expected)
    assert service.stop() == 0


def test_backfill_waits_for_a_pause_says_why_and_finishes_after_resume(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url)
    expected = make_tree(media, 3)
    reka_ok(config, "pause", "--for", "1h")
    backfill = start_backfill(config, capture=True)
    wait_for(lambda: counts(config).get("queued") == 3, message="3 files queued")
    holds(lambda: posts(emu.url) == 0, 1.5, "backfill uploaded during a pause")
    reka_ok(config, "resume")
    _, err = backfill.communicate(timeout=120)
    assert backfill.returncode == 0, err
    assert "waiting: paused by" in err, err
    assert_uploaded_exactly_once(emu.url, expected)


def test_a_closed_window_holds_backfill_unless_it_ignores_the_schedule(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url)
    with_settings(
        config, "upload", schedule=[{"days": "mon-sun", "hours": "00:00-24:00", "workers": 0}]
    )
    expected = make_tree(media, 3)
    backfill = start_backfill(config, capture=True)
    wait_for(lambda: counts(config).get("queued") == 3, message="3 files queued")
    holds(lambda: posts(emu.url) == 0, 1.5, "backfill uploaded inside a closed window")
    backfill.send_signal(signal.SIGTERM)
    _, err = backfill.communicate(timeout=60)
    assert "waiting: schedule window mon-sun 00:00-24:00 allows no uploads" in err, err
    done = run_backfill(config, "--ignore-schedule")
    assert done.returncode == 0, done.stderr
    assert_uploaded_exactly_once(emu.url, expected)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the journal to another user")
def test_pause_refuses_to_write_a_journal_that_belongs_to_another_user(
    tmp_path: Path, media: Path
) -> None:
    config = engine_config(tmp_path, media, "http://127.0.0.1:9")
    path = load_config(config).journal.path
    Journal.open(path).close()
    os.chown(path, 65534, 65534)
    beside = sorted(os.listdir(path.parent))
    done = reka_done(config, "pause")
    assert done.returncode == 77, done.stderr  # EX_NOPERM
    assert "reka-sync pause" in done.stderr and "sudo -u" in done.stderr, done.stderr
    assert sorted(os.listdir(path.parent)) == beside, "the refused pause left files beside it"
    journal = Journal.open(path, readonly=True)
    try:
        assert journal.operator_pause() is None, "the refused pause was written"
    finally:
        journal.close()
