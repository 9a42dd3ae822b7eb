"""The HTML status page: what its HTML holds, and what a person sees of it on a phone.

The browser tests serve the page over real HTTP, load it in headless Chromium 390 px wide,
and read the screenshot back with tesseract (tests/browser.py).
"""

from __future__ import annotations

import calendar
import html
import re
import threading
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from reka_sync.status import status_report
from reka_sync.statuspage import render_error, render_page
from tests import browser
from tests.conftest import journal_of_two_files

NOW = float(calendar.timegm((2026, 11, 30, 10, 15, 0)))  # 2026-11-30 10:15:00 UTC
WIDTH = 390
HEIGHT = 2600  # the whole sample page at 390 px (about 2,450 px tall), so OCR sees all of it
REASON = "HTTP 400: unsupported codec"
LONG_REASON = (
    "HTTP 422: the container holds two video streams and the second one has no keyframes "
    "in its first minute"
)
LONG_PATH = "/srv/media/cameras/back-yard/2026-11-30/back_yard_motion_capture_0000123456789.mp4"
HELD = "paused by alice since 2026-11-30 10:00 UTC, until 2026-11-30 12:00 UTC"
NASTY_PATH = '/media/<script>alert(1)</script>/"q" it\'s \\xff.mp4'


def sample_report() -> dict[str, Any]:
    """Return a report shaped like status_report's plus `controls`, with things to show."""
    return {
        "journal": "/var/lib/reka-sync/journal.db",
        "counts": {
            "discovered": 12,
            "queued": 1234,
            "uploading": 2,
            "retry_wait": 0,
            "uploaded": 1,
            "filing": 0,
            "indexing": 0,
            "done": 5678,
            "failed": 3,
            "skipped": 0,
            "missing": 0,
        },
        "total": 6930,
        "in_flight": [
            {
                "path": "/srv/media/cameras/front/2026-11-30/0900.mp4",
                "state": "uploading",
                "attempts": 1,
                "video_id": None,
                "group": "Camera front",
                "error": None,
                "age_seconds": 600.0,
                "sent_bytes": 456 * 1024 * 1024,
                "size": 1024 * 1024 * 1024,
                "percent": 44.5,
            },
            {
                "path": LONG_PATH,
                "state": "uploading",
                "attempts": 2,
                "video_id": None,
                "group": None,
                "error": None,
                "age_seconds": 30.0,
            },
        ],
        "oldest_queued_seconds": 7380.0,  # 2 h 03 min
        "waiting": [],
        "other_extensions": 0,
        "journal_check": {"at": "2026-11-30T03:00:00Z", "verdict": "ok"},
        "pauses": [
            {
                "kind": "upload",
                "until": "2026-11-30T10:16:35Z",
                "seconds_left": 95.0,
                "reason": "HTTP 429: rate limited",
            }
        ],
        "recent_failures": [
            failure("/srv/media/cameras/front/2026-11-29/2300.mkv", REASON),
            failure(LONG_PATH, LONG_REASON),
            failure(NASTY_PATH, "HTTP 400: <b>bad</b> & worse"),
        ],
        "unavailable_roots": [{"root": "/mnt/nas-two", "since": "2026-11-30T09:00:00Z"}],
        "indexing": {
            "videos": 0,
            "features": {},
            "waiting_for_daily_cap": 0,
            "started_today": 0,
        },
        "controls": {  # as status.controls_report gives them
            "paused": {
                "by": "alice",
                "since": "2026-11-30T10:00:00Z",
                "until": "2026-11-30T12:00:00Z",
                "now": False,
                "reason": HELD,
            },
            "held": HELD,
            "window": {
                "name": "mon-fri 08:00-19:00",
                "workers": 2,
                "max_rate": 5 * 1024 * 1024,
                "ends": "2026-11-30T19:00:00Z",
            },
            "next_window": {"name": "nights", "starts": "2026-11-30T22:00:00Z"},
            "max_rate": 5 * 1024 * 1024,
            "workers": 2,
        },
    }


def failure(path: str, error: str) -> dict[str, Any]:
    """Return a recent_failures entry for `path` that failed with `error`."""
    return {
        "path": path,
        "state": "failed",
        "attempts": 3,
        "video_id": None,
        "group": None,
        "error": error,
        "age_seconds": 3600.0,
    }


