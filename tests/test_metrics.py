"""The metrics listener during a real backfill with faults: `/metrics` checked against the
emulator's own request log and the journal, the scrape checked by promtool, and the
status page seen in headless Chromium (screenshot, OCR)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reka_sync import emulator
from reka_sync.config import load_config
from reka_sync.journal import Journal
from reka_sync.metrics import METRIC_NAMES
from tests import browser
from tests.conftest import (
    ServiceProcess,
    emulator_requests,
    engine_config,
    make_tree,
    reka_ok,
    report_json,
    set_faults,
    start_backfill,
    wait_for,
    with_settings,
)

FILES = 12
SIZE = 128 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """Return a scrape's text and its samples by (name, labels)."""
    text = httpx.get(url, timeout=5).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def slow_store() -> Iterator[Any]:
    """An emulator that takes 3 s to store each video: the uploads are all done (the
    counters final) while backfill still waits for the polls, so a scrape can be checked."""
    running = emulator.start(settings=emulator.Settings(processing_delay=3.0))
    yield running
    running.stop()


def test_metrics_during_a_backfill_with_faults_match_the_emulator_and_the_journal(
    tmp_path: Path, media: Path, slow_store: Any
) -> None:
    url = slow_store.url
    port = free_port()
    config = engine_config(tmp_path, media, url)
    set_faults(
        url,
        [
            {"kind": "server_error", "scope": "upload", "rate": 1.0, "count": 3},
            {"kind": "rate_limit", "scope": "upload", "rate": 1.0, "count": 1, "seconds": 1},
        ],
    )
    make_tree(media, FILES, size=SIZE)
    backfill = start_backfill(config, "--metrics-listen", f"127.0.0.1:{port}", capture=True)
    metrics = f"http://127.0.0.1:{port}/metrics"

    def accepted_all() -> tuple[str, dict[Any, float]] | None:
        try:
            found = scrape(metrics)
        except httpx.TransportError:
            return None  # not listening yet
        return found if value(found[1], "reka_sync_uploads_succeeded_total") == FILES else None

    text, samples = wait_for(accepted_all, timeout=90, message="every upload accepted")
    posts = [
        r for r in emulator_requests(url) if (r["method"], r["path"]) == ("POST", "/v2/videos")
    ]
    statuses = Counter(r["status"] for r in posts)
    assert statuses == {202: FILES, 500: 3, 429: 1}, statuses
    assert value(samples, "reka_sync_uploads_failed_total", error_class="retryable") == 3
    assert value(samples, "reka_sync_upload_retries_total") == 3
    # the 429, and any send a pause held back at the last moment, before it went out
    held = value(samples, "reka_sync_uploads_failed_total", error_class="paused") - 1
    assert held >= 0
    assert value(samples, "reka_sync_uploads_started_total") == len(posts) + held
    failed = sum(v for k, v in samples.items() if k[0] == "reka_sync_uploads_failed_total")
    assert failed == 3 + 1 + held, "a failure counted that was not a send's"
    assert value(samples, "reka_sync_rate_limit_pauses_total") == 1
    assert value(samples, "reka_sync_rate_limit_pause_seconds_total") == pytest.approx(1, abs=0.2)
    assert value(samples, "reka_sync_uploaded_bytes_total") == FILES * SIZE
    assert value(samples, "reka_sync_upload_duration_seconds_count") == FILES
    assert value(samples, "reka_sync_upload_size_bytes_count") == FILES
    assert value(samples, "reka_sync_last_upload_success_timestamp_seconds") > time.time() - 120
    assert value(samples, "reka_sync_api_reachable") == 1
    assert value(samples, "reka_sync_journal_size_bytes") > 0
    by_state = {dict(k[1])["state"]: v for k, v in samples.items() if k[0] == "reka_sync_files"}
    assert sum(by_state.values()) == FILES
    assert by_state["failed"] == 0 and by_state["queued"] == 0
    stored = by_state["uploaded"] + by_state["filing"] + by_state["done"]
    assert stored == FILES, by_state
    journal = Journal.open(load_config(config).journal.path, readonly=True)
    try:
        counts = journal.counts()
        assert sum(counts.values()) == FILES
        assert (
            sum(n for s, n in counts.items() if s.value in ("uploaded", "filing", "done")) == FILES
        )
    finally:
        journal.close()
    names = {family.name for family in text_string_to_metric_families(text)}
    exported = {n.removesuffix("_total") for n in METRIC_NAMES}
    assert exported <= names, exported - names  # every documented metric is there
    _promtool_accepts(text)
    out, err = backfill.communicate(timeout=120)
    assert backfill.returncode == 0, out + err


