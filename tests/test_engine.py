"""The upload engine end to end: backfill as a subprocess against the emulator over loopback."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path

from reka_sync.errors import JournalError
from reka_sync.journal import Journal
from reka_sync.lifecycle import State
from tests.conftest import (
    API_KEY,
    PYTHON,
    assert_uploaded_exactly_once,
    cli_env,
    digest_of,
    emulator_records,
    emulator_requests,
    engine_config,
    make_tree,
    report_json,
    run_backfill,
    set_faults,
    start_backfill,
    wait_for,
)


def test_200_files_each_uploaded_once_into_its_group(tmp_path: Path, media: Path, emu) -> None:
    expected = make_tree(media, 200)
    (media / "misc" / "notes.txt").write_text("not a video")
    (media / "misc" / "partial.mp4.part").write_bytes(b"x" * 10)
    (media / "@eaDir").mkdir()
    (media / "@eaDir" / "thumb.mp4").write_bytes(b"x" * 10)
    config = engine_config(tmp_path, media, emu.url)
    done = run_backfill(config, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["outcomes"] == {"done": 200}
    assert summary["groups"] == {
        "Camera back": 50,
        "Camera front": 50,
        "Inbox": 50,
        "Project alpha": 50,
    }
    assert_uploaded_exactly_once(emu.url, expected)
    again = run_backfill(config, "--json")
    assert again.returncode == 0, again.stderr
    assert len(emulator_records(emu.url)) == 200, "a second backfill uploaded something"


def test_dry_run_uploads_nothing_and_tells_the_plan(tmp_path: Path, media: Path, emu) -> None:
    expected = make_tree(media, 4)
    config = engine_config(tmp_path, media, emu.url)
    first = Path(next(iter(expected)))
    assert run_backfill(config, str(first)).returncode == 0
    (media / "misc" / "copy.mp4").write_bytes(first.read_bytes())
    done = run_backfill(config, "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    plan = {Path(item["path"]).name: item for item in json.loads(done.stdout)["files"]}
    assert plan[first.name]["status"] == "done already"
    assert plan["copy.mp4"]["status"] == f"duplicate of {first}"
    assert plan["clip0001.mp4"] == {
        "path": str(media / "cameras/back/2026/clip0001.mp4"),
        "group": "Camera back",
        "features": [],
        "status": "new",
        "rule": "groups.rules[0] match='cameras/{camera}/**'",
    }
    assert len(emulator_records(emu.url)) == 1


def test_duplicate_content_is_not_uploaded_again(tmp_path: Path, media: Path, emu) -> None:
    expected = make_tree(media, 6)
    source = Path(next(iter(expected)))  # in cameras/front: copies there share its group
    (source.parent / "copy-a.mp4").write_bytes(source.read_bytes())
    (source.parent / "sub").mkdir()
    (source.parent / "sub" / "copy-b.mp4").write_bytes(source.read_bytes())
    done = run_backfill(engine_config(tmp_path, media, emu.url), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["duplicates"] == 2 and summary["outcomes"]["done"] == 6
    assert_uploaded_exactly_once(emu.url, expected)


def test_with_faults_everything_lands_exactly_once_and_retry_after_is_honoured(
    tmp_path: Path, media: Path, emu
) -> None:
    expected = make_tree(media, 60, size=256 * 1024)
    set_faults(
        emu.url,
        [
            {"kind": "server_error", "rate": 0.2},
            {"kind": "drop_mid_body", "rate": 0.05},
            {"kind": "drop_after_store", "rate": 0.05},
            {"kind": "rate_limit", "rate": 0.05, "count": 6, "seconds": 2},
        ],
        seed=7,
    )
    done = run_backfill(engine_config(tmp_path, media, emu.url, max_attempts=30), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["outcomes"] == {"done": 60}
    set_faults(emu.url, [])
    assert_uploaded_exactly_once(emu.url, expected)
    log = emulator_requests(emu.url)
    limited = [r for r in log if r["status"] == 429]
    assert limited, "the fault plan produced no 429"
    assert any(r["status"] == 0 for r in log), "no connection was dropped"
    for hit in limited:
        kind_is_upload = (hit["method"], hit["path"]) == ("POST", "/v2/videos")
        early = [
            r
            for r in log
            if hit["done"] + 0.25 < r["at"] < hit["done"] + hit["retry_after"] - 0.05
            and ((r["method"], r["path"]) == ("POST", "/v2/videos")) == kind_is_upload
        ]
        assert not early, f"requests sent during a retry-after pause: {early[:3]}"


def test_sigkill_at_random_moments_never_duplicates(tmp_path: Path, media: Path, emu) -> None:
    expected = make_tree(media, 24, size=3 * 1024 * 1024)
    set_faults(emu.url, [{"kind": "latency", "rate": 0.3, "seconds": 0.2}], seed=3)
    config = engine_config(tmp_path, media, emu.url, workers=3)
    kill_backfills(config, 20, random.Random(11), 0.3, 2.0)
    final = run_backfill(config, "--json")
    assert final.returncode == 0, final.stdout + final.stderr
    assert json.loads(final.stdout)["outcomes"] == {"done": 24}
    set_faults(emu.url, [])
    assert_uploaded_exactly_once(emu.url, expected)


def test_a_file_changed_during_its_upload_is_not_done_with_old_content(
    tmp_path: Path, media: Path, emu
) -> None:
    path = media / "misc" / "growing.mp4"
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(32 * 1024 * 1024))
    set_faults(emu.url, [{"kind": "latency", "scope": "upload", "count": 1, "seconds": 2.0}])
    config = engine_config(tmp_path, media, emu.url)
    proc = start_backfill(config, "--json", capture=True)
    journal_path = tmp_path / "journal.db"

    def sending() -> bool:
        try:
            journal = Journal.open(journal_path, readonly=True)
        except JournalError:
            return False  # not created (or not migrated) yet
        try:
            job = journal.find(str(path))
            return bool(job and any(h.event == "note:sending" for h in journal.history(job.id)))
        finally:
            journal.close()

    wait_for(sending, timeout=60, message="the upload to start")
    with path.open("r+b") as handle:
        handle.write(os.urandom(1024 * 1024))  # rewrite the start in place
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    records = emulator_records(emu.url)
    assert [r["digest"] for r in records] == [digest_of(path)]
    journal = Journal.open(journal_path, readonly=True)
    job = journal.find(str(path))
    assert job is not None and job.state is State.DONE and job.digest == digest_of(path)
    assert "changed" in [h.event for h in journal.history(job.id)]


def test_group_quota_fails_only_the_affected_files(tmp_path: Path, media: Path) -> None:
    from reka_sync import emulator

    running = emulator.start(settings=emulator.Settings(group_cap=2, processing_delay=0.1))
    try:
        expected = make_tree(media, 8)
        done = run_backfill(engine_config(tmp_path, media, running.url), "--json")
        assert done.returncode == 1
        summary = json.loads(done.stdout)
        assert summary["outcomes"]["done"] + summary["failed"] == 8
        assert summary["failed"] >= 2
        for failure in summary["failures"]:
            assert "up to 2 video groups" in failure["error"]
        assert len(emulator_records(running.url)) == summary["outcomes"]["done"]
        del expected
    finally:
        running.stop()


def test_status_shows_a_rate_limit_pause(tmp_path: Path, media: Path) -> None:
    from reka_sync import emulator

    running = emulator.start(settings=emulator.Settings(upload_quota=1, processing_delay=0.1))
    try:
        make_tree(media, 3)
        config = engine_config(tmp_path, media, running.url)
        proc = start_backfill(config)
        try:

            def paused() -> dict | None:
                report = report_json("status", config)
                return report if report and report["pauses"] else None

            report = wait_for(paused, timeout=60, message="a pause in status")
            pause = report["pauses"][0]
            assert pause["kind"] == "uploads" and pause["seconds_left"] > 3600
            assert "429" in pause["reason"]
            assert report["counts"]["failed"] == 0, "a quota pause must not spend attempts"
            assert len(emulator_records(running.url)) == 1
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 1  # interrupted backfills say so
    finally:
        running.stop()


def test_the_key_never_reaches_output_logs_or_the_journal(tmp_path: Path, media: Path, emu) -> None:
    make_tree(media, 6)
    set_faults(
        emu.url,
        [{"kind": "server_error", "rate": 0.3}, {"kind": "drop_after_store", "rate": 0.2}],
        seed=5,
    )
    config = engine_config(tmp_path, media, emu.url)
    done = run_backfill(config, "--log-level", "debug", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    assert "upload step failed" in done.stderr, "the faults produced no log lines to check"
    status = subprocess.run(
        [PYTHON, "-m", "reka_sync", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        env=cli_env(REKA_API_KEY=API_KEY),
        check=False,
    )
    for text in (done.stdout, done.stderr, status.stdout, status.stderr):
        assert API_KEY not in text
    for path in tmp_path.glob("journal.db*"):
        assert API_KEY.encode() not in path.read_bytes()


def test_ten_sigkills_during_a_5000_file_backfill_lose_and_duplicate_nothing(
    tmp_path: Path, media: Path, emu
) -> None:
    """The group commit keeps the no-duplicate protocol: a send is durable before any byte
    goes out, whatever else was in flight when the process died."""
    expected = make_tree(media, 5000, size=1024)
    config = engine_config(tmp_path, media, emu.url, workers=4)
    killed = kill_backfills(config, 10, random.Random(7), 1.0, 2.5)
    stored_before_the_last_run = len(emulator_records(emu.url))
    assert killed == 10, "a backfill finished before it could be killed"
    assert 0 < stored_before_the_last_run < len(expected), "the kills did not hit the uploads"
    final = run_backfill(config, "--json", timeout=600)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    assert json.loads(final.stdout)["outcomes"] == {"done": 5000}
    assert_uploaded_exactly_once(emu.url, expected)


def kill_backfills(
    config: Path, runs: int, rng: random.Random, shortest: float, longest: float
) -> int:
    """Start backfill `runs` times, each SIGKILLed after a random while unless it ends
    first; return how many were killed."""
    killed = 0
    for _ in range(runs):
        proc = start_backfill(config)
        try:
            proc.wait(timeout=rng.uniform(shortest, longest))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            killed += 1
    return killed
