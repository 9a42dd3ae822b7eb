"""A file's life after upload: videos removed remotely, files deleted locally. The service
runs as a subprocess against the emulator; the unmounted root runs the engine in-process
with an injected clock (two hours pass in a test)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx

from reka_sync.journal import Journal
from reka_sync.lifecycle import State
from tests.conftest import (
    API_KEY,
    ServiceProcess,
    emulator_records,
    engine_config,
    make_tree,
    reka_ok,
    report_json,
    run_backfill,
    wait_for,
    with_settings,
)


def service_config(tmp_path: Path, media: Path, url: str, **watch: Any) -> Path:
    config = engine_config(tmp_path, media, url, rescan_interval=1)
    return with_settings(config, "watch", remote_check_interval=1, **watch)


def counts(tmp_path: Path) -> dict[State, int]:
    journal = Journal.open(tmp_path / "journal.db", readonly=True)
    try:
        return journal.counts_from_rows()
    finally:
        journal.close()


def delete_remotely(url: str, video_ids: list[str]) -> None:
    with httpx.Client(base_url=url, headers={"X-Api-Key": API_KEY}) as api:
        for video_id in video_ids:
            assert api.delete(f"/v2/videos/{video_id}").status_code == 200


def test_videos_deleted_in_reka_are_found_and_sent_again_only_when_asked(
    tmp_path: Path, media: Path, emu
) -> None:
    make_tree(media, 30, size=4 * 1024)
    config = service_config(tmp_path, media, emu.url)
    assert run_backfill(config).returncode == 0
    delete_remotely(emu.url, [r["video_id"] for r in emulator_records(emu.url)[:20]])
    service = ServiceProcess(config)
    wait_for(lambda: counts(tmp_path)[State.REMOVED] == 20, message="the remote check")
    status = report_json("status", config)
    assert status is not None and status["counts"]["removed"] == 20
    assert len(emulator_records(emu.url)) == 10  # nothing uploaded again by default
    assert service.stop() == 0
    plan = subprocess_json(config, "reconcile", "--json")
    assert len(plan["missing_remotely"]) == 20
    again = subprocess_json(config, "reconcile", "--json", "--apply", "--reupload-missing")
    assert again["changed"]["requeued"] == 20
    assert run_backfill(config).returncode == 0
    assert len(emulator_records(emu.url)) == 30


def test_with_reupload_removed_the_service_sends_them_again_itself(
    tmp_path: Path, media: Path, emu
) -> None:
    make_tree(media, 5, size=4 * 1024)
    config = with_settings(
        service_config(tmp_path, media, emu.url), "upload", reupload_removed=True
    )
    assert run_backfill(config).returncode == 0
    delete_remotely(emu.url, [r["video_id"] for r in emulator_records(emu.url)[:2]])
    service = ServiceProcess(config)
    wait_for(lambda: len(emulator_records(emu.url)) == 5, timeout=60, message="re-uploads")
    wait_for(lambda: counts(tmp_path)[State.DONE] == 5, message="all done again")
    assert service.stop() == 0


def test_a_deleted_folder_deletes_fifty_videos_then_stops_until_resumed(
    tmp_path: Path, media: Path, emu
) -> None:
    make_tree(media / "gone", 100, size=1024)
    make_tree(media / "stays", 4, size=1024)
    config = service_config(tmp_path, media, emu.url, on_delete="delete", delete_grace=0)
    assert run_backfill(config).returncode == 0
    service = ServiceProcess(config)
    shutil.rmtree(media / "gone")
    wait_for(lambda: counts(tmp_path)[State.DELETED] == 100, message="the rescan")

    def stopped() -> bool:
        status = report_json("status", config)
        return status is not None and any(p["kind"] == "deletes" for p in status["pauses"])

    wait_for(stopped, timeout=60, message="deletions to stop at the cap")
    assert len(emulator_records(emu.url)) == 104 - 50
    assert "PAUSED deletes until lifted: reka-sync deleted 50 videos" in reka_ok(config, "status")
    done = reka_ok(config, "resume-deletes")
    assert "deletions resumed" in done
    wait_for(lambda: len(emulator_records(emu.url)) == 4, timeout=60, message="the rest deleted")
    assert service.stop() == 0
    assert {Path(r["video_name"]).parent for r in emulator_records(emu.url)} == {Path(".")}


def test_a_file_moved_within_the_roots_keeps_its_video(tmp_path: Path, media: Path, emu) -> None:
    (original,) = make_tree(media, 1, size=4 * 1024)
    config = service_config(tmp_path, media, emu.url, on_delete="delete", delete_grace=0)
    assert run_backfill(config).returncode == 0
    service = ServiceProcess(config)
    moved = media / "projects" / "alpha" / "moved.mp4"
    moved.parent.mkdir(parents=True)
    Path(original).rename(moved)
    journal = Journal.open(tmp_path / "journal.db", readonly=True)
    try:

        def settled() -> bool:
            old, new = journal.find(original), journal.find(str(moved))
            return bool(old and new and old.state is State.DELETED and new.state is State.SKIPPED)

        wait_for(settled, timeout=60, message="the move to be seen")

        def kept() -> bool:
            history = journal.history(journal.find(original).id)  # type: ignore[union-attr]
            return any(h.event == "note:kept" for h in history)

        wait_for(kept, timeout=30, message="the deleted path's video to be looked at")
    finally:
        journal.close()
    assert service.stop() == 0
    assert len(emulator_records(emu.url)) == 1  # the video stays: the moved file has it


def test_files_moved_while_the_service_was_stopped_are_not_uploaded_again(
    tmp_path: Path, media: Path, emu
) -> None:
    """The startup rescan sees every old path gone before the new paths settle."""
    expected = make_tree(media / "inbox", 6, size=4 * 1024)
    config = service_config(
        tmp_path, media, emu.url, on_delete="delete", delete_grace=0, settle_seconds=2
    )
    assert run_backfill(config).returncode == 0
    archive = media / "archive"
    archive.mkdir()
    for path in expected:
        Path(path).rename(archive / Path(path).name)
    service = ServiceProcess(config)
    wait_for(
        lambda: counts(tmp_path)[State.SKIPPED] == 6 and counts(tmp_path)[State.DELETED] == 6,
        timeout=60,
        message="the moves to be seen",
    )
    assert service.stop() == 0
    assert len(emulator_records(emu.url)) == 6  # nothing sent again, no video deleted


def test_an_unmounted_root_deletes_nothing_for_two_hours(
    tmp_path: Path, media: Path, emu, bind_mount
) -> None:
    from reka_sync.config import load_config
    from reka_sync.credentials import Secret
    from reka_sync.scheduler import Engine

    share = tmp_path / "share"
    make_tree(share, 6, size=1024)
    mount = bind_mount(share, media)
    config_path = service_config(tmp_path, media, emu.url, on_delete="delete", delete_grace="1h")
    assert run_backfill(config_path).returncode == 0
    config = load_config(config_path)
    journal = Journal.open(config.journal.path)
    clock = [1_000_000.0]
    engine = Engine(config, journal, Secret(API_KEY), clock=lambda: clock[0])
    try:
        (share / "misc" / "clip0003.mp4").unlink()  # deleted while mounted: grace starts
        engine.rescan(clock[0])
        assert journal.counts()[State.DELETED] == 1
        mount.unmount()
        for _ in range(5):  # two hours of rescans and looks, the share away
            clock[0] += 1800
            engine.rescan(clock[0])
            engine.poll(clock[0])
            assert engine.wait_idle(30)
        assert journal.counts()[State.DELETED] == 1  # nothing else taken for deleted
        assert len(emulator_records(emu.url)) == 6  # and no video deleted
        (deleted,) = journal.jobs([State.DELETED])
        kept = [h for h in journal.history(deleted.id) if h.event == "note:kept"]
        assert kept and "unavailable" in kept[-1].detail["reason"]  # its grace ran out meanwhile
    finally:
        engine.stop()
        journal.close()


def subprocess_json(config: Path, *args: str) -> dict[str, Any]:
    import json

    return dict(json.loads(reka_ok(config, *args)))
