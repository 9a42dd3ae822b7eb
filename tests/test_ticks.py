"""The engine's scheduling, driven tick by tick with an injected clock.

The API is an `httpx.MockTransport` answering instantly, so what is checked is the
engine's decisions (what is claimed when, what waits for a pause or a backoff), not
the network; the end-to-end tests use the real emulator over loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
import structlog.testing
from apscheduler.schedulers.background import BackgroundScheduler

from reka_sync.backfill import files_of, targets
from reka_sync.config import Config, load_config
from reka_sync.credentials import Secret
from reka_sync.journal import Journal
from reka_sync.lifecycle import State
from reka_sync.scheduler import OVERLAPS, Engine
from tests.conftest import API_KEY, engine_config, make_tree, wait_for, write_config


class FakeApi:
    """Answers uploads with a scripted status first, then 202; every video is stored."""

    def __init__(self, first_upload: httpx.Response | None = None) -> None:
        self.first_upload = first_upload
        self.videos: list[str] = []
        self.posts = 0
        self.garbled_polls = False  # answer status polls with JSON cut short

    def __call__(self, request: httpx.Request) -> httpx.Response:
        route = (request.method, request.url.path)
        if route == ("POST", "/v2/videos"):
            request.read()
            self.posts += 1
            if self.first_upload is not None:
                answer, self.first_upload = self.first_upload, None
                return answer
            self.videos.append(f"video-{len(self.videos)}")
            return httpx.Response(202, json={"video_id": self.videos[-1], "status": "uploading"})
        if route == ("GET", "/v2/videos"):
            if self.garbled_polls:
                return httpx.Response(200, content=b'{"results": [')
            ids = request.url.params.get_list("ids")
            return httpx.Response(
                200, json={"results": [{"video_id": i, "status": "uploaded"} for i in ids]}
            )
        return httpx.Response(404, json={"error": {"type": "not_found_error", "message": "no"}})


@pytest.fixture
def config(tmp_path: Path, media: Path) -> Config:
    path = engine_config(tmp_path, media, "http://127.0.0.1:9", workers=2)
    settings = tomllib.loads(path.read_text())
    settings["groups"] = {}  # no groups: no group requests
    return load_config(write_config(path, settings))


@pytest.fixture
def journal(config: Config) -> Iterator[Journal]:
    opened = Journal.open(config.journal.path)
    yield opened
    opened.close()


def engine_for(config: Config, journal: Journal, api: FakeApi, now: list[float]) -> Engine:
    journal.record_scan(list(files_of(config, targets(config, [], {}), [], [])), now[0])
    return Engine(
        config,
        journal,
        Secret(API_KEY),
        clock=lambda: now[0],
        rand=lambda: 0.5,
        transport=httpx.MockTransport(api),
    )


def test_a_429_pauses_every_upload_and_gives_the_attempt_back(
    config: Config, journal: Journal, media: Path
) -> None:
    make_tree(media, 3)
    limited = httpx.Response(
        429,
        json={"error": {"code": "rate_limit_exceeded", "message": "quota"}},
        headers={"retry-after": "30"},
    )
    api = FakeApi(first_upload=limited)
    now = [time.time() + 5]
    engine = engine_for(config, journal, api, now)
    try:
        assert engine.settle(now[0]) == 3  # promoting files dispatches them at once
        assert engine.wait_idle(10)
        waiting = journal.jobs([State.RETRY_WAIT])
        assert waiting, "the 429 sent no file back to wait"
        assert all(job.attempts == 0 for job in waiting), "a pause spent an attempt"
        assert all(job.next_attempt_at >= now[0] + 30 for job in waiting)
        assert engine.dispatch(now[0] + 29) == 0, "claimed during the retry-after pause"
        never_claimed = journal.jobs([State.QUEUED])  # when fewer workers than files
        now[0] += 31
        workers = config.upload.workers  # the rest are claimed as those finish
        assert engine.dispatch(now[0]) == min(workers, len(waiting) + len(never_claimed))
        assert engine.wait_idle(10)
        assert journal.counts()[State.UPLOADED] == 3
        now[0] += 2
        assert engine.poll(now[0]) == 3
        assert engine.wait_idle(10)
        assert journal.counts()[State.DONE] == 3
        assert api.posts == 4 and len(api.videos) == 3
    finally:
        engine.stop()


def test_a_500_waits_for_retry_after_and_spends_one_attempt(
    config: Config, journal: Journal, media: Path
) -> None:
    make_tree(media, 1)
    busy = httpx.Response(  # the API's own 500: it answered, so nothing was stored
        500,
        json={"error": {"type": "server_error", "message": "busy"}},
        headers={"retry-after": "7"},
    )
    api = FakeApi(first_upload=busy)
    now = [time.time() + 5]
    engine = engine_for(config, journal, api, now)
    try:
        assert engine.settle(now[0]) == 1
        assert engine.wait_idle(10)
        [job] = journal.jobs([State.RETRY_WAIT])
        assert job.attempts == 1 and not job.outcome_unknown  # the API answered: not stored
        assert job.next_attempt_at == now[0] + 7  # retry-after beats a backoff of at most 0.1 s
        assert engine.dispatch(now[0] + 6.9) == 0
        assert engine.dispatch(now[0] + 7) == 1
        assert engine.wait_idle(10)
        assert journal.get(job.id).state is State.UPLOADED
        history = [h.event for h in journal.history(job.id)]
        assert history.count("note:sending") == 2
    finally:
        engine.stop()


def test_status_polls_come_soon_after_acceptance_then_back_off_on_garbage(
    config: Config, journal: Journal, media: Path
) -> None:
    make_tree(media, 2)
    api = FakeApi()
    now = [time.time() + 5]
    engine = engine_for(config, journal, api, now)
    try:
        engine.settle(now[0])
        assert engine.wait_idle(10)
        now[0] += 0.1
        assert engine.poll(now[0]) == 0, "polled before the first poll was due"
        now[0] += 0.15  # a first poll soon after acceptance (min(1 s, poll_interval))
        api.garbled_polls = True
        assert engine.poll(now[0]) == 2
        assert engine.wait_idle(10)
        jobs = journal.jobs([State.UPLOADED])
        assert len(jobs) == 2 and all(j.next_attempt_at == now[0] + 0.4 for j in jobs)
        assert engine.poll(now[0] + 0.39) == 0, "a failed poll was retried at once"
        history = journal.history(jobs[0].id)
        assert history[-1].event == "note:poll failed" and "not JSON" in json.dumps(
            history[-1].detail
        )
    finally:
        engine.stop()


def test_a_folder_on_the_path_swapped_for_a_link_sends_nothing(
    config: Config, journal: Journal, media: Path, tmp_path: Path
) -> None:
    folder = media / "d"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(os.urandom(4000))
    api = FakeApi()
    now = [time.time() + 5]
    engine = engine_for(config, journal, api, now)  # records d/a.mp4
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "a.mp4").write_bytes(os.urandom(4000))
    shutil.rmtree(folder)
    folder.symlink_to(outside)  # d/a.mp4 now leads out of the root
    try:
        engine.settle(now[0])  # the stat moved: settle again
        now[0] += 1
        engine.settle(now[0])
        assert engine.wait_idle(10)
        [job] = journal.jobs([State.FAILED])
        assert "symbolic link" in (job.last_error or "")
        assert api.posts == 0
    finally:
        engine.stop()


def test_a_tick_that_outlasts_its_interval_is_said_once() -> None:
    """APScheduler skips a tick's runs while it still runs; that is one warning, not one
    per interval (a 100,000-file run logged it 513 times)."""
    release = threading.Event()
    scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1})
    scheduler.add_job(lambda: release.wait(30), "interval", seconds=0.02, id="slow-tick-under-test")
    before = OVERLAPS.skipped
    with structlog.testing.capture_logs() as logs:
        scheduler.start()
        try:
            wait_for(lambda: OVERLAPS.skipped - before >= 10, 30, "ten skipped runs")
        finally:
            release.set()
            scheduler.shutdown()
    said = [e for e in logs if e["event"].startswith("a tick outlasts its interval")]
    assert [e["tick"] for e in said] == ["slow-tick-under-test"]
