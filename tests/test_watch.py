"""Watch mode: `reka-sync run` as a subprocess, real folders, real observers, the emulator."""

from __future__ import annotations

import os
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from reka_sync.emulator.demo import tiny_mp4
from tests.conftest import (
    API_KEY,
    BindMount,
    ServiceProcess,
    assert_uploaded_exactly_once,
    emulator_records,
    emulator_requests,
    engine_config,
    report_json,
    wait_for,
)


@pytest.fixture
def watch_config(tmp_path: Path, media: Path, emu: Any) -> Path:
    return engine_config(tmp_path, media, emu.url, settle_seconds=1)


@pytest.fixture
def service(watch_config: Path) -> Iterator[ServiceProcess]:
    running = ServiceProcess(watch_config)
    yield running
    if running.proc.poll() is None:
        running.stop()


def write_slowly(path: Path, total: int, seconds: float) -> None:
    """Write `total` bytes over about `seconds`, in small pieces."""
    piece = 64 * 1024
    pause = seconds / (total / piece)
    done = threading.Event()
    with path.open("wb") as handle:
        for _ in range(total // piece):
            handle.write(os.urandom(piece))
            handle.flush()
            done.wait(pause)  # the writer's own pace, not a wait for the daemon


def test_files_arriving_every_way_are_uploaded_once_and_complete(
    tmp_path: Path, media: Path, emu: Any, service: ServiceProcess
) -> None:
    expected: dict[str, str] = {}
    copied = media / "cameras" / "front" / "copied.mp4"
    copied.parent.mkdir(parents=True)
    copied.write_bytes(os.urandom(300_000))
    expected[str(copied)] = "Camera front"
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(os.urandom(200_000))
    moved = media / "moved-in.mp4"
    os.rename(outside, moved)
    expected[str(moved)] = "Inbox"
    partial = media / "projects" / "alpha" / "download.mp4.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(os.urandom(250_000))
    final = partial.with_name("download.mp4")
    os.rename(partial, final)
    expected[str(final)] = "Project alpha"
    nested = media / "cameras" / "back" / "2026" / "11" / "23"
    nested.mkdir(parents=True)
    for index in range(3):
        (nested / f"n{index}.mp4").write_bytes(os.urandom(100_000 + index))
        expected[str(nested / f"n{index}.mp4")] = "Camera back"
    slow = media / "slow.mp4"
    write_slowly(slow, 20 * 1024 * 1024, seconds=20.0)  # 1 MiB/s, never quiet for 1 s
    expected[str(slow)] = "Inbox"
    wait_for(
        lambda: len(emulator_records(emu.url)) >= len(expected),
        timeout=90,
        message="every file to be uploaded",
    )
    assert service.stop() == 0
    assert_uploaded_exactly_once(emu.url, expected)
    accepted = [
        r
        for r in emulator_requests(emu.url)
        if (r["method"], r["path"], r["status"]) == ("POST", "/v2/videos", 202)
    ]
    assert len(accepted) == len(expected), "a file was sent before it was complete"


BURST = 3000


def test_a_burst_of_files_misses_none(media: Path, emu: Any, service: ServiceProcess) -> None:
    folder = media / "burst"
    folder.mkdir()
    expected = {}
    for index in range(BURST):
        path = folder / f"b{index:04d}.mp4"
        path.write_bytes(index.to_bytes(4, "little") + os.urandom(2000))
        expected[str(path)] = "Inbox"
    wait_for(
        lambda: len(emulator_records(emu.url)) >= BURST, timeout=240, message=f"{BURST} uploads"
    )
    assert service.stop() == 0
    assert_uploaded_exactly_once(emu.url, expected)


def test_files_that_arrive_while_stopped_are_found_at_start(
    media: Path, emu: Any, watch_config: Path
) -> None:
    first = ServiceProcess(watch_config)
    (media / "a.mp4").write_bytes(os.urandom(50_000))
    wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=60, message="a.mp4")
    assert first.stop() == 0
    (media / "b.mp4").write_bytes(os.urandom(60_000))  # no daemon, no event
    second = ServiceProcess(watch_config)
    try:
        wait_for(lambda: len(emulator_records(emu.url)) == 2, timeout=60, message="b.mp4")
    finally:
        assert second.stop() == 0
    assert_uploaded_exactly_once(
        emu.url, {str(media / "a.mp4"): "Inbox", str(media / "b.mp4"): "Inbox"}
    )
    # One startup scan each: a root is reported once, no scan ran beside another.
    assert sum(line.get("event") == "root available" for line in first.lines) == 1
    for service in (first, second):
        overlaps = [line for line in service.lines if "running instances" in str(line)]
        assert not overlaps, overlaps