def _promtool_accepts(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian package prometheus); CI installs it")
        return  # checked in CI, where promtool is installed
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.alone  # read by OCR from a live backfill
def test_the_status_page_of_a_backfill_with_failures_shows_counts_and_reasons(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    browser.require()
    port = free_port()
    # One slow worker: files are still queued when the first two have failed.
    config = engine_config(tmp_path, media, emu.url, max_attempts=1, workers=1, max_rate="64KiB")
    set_faults(
        emu.url, [{"kind": "processing_failure", "scope": "upload", "rate": 1.0, "count": 2}]
    )
    make_tree(media, 10)
    backfill = start_backfill(config, "--metrics-listen", f"127.0.0.1:{port}", capture=True)
    site = f"http://127.0.0.1:{port}/"

    def failed_two() -> bool:
        report = report_json("status", config)
        return bool(report) and report["counts"].get("failed") == 2

    wait_for(failed_two, timeout=90, message="two failures")
    reka_ok(config, "pause")  # the rest waits, and the page says who paused
    wait_for(lambda: "paused by" in _page(site), timeout=30, message="the page to show the pause")
    shot = browser.screenshot(site, tmp_path / "page.png", width=390, height=2000)
    seen = browser.normalized(browser.seen_text(shot))
    report = report_json("status", config)
    assert report is not None
    assert re.search(r"\bfailed 2\b", seen), seen
    assert report["counts"]["queued"] > 0, "nothing was left to hold: the pause proves nothing"
    assert re.search(r"\btotal 10\b", seen), seen
    reason = report["recent_failures"][0]["error"]
    words = [w for w in browser.normalized(reason).split() if w.isalpha() and len(w) > 4][:4]
    assert words and all(w in seen for w in words), (words, seen)
    assert "paused by" in seen, seen
    reka_ok(config, "resume")
    out, err = backfill.communicate(timeout=120)
    assert backfill.returncode == 1, out + err  # two files failed


def _page(site: str) -> str:
    try:
        return httpx.get(site, timeout=5).text
    except httpx.TransportError:
        return ""


def test_the_service_binds_its_metrics_port_once_it_is_free(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    port = free_port()
    config = engine_config(tmp_path, media, emu.url)
    with_settings(config, "metrics", listen=f"127.0.0.1:{port}")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        service = ServiceProcess(config)
        wait_for(
            lambda: service.logged(
                "cannot serve metrics and the status page; uploads go on without them, and"
                " reka-sync tries again every 5 s. Free the port or change metrics.listen"
            ),
            message="the taken port to be said",
        )
    finally:
        squatter.close()
    metrics = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: "reka_sync_files" in _page(metrics), timeout=30, message="the listener")
    wait_for(
        lambda: value(scrape(metrics)[1], "reka_sync_rescans_total") >= 1,
        message="the startup rescan counted",
    )
    _, samples = scrape(metrics)
    assert value(samples, "reka_sync_inotify_watches") >= 1, "the root's watch is not seen"
    assert value(samples, "reka_sync_inotify_watches_limit") > 0
    assert value(samples, "reka_sync_rescan_duration_seconds_count") >= 1
    assert value(samples, "reka_sync_roots_unavailable") == 0
    assert service.stop() == 0
