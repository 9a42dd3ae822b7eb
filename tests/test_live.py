"""Real media trees: live recordings made by ffmpeg, broken files, links and special files.

The service and backfill run as subprocesses against the emulator over loopback; the
videos are recorded by a real ffmpeg while reka-sync watches the folder.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from tests.conftest import (
    ServiceProcess,
    assert_uploaded_exactly_once,
    digest_of,
    emulator_records,
    emulator_requests,
    engine_config,
    make_tree,
    record,
    run_backfill,
    wait_for,
    with_settings,
)

LIVE = ("plain.mp4", "frag.mp4", "live.mkv", "live.ts", "clip.mov")


def test_live_recordings_are_uploaded_once_whole_after_their_writer_closes(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url, settle_seconds=2)
    service = ServiceProcess(config)
    try:
        recorders = {name: record(media / name, 8) for name in LIVE}
        closed = {}
        for name, proc in recorders.items():
            assert proc.wait(timeout=120) == 0
            closed[name] = time.time()
        wait_for(
            lambda: (
                len(emulator_records(emu.url)) == len(LIVE)
                and all(r["status"] == "uploaded" for r in emulator_records(emu.url))
            ),
            timeout=120,
            message="every recording to be stored",
        )
    finally:
        assert service.stop() == 0
    records = assert_uploaded_exactly_once(emu.url, {str(media / n): "Inbox" for n in LIVE})
    assert {r["digest"] for r in records} == {digest_of(media / n) for n in LIVE}
    posts = [
        r for r in emulator_requests(emu.url) if (r["method"], r["path"]) == ("POST", "/v2/videos")
    ]
    assert len(posts) == len(LIVE), "a partial recording was sent (and replaced)"
    assert all(p["at"] >= min(closed.values()) - 1.0 for p in posts), "sent before a writer closed"
    assert not [r for r in emulator_requests(emu.url) if r["method"] == "DELETE"]


def test_a_killed_recording_is_never_sent_half(tmp_path: Path, media: Path, emu: Any) -> None:
    config = engine_config(tmp_path, media, emu.url, settle_seconds=1)
    with_settings(config, "watch", mp4_index_wait=3)
    service = ServiceProcess(config)
    try:
        proc = record(media / "plain.mp4", 30)
        wait_for(lambda: size_of(media / "plain.mp4") > 0, timeout=60, message="bytes")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        report = wait_for(
            lambda: (r := _show(config, media / "plain.mp4")) and r["state"] == "failed" and r,
            timeout=60,
            message="the cut recording to be failed",
        )
        assert "cut short" in report["last_error"]
    finally:
        assert service.stop() == 0
    assert emulator_records(emu.url) == []


def size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _show(config: Path, path: Path) -> dict[str, Any] | None:
    from tests.conftest import report_json

    report = report_json("show", config, str(path))
    return report


def test_backfill_reports_broken_files_at_once_and_uploads_the_rest(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    expected = make_tree(media, 50)
    broken = media / "broken"
    broken.mkdir()
    (broken / "empty.mp4").write_bytes(b"")
    os.mkfifo(broken / "pipe.mp4")
    proc = record(broken / "cut.mp4", 30, live=False)
    wait_for(lambda: size_of(broken / "cut.mp4") > 300_000, timeout=60, message="bytes")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    old = time.time() - 3600
    os.utime(broken / "cut.mp4", (old, old))
    os.utime(broken / "empty.mp4", (old, old))
    started = time.monotonic()
    done = run_backfill(engine_config(tmp_path, media, emu.url, settle_seconds=2), "--json")
    took = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr  # the cut file failed
    summary = json.loads(done.stdout)
    assert summary["outcomes"]["done"] == 50
    assert [f["path"] for f in summary["failures"]] == [str(broken / "cut.mp4")]
    assert "cut short" in summary["failures"][0]["error"]
    assert [i["path"] for i in summary["left"]] == [str(broken / "empty.mp4")]
    assert "empty" in summary["left"][0]["reason"]
    assert [i["path"] for i in summary["skipped"]] == [str(broken / "pipe.mp4")]
    assert "FIFO" in summary["skipped"][0]["reason"]
    assert took < 60, f"backfill took {took:.0f}s over three broken files"
    assert_uploaded_exactly_once(emu.url, expected)


def test_links_never_send_anything_from_outside_the_roots(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(os.urandom(40_000))
    inside = media / "real.mp4"
    inside.write_bytes(os.urandom(50_000))
    (media / "to-secret.mp4").symlink_to(outside / "secret.mp4")
    (media / "to-private").symlink_to(outside)
    (media / "loop").symlink_to(media)
    (media / "to-real.mp4").symlink_to(inside)
    config = engine_config(tmp_path, media, emu.url)
    first = run_backfill(config, "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    skipped = {Path(i["path"]).name: i["reason"] for i in json.loads(first.stdout)["skipped"]}
    assert set(skipped) == {"to-secret.mp4", "to-real.mp4"}
    assert all("symbolic link" in reason for reason in skipped.values())
    assert [r["digest"] for r in emulator_records(emu.url)] == [digest_of(inside)]

    with_settings(config, "watch", follow_symlinks=True)
    second = run_backfill(config, "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    digests = [r["digest"] for r in emulator_records(emu.url)]
    assert digest_of(outside / "secret.mp4") not in digests
    assert digests == [digest_of(inside)]  # the link inside is a duplicate of its target


def test_a_changed_file_replaces_its_video_and_show_says_so(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    clip = media / "clip.mp4"
    clip.write_bytes(os.urandom(80_000))
    config = engine_config(tmp_path, media, emu.url, settle_seconds=1)
    service = ServiceProcess(config)
    try:
        first = digest_of(clip)
        wait_for(lambda: _state(config, clip) == "done", timeout=60, message="the first upload")
        clip.write_bytes(os.urandom(90_000))  # re-exported in place
        second = digest_of(clip)
        wait_for(
            lambda: [r["digest"] for r in emulator_records(emu.url)] == [second],
            timeout=60,
            message="the new content to replace the old video",
        )
        report = wait_for(lambda: _show(config, clip), timeout=30, message="show")
    finally:
        assert service.stop() == 0
    assert first != second and report["state"] == "done" and report["attempts"] == 1
    [old] = report["superseded"]
    assert old["outcome"] == "deleted" and old["video_id"] != report["video_id"]


def test_on_change_keep_keeps_both_videos(tmp_path: Path, media: Path, emu: Any) -> None:
    clip = media / "clip.mp4"
    clip.write_bytes(os.urandom(80_000))
    config = with_settings(engine_config(tmp_path, media, emu.url), "watch", on_change="keep")
    assert run_backfill(config).returncode == 0
    clip.write_bytes(os.urandom(70_000))
    assert run_backfill(config).returncode == 0
    assert len(emulator_records(emu.url)) == 2
    report = _show(config, clip)
    assert report is not None and report["superseded"][0]["outcome"] == "kept"


def _state(config: Path, path: Path) -> str | None:
    report = _show(config, path)
    return report["state"] if report else None


def test_backfill_over_finished_recordings_uploads_each_once_whole(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    names = ("plain.mp4", "fast.mp4", "frag.mp4", "live.mkv", "live.ts", "clip.mov")
    procs = [record(media / name, 2, live=False) for name in names]
    assert all(proc.wait(timeout=120) == 0 for proc in procs)
    old = time.time() - 600  # a finished tree: nothing has touched it for a while
    for name in names:
        os.utime(media / name, (old, old))
    done = run_backfill(engine_config(tmp_path, media, emu.url, settle_seconds=2), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["outcomes"] == {"done": len(names)}
    assert_uploaded_exactly_once(emu.url, {str(media / n): "Inbox" for n in names})