def test_a_done_file_moved_to_another_rule_is_regrouped_not_reuploaded(
    media: Path, emu: Any, service: ServiceProcess
) -> None:
    source = media / "misc" / "clip.mp4"
    source.parent.mkdir(parents=True)
    source.write_bytes(os.urandom(120_000))
    wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=60, message="the upload")
    target = media / "cameras" / "garden" / "clip.mp4"
    target.parent.mkdir(parents=True)
    wait_for(lambda: stored_on_emulator(emu.url), timeout=60, message="the video to be stored")
    os.rename(source, target)
    wait_for(
        lambda: group_of_only_video(emu.url) == "Camera garden",
        timeout=60,
        message="the video to move to the new rule's group",
    )
    assert service.stop() == 0
    assert len(emulator_records(emu.url)) == 1


def stored_on_emulator(url: str) -> bool:
    return all(r["status"] == "uploaded" for r in emulator_records(url))


def group_of_only_video(url: str) -> str | None:
    import httpx

    [record] = emulator_records(url)
    groups = {
        g["group_id"]: g["name"]
        for g in httpx.get(f"{url}/v2/video-groups", headers={"X-Api-Key": API_KEY}).json()[
            "results"
        ]
    }
    return groups.get(record["group_id"])


def test_an_unmounted_root_is_unavailable_not_missing(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url, settle_seconds=1, rescan_interval=0.5)
    (media / "kept.mp4").write_bytes(os.urandom(80_000))
    service = ServiceProcess(config)
    try:
        wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=60, message="kept.mp4")
        away = tmp_path / "unmounted"
        os.rename(media, away)  # a renamed folder stands in for an unmounted share

        def status() -> dict[str, Any]:
            return report_json("status", config) or {}

        report = wait_for(
            lambda: (r := status()).get("unavailable_roots") and r,
            timeout=60,
            message="the root to be reported unavailable",
        )
        assert report["unavailable_roots"][0]["root"] == str(media)
        assert report["counts"]["missing"] == 0
        os.rename(away, media)
        wait_for(
            lambda: status().get("unavailable_roots") == [],
            timeout=60,
            message="the root to be available again",
        )
        (media / "after.mp4").write_bytes(os.urandom(90_000))
        wait_for(lambda: len(emulator_records(emu.url)) == 2, timeout=60, message="after.mp4")
    finally:
        assert service.stop() == 0
    assert status()["counts"]["missing"] == 0
    assert_uploaded_exactly_once(
        emu.url, {str(media / "kept.mp4"): "Inbox", str(media / "after.mp4"): "Inbox"}
    )


def test_a_bind_mounted_root_unmounted_and_remounted_loses_nothing(
    tmp_path: Path, emu: Any, bind_mount: Callable[[Path, Path], BindMount]
) -> None:
    share, media, other = tmp_path / "share", tmp_path / "media", tmp_path / "other"
    for folder in (share, media, other):
        folder.mkdir()
    whole = tiny_mp4(300_000, 9)
    moov_at = whole.rindex(b"moov") - 4
    (share / "done.mp4").write_bytes(os.urandom(80_000))
    (share / "recording.mp4").write_bytes(whole[:moov_at])  # stays pending: no index yet
    share_mount = bind_mount(share, media)
    config = engine_config(tmp_path, media, emu.url, settle_seconds=0.5, rescan_interval=0.5)
    data = tomllib.loads(config.read_text())
    data["watch"]["roots"].append(str(other))
    config.write_text(tomli_w.dumps(data))
    service = ServiceProcess(config)

    def status() -> dict[str, Any]:
        return report_json("status", config) or {}

    def state(path: Path) -> str | None:
        return (report_json("show", config, str(path)) or {}).get("state")

    wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=60, message="done.mp4")
    assert state(media / "recording.mp4") == "discovered"
    share_mount.unmount()  # media is an empty folder again
    report = wait_for(
        lambda: (r := status()).get("unavailable_roots") and r,
        timeout=60,
        message="the unmounted root to be reported unavailable",
    )
    assert [r["root"] for r in report["unavailable_roots"]] == [str(media)]
    (other / "meanwhile.mp4").write_bytes(os.urandom(70_000))  # ticks go on meanwhile
    wait_for(lambda: len(emulator_records(emu.url)) == 2, timeout=60, message="meanwhile")
    assert status()["counts"]["missing"] == 0
    assert state(media / "recording.mp4") == "discovered"
    share_mount.mount()
    wait_for(lambda: status().get("unavailable_roots") == [], timeout=60, message="back")
    with (media / "recording.mp4").open("ab") as handle:
        handle.write(whole[moov_at:])
    wait_for(lambda: state(media / "recording.mp4") == "done", timeout=60, message="upload")
    assert service.stop() == 0
    assert service.logged("root unavailable (unmounted?); its files wait")
    errors = [line for line in service.lines if line.get("level") in ("error", "critical")]
    assert errors == []
    assert status()["counts"]["missing"] == 0
    assert_uploaded_exactly_once(
        emu.url,
        {
            str(media / "done.mp4"): "Inbox",
            str(media / "recording.mp4"): "Inbox",
            str(other / "meanwhile.mp4"): "Inbox",
        },
    )