def quiet_report() -> dict[str, Any]:
    """Return the sample report with nothing wrong: no pause, failure or missing root."""
    report = sample_report()
    report["counts"]["failed"] = 0
    report["recent_failures"] = []
    report["pauses"] = []
    report["unavailable_roots"] = []
    report["controls"]["paused"] = None
    report["controls"]["held"] = None
    return report


# ---------------------------------------------------------------- the HTML (no browser)


class Tags(HTMLParser):
    """Collects the start tags and checks that every non-void element is closed in order."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.starts: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    tags.close()
    return tags


def test_page_is_a_complete_document_that_reloads_itself() -> None:
    page = render_page(sample_report(), NOW)
    assert page.startswith("<!DOCTYPE html>")
    tags = parsed(page)
    assert tags.errors == [] and tags.open == []
    metas = [attrs for tag, attrs in tags.starts if tag == "meta"]
    assert {"http-equiv": "refresh", "content": "5"} in metas
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in metas
    assert any(tag == "title" for tag, _ in tags.starts)


@pytest.mark.parametrize("make", [sample_report, quiet_report])
def test_page_has_no_script_form_or_link(make: Callable[[], dict[str, Any]]) -> None:
    page = render_page(make(), NOW)
    assert "<script" not in page.lower() and "<form" not in page.lower()
    used = {tag for tag, _ in parsed(page).starts}
    assert not used & {"script", "form", "a", "button", "input", "iframe", "link"}
    assert "javascript:" not in page.lower()
    assert not re.search(r"<[^>]+\son[a-z]+=", page)  # no event handler attributes either


def test_every_string_from_the_report_is_escaped() -> None:
    report = sample_report()
    report["controls"]["paused"]["by"] = "<i>mallory</i>"
    report["controls"]["paused"]["reason"] = 'say "hi" <now>'
    report["pauses"][0]["reason"] = "<marquee>"
    report["unavailable_roots"][0]["root"] = "/mnt/<nas>"
    report["in_flight"][0]["path"] = "/up/<img src=x>.mp4"
    page = render_page(report, NOW)
    assert "<script" not in page and "<b>bad</b>" not in page and "<img" not in page
    for raw in (NASTY_PATH, "HTTP 400: <b>bad</b> & worse", "<i>mallory</i>", 'say "hi" <now>'):
        assert html.escape(raw) in page
    for raw in ("<marquee>", "/mnt/<nas>", "/up/<img src=x>.mp4"):
        assert html.escape(raw) in page
    # What a browser shows is the text itself, backslash escape included.
    text = "".join(parsed(page).text)
    assert NASTY_PATH in text and "\\xff" in text


def test_headline_says_ok_paused_or_problems() -> None:
    def headline(report: dict[str, Any]) -> str:
        found = re.search(r'<h1 class="(\w+)">([^<]*)</h1>', render_page(report, NOW))
        assert found is not None
        return f"{found[1]} {found[2]}"

    assert headline(quiet_report()) == "ok OK"
    assert headline(sample_report()) == "paused PAUSED"
    unpaused = sample_report()
    unpaused["controls"]["paused"] = unpaused["controls"]["held"] = None
    assert headline(unpaused) == "problem PROBLEMS"
    one_root = quiet_report()
    one_root["unavailable_roots"] = [{"root": "/mnt/x", "since": "2026-11-30T09:00:00Z"}]
    assert headline(one_root) == "problem PROBLEMS"
    closed = quiet_report()  # a schedule window that allows no upload holds them back too
    closed["controls"]["held"] = "schedule window nights allows no uploads until 06:00"
    assert headline(closed) == "paused PAUSED"
    assert '<p class="held">schedule window nights allows no uploads' in render_page(closed, NOW)
    page = render_page(unpaused, NOW)
    assert "3 files failed" in page and "1 watch root unavailable" in page
    assert "API requests paused (upload)" in page


def test_counts_show_only_non_zero_states_and_the_total() -> None:
    page = render_page(sample_report(), NOW)
    rows = dict(
        re.findall(r'<tr(?: class="total")?><td>(\w+)</td><td class="n">([\d,]+)</td>', page)
    )
    assert rows == {
        "discovered": "12",
        "queued": "1,234",
        "uploading": "2",
        "uploaded": "1",
        "done": "5,678",
        "failed": "3",
        "total": "6,930",
    }


def test_in_flight_progress_schedule_and_times() -> None:
    page = render_page(sample_report(), NOW)
    assert 'aria-valuenow="44"' in page and "width:44.5%" in page
    assert "456.0 MiB of 1.0 GiB" in page  # progress.human_size
    assert "2 h 03 min" in page  # the oldest queued file's wait
    assert "Paused by <b>alice</b> since 2026-11-30 10:00 UTC (15 min ago)" in page
    assert "until 2026-11-30 12:00 UTC (in 1 h 45 min)" in page
    assert "<b>mon-fri 08:00-19:00</b> (2 uploads at once, 5.0 MiB/s)" in page
    assert "ends 2026-11-30 19:00 UTC (in 8 h 45 min)" in page
    assert "Next window: <b>nights</b>, starts 2026-11-30 22:00 UTC" in page
    assert "Bandwidth cap: <b>5.0 MiB/s</b>" in page
    assert "until 2026-11-30 10:16 UTC (1 min left): HTTP 429: rate limited" in page
    assert "/mnt/nas-two" in page and "since 2026-11-30 09:00 UTC" in page
    assert "Page as of <b>2026-11-30 10:15:00 UTC</b>" in page


def test_a_pause_reason_is_said_once() -> None:
    page = render_page(sample_report(), NOW)
    assert page.count(html.escape(HELD)) == 1  # under the headline, not again as the reason
    assert "Reason:" not in page
    report = sample_report()
    report["controls"]["paused"]["reason"] = "NAS maintenance <tonight>"
    page = render_page(report, NOW)
    assert "Reason: NAS maintenance &lt;tonight&gt;" in page
    report["controls"]["paused"]["now"] = True
    assert "Uploads in flight were stopped." in render_page(report, NOW)


def test_no_controls_no_schedule_and_no_cap_said_plainly() -> None:
    report = quiet_report()
    del report["controls"]
    page = render_page(report, NOW)
    assert "Schedule" not in page and "Paused by" not in page
    capless = quiet_report()
    capless["controls"].update(max_rate=0, window=None, next_window=None)
    page = render_page(capless, NOW)
    assert "Bandwidth cap: <b>no cap</b>" in page and "No schedule window in force" in page
    stop = sample_report()
    stop["pauses"][0]["seconds_left"] = 400 * 86400.0
    assert "until lifted by hand: HTTP 429" in render_page(stop, NOW)


def test_render_page_reads_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    real_gmtime = time.gmtime

    def gmtime(*args: Any) -> time.struct_time:
        assert args and args[0] is not None, "the page read the clock"
        return real_gmtime(*args)

    def clock() -> float:
        raise AssertionError("the page read the clock")

    monkeypatch.setattr(time, "time", clock)
    monkeypatch.setattr(time, "gmtime", gmtime)
    monkeypatch.setattr(time, "localtime", clock)
    first = render_page(sample_report(), NOW)
    assert render_page(sample_report(), NOW) == first
    assert "2026-11-30 10:16:00 UTC" in render_page(sample_report(), NOW + 60)


def test_render_error_says_the_journal_is_unreadable() -> None:
    page = render_error("database disk image is malformed <journal.db>")
    assert page.startswith("<!DOCTYPE html>") and 'http-equiv="refresh"' in page
    assert "JOURNAL UNREADABLE" in page
    assert "database disk image is malformed &lt;journal.db&gt;" in page
    tags = parsed(page)
    assert tags.errors == [] and tags.open == []
    assert "<script" not in page and "<form" not in page


def test_a_real_status_report_renders(config_file: Path) -> None:
    from reka_sync.lifecycle import Event
    from reka_sync.moves import Changes, Move

    journal, root = journal_of_two_files(config_file)
    job = journal.find(str(root / "b.mp4"))
    assert job is not None
    journal.apply(Move(job.id, Event.SETTLED), 2.0)
    journal.apply(Move(job.id, Event.CLAIM), 3.0)
    journal.apply(Move(job.id, Event.FAIL, Changes(last_error=REASON)), 4.0)
    report = status_report(journal, NOW)
    page = render_page(report, NOW)  # no `controls`: the daemon may leave them out
    assert "<td>failed</td>" in page and "<td>discovered</td>" in page
    assert REASON in page and html.escape(str(root / "b.mp4")) in page
    assert '<h1 class="problem">PROBLEMS</h1>' in page


def test_real_controls_render() -> None:
    from datetime import UTC

    from reka_sync.controls import OperatorPause, decide
    from reka_sync.status import controls_report
    from reka_sync.windows import Window

    nights = Window(days="mon-sun", hours="22:00-06:00", max_rate=2 * 1024 * 1024, workers=4)
    pause = OperatorPause("alice (sudo by bob)", NOW - 900, NOW + 3600, abort=True)
    limits = decide(3, 1024 * 1024, (nights,), pause, NOW, UTC)
    report = quiet_report()
    report["controls"] = controls_report(limits)
    page = render_page(report, NOW)
    assert '<h1 class="paused">PAUSED</h1>' in page
    assert "Paused by <b>alice (sudo by bob)</b> since 2026-11-30 10:00 UTC" in page
    assert "Uploads in flight were stopped." in page
    assert "Next window: <b>mon-sun 22:00-06:00</b>, starts 2026-11-30 22:00 UTC" in page
    assert "Bandwidth cap: <b>1.0 MiB/s</b>" in page and "No schedule window in force" in page
    assert "Uploads allowed at once: <b>0</b>" in page


# ---------------------------------------------------------------- in a browser, as seen

PROBE = (
    "<script>document.title = 'W=' + document.documentElement.scrollWidth"
    " + ' H=' + document.documentElement.scrollHeight;</script>"
)
TOO_WIDE = render_page(quiet_report(), NOW).replace(
    "<main>", '<main><div style="width:600px;background:#000">wide</div>'
)


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """Serve the sample page at /, the same page with a size probe at /probe, and a page
    that is too wide for a phone at /wide and /wide-probe; yield the base URL."""
    page = render_page(sample_report(), NOW)
    pages = {
        "/": page,
        "/probe": page.replace("</body>", PROBE + "</body>"),
        "/wide": TOO_WIDE,
        "/wide-probe": TOO_WIDE.replace("</body>", PROBE + "</body>"),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path)
            if body is None:
                self.send_error(404)
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def shot(site: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    browser.require()
    return browser.screenshot(
        site + "/", tmp_path_factory.mktemp("shot") / "page.png", WIDTH, HEIGHT
    )


@pytest.fixture(scope="module")
def seen(shot: Path) -> str:
    """The page as OCR reads it, lower-case, whitespace collapsed."""
    return browser.normalized(browser.seen_text(shot))


def size_of(site: str, path: str) -> tuple[int, int]:
    """Given a probe page, return the scroll width and height Chromium laid it out at."""
    browser.require()
    found = re.search(r"<title>W=(\d+) H=(\d+)</title>", browser.dump_dom(site + path, WIDTH))
    assert found is not None, "the probe did not run"
    return int(found[1]), int(found[2])


def test_the_headline_is_seen_first(seen: str) -> None:
    assert re.match(r"\W{0,3}paused\b", seen), seen  # its coloured left border may read as "|"


def test_counts_are_seen(seen: str) -> None:
    assert re.search(r"queued 1[,.]?234\b", seen), seen
    assert re.search(r"failed 3\b", seen), seen
    assert re.search(r"total 6[,.]?930\b", seen), seen


def test_failure_reasons_are_seen_whole(seen: str) -> None:
    assert "http 400: unsupported codec" in seen, seen
    # The long reason wraps instead of running off the right edge: its last words are seen.
    assert "no keyframes in its first minute" in seen, seen


def test_the_pause_and_who_made_it_are_seen(seen: str) -> None:
    assert "paused by alice" in seen, seen
    assert "uploads already sending finish" in seen, seen


def test_the_page_fits_a_phone_without_scrolling_sideways(site: str, shot: Path) -> None:
    width, height = size_of(site, "/probe")
    assert width <= WIDTH
    assert height <= HEIGHT  # the screenshot holds the whole page, so OCR saw all of it
    shot_width, _, _ = browser.read_png(shot)
    assert shot_width == WIDTH
    # Nothing is drawn in the right margin: text cut off at the edge would leave ink there.
    assert browser.ink_in_columns(shot, WIDTH - 8, WIDTH - 1) == 0


def test_the_width_checks_catch_a_page_too_wide(site: str, tmp_path: Path) -> None:
    width, _ = size_of(site, "/wide-probe")
    assert width > WIDTH
    wide = browser.screenshot(site + "/wide", tmp_path / "wide.png", WIDTH, 600)
    assert browser.ink_in_columns(wide, WIDTH - 8, WIDTH - 1) > 0


def test_the_dom_chromium_built_shows_names_as_text(site: str) -> None:
    browser.require()
    dom = browser.dump_dom(site + "/")
    assert "<script" not in dom.lower() and "<form" not in dom.lower()
    text = browser.dom_text(site + "/")
    assert NASTY_PATH in text and "HTTP 400: <b>bad</b> & worse" in text
    assert "queued 1,234" in text and "Paused by alice" in text