def test_a_file_deleted_before_upload_is_missing_and_nothing_is_sent(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url, settle_seconds=3)
    service = ServiceProcess(config)
    doomed = media / "doomed.mp4"
    try:
        doomed.write_bytes(os.urandom(70_000))

        def state() -> str | None:
            report = report_json("show", config, str(doomed))
            return report["state"] if report else None

        wait_for(lambda: state() == "discovered", timeout=30, message="the file to be seen")
        doomed.unlink()
        (media / "kept.mp4").write_bytes(os.urandom(60_000))
        wait_for(lambda: state() == "missing", timeout=30, message="the file to be missing")
        wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=30, message="kept.mp4")
    finally:
        assert service.stop() == 0
    assert_uploaded_exactly_once(emu.url, {str(media / "kept.mp4"): "Inbox"})


def test_an_mp4_waits_for_its_index_and_one_cut_short_fails(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url, settle_seconds=0.5)
    data = tomllib.loads(config.read_text())
    data["watch"]["mp4_index_wait"] = 4
    config.write_text(tomli_w.dumps(data))
    whole = tiny_mp4(300_000, 7)
    recording, cut = media / "recording.mp4", media / "cut.mp4"
    moov_at = whole.rindex(b"moov") - 4
    recording.write_bytes(whole[:moov_at])  # media data written, the index not yet
    cut.write_bytes(tiny_mp4(200_000, 8)[:150_000])
    service = ServiceProcess(config)
    try:

        def shown(path: Path) -> dict[str, Any]:
            return report_json("show", config, str(path)) or {}

        waiting = "waiting for the MP4/MOV index (moov box): still being written?"
        wait_for(
            lambda: shown(recording).get("last_error") == waiting,
            timeout=30,
            message="the recording to wait for its index",
        )
        assert emulator_records(emu.url) == []
        with recording.open("ab") as handle:
            handle.write(whole[moov_at:])  # the recorder finishes
        wait_for(lambda: shown(recording).get("state") == "done", timeout=60, message="upload")
        failed = wait_for(
            lambda: (s := shown(cut)).get("state") == "failed" and s, timeout=30, message="cut"
        )
        assert "without its index" in failed["last_error"]
    finally:
        assert service.stop() == 0
    assert_uploaded_exactly_once(emu.url, {str(recording): "Inbox"})


def test_a_root_that_appears_after_start_gets_its_watch(tmp_path: Path, emu: Any) -> None:
    share = tmp_path / "share"  # not there yet: a share mounted after the daemon started
    config = engine_config(tmp_path, share, emu.url, settle_seconds=0.5, rescan_interval=3600)
    service = ServiceProcess(config)
    try:

        def unavailable() -> list[Any]:
            return list((report_json("status", config) or {}).get("unavailable_roots", [None]))

        wait_for(lambda: len(unavailable()) == 1, timeout=30, message="the root to be missing")
        share.mkdir()
        wait_for(lambda: service.logged("root available"), timeout=30, message="the root back")
        wait_for(lambda: unavailable() == [], timeout=30, message="status to say so")
        arrived = share / "arrived.mp4"
        arrived.write_bytes(os.urandom(30_000))  # the next rescan is an hour away: events only
        wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=30, message="the upload")
    finally:
        assert service.stop() == 0
    assert_uploaded_exactly_once(emu.url, {str(arrived): "Inbox"})
