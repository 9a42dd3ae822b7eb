"""Recovery: the journal and the key's videos rebuilt from each other. Backfill and
reconcile run as subprocesses against the emulator over loopback, with faults on."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx

from reka_sync.markers import parse, render
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
    reka_ok,
    run_backfill,
    set_faults,
    with_settings,
)

FAULTS = [
    {"kind": "server_error", "rate": 0.05, "scope": "all"},
    {"kind": "drop_after_store", "rate": 0.05},
]


def reconcile(config: Path, *args: str) -> dict[str, Any]:
    return dict(json.loads(reka_ok(config, "reconcile", "--json", *args)))


def forget_journal(tmp_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"journal.db{suffix}").unlink(missing_ok=True)


def logged(stderr: str, event_start: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if str(line.get("event", "")).startswith(event_start)]


def test_every_upload_carries_a_marker_that_names_its_file(
    tmp_path: Path, media: Path, emu
) -> None:
    (path,) = make_tree(media, 1, size=64 * 1024)
    config = with_settings(engine_config(tmp_path, media, emu.url), "journal", instance="nas-1")
    assert run_backfill(config).returncode == 0
    (record,) = emulator_records(emu.url)
    marker = parse(record["description"])
    assert marker is not None and marker.complete
    stat = Path(path).stat()
    assert (marker.instance, marker.size, marker.mtime_ns) == (
        "nas-1",
        stat.st_size,
        stat.st_mtime_ns,
    )
    assert marker.digest == digest_of(Path(path)) == record["digest"]
    assert marker.rel_path == "cameras/front/clip0000.mp4"


def test_a_lost_journal_uploads_nothing_again_and_keeps_the_groups(
    tmp_path: Path, media: Path, emu
) -> None:
    expected = make_tree(media, 200, size=4 * 1024)
    config = engine_config(tmp_path, media, emu.url)
    assert run_backfill(config).returncode == 0
    forget_journal(tmp_path)
    set_faults(emu.url, FAULTS, seed=3)
    again = run_backfill(config, "--json", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["outcomes"] == {"done": 200}
    said = logged(again.stderr, "reconcile: adopted")
    assert said and said[0]["adopted"] == 200, again.stderr[-2000:]
    set_faults(emu.url, [])
    assert_uploaded_exactly_once(emu.url, expected)


def test_a_restored_backup_adopts_what_was_done_since_it(tmp_path: Path, media: Path, emu) -> None:
    # under old/ and new/ no rule matches: every file goes to the default group
    expected = dict.fromkeys(make_tree(media / "old", 100, size=4 * 1024), "Inbox")
    config = engine_config(tmp_path, media, emu.url)
    assert run_backfill(config).returncode == 0
    backup = tmp_path / "backup.db"
    with sqlite3.connect(tmp_path / "journal.db") as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    expected.update(dict.fromkeys(make_tree(media / "new", 100, size=4 * 1024), "Inbox"))
    assert run_backfill(config).returncode == 0
    assert len(emulator_records(emu.url)) == 200
    forget_journal(tmp_path)
    backup.rename(tmp_path / "journal.db")  # a week-old copy comes back
    again = run_backfill(config, "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert logged(again.stderr, "reconcile: adopted")[0]["adopted"] == 100
    assert json.loads(again.stdout)["outcomes"] == {"done": 200}
    assert_uploaded_exactly_once(emu.url, expected)


def test_reconcile_classes_every_video_and_deletes_only_our_duplicates(
    tmp_path: Path, media: Path, emu
) -> None:
    expected = make_tree(media, 20, size=4 * 1024)
    config = engine_config(tmp_path, media, emu.url)
    assert run_backfill(config).returncode == 0
    records = emulator_records(emu.url)
    api = httpx.Client(base_url=emu.url, headers={"X-Api-Key": API_KEY})
    for record in records[:10]:  # the same content sent again, marker and all
        path = next(p for p in expected if Path(p).name == record["video_name"])
        upload(api, Path(path), record["video_name"], record["description"])
    first = Path(next(iter(expected)))
    upload(api, first, "someone else's", "a holiday clip")
    mine = parse(records[0]["description"])
    assert mine is not None
    theirs = dataclasses.replace(mine, key="0" * 32, instance="another-host")
    upload(api, first, "another host's", render(theirs))
    gone = records[10]["video_id"]
    assert api.delete(f"/v2/videos/{gone}").status_code == 200

    plan = reconcile(config)
    assert plan["known"] == 19
    assert [len(d["delete"]) for d in plan["duplicates"]] == [1] * 10
    assert [m["video_id"] for m in plan["missing_remotely"]] == [gone]
    assert plan["foreign"] == 2 and plan["adopted"] == [] and plan["changed"] is None
    assert len(emulator_records(emu.url)) == 31  # a dry run changes nothing

    done = reconcile(config, "--apply", "--delete-duplicates", "--reupload-missing")
    assert done["changed"] == {"adopted": 0, "removed": 0, "requeued": 1, "deleted": 10}
    left = emulator_records(emu.url)
    assert len(left) == 21  # 19 of ours, the 2 foreign ones untouched
    assert {r["video_name"] for r in left} >= {"someone else's", "another host's"}
    assert run_backfill(config).returncode == 0  # the missing one goes up again
    ours = [r for r in emulator_records(emu.url) if r["video_name"].startswith("clip")]
    assert sorted(r["digest"] for r in ours) == sorted(digest_of(Path(p)) for p in expected)


def upload(api: httpx.Client, path: Path, name: str, description: str) -> None:
    with path.open("rb") as handle:
        response = api.post(
            "/v2/videos",
            files={"file": (path.name, handle, "video/mp4")},
            data={"video_name": name, "description": description},
        )
    assert response.status_code == 202, response.text


def test_a_damaged_journal_moved_aside_is_rebuilt_by_reconcile(
    tmp_path: Path, media: Path, emu
) -> None:
    expected = make_tree(media, 30, size=4 * 1024)
    config = engine_config(tmp_path, media, emu.url)
    assert run_backfill(config).returncode == 0
    journal = tmp_path / "journal.db"
    with sqlite3.connect(journal) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with journal.open("r+b") as handle:  # spoil every page but the header
        for offset in range(4096, journal.stat().st_size, 4096):
            handle.seek(offset)
            handle.write(os.urandom(4096))
    stopped = run_backfill(config)
    assert stopped.returncode == 1 and "reconcile" in stopped.stderr, stopped.stderr
    checked = subprocess.run(
        [PYTHON, "-m", "reka_sync", "journal", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    journal.rename(tmp_path / "journal.db.damaged")  # what the message says to do
    forget_journal(tmp_path)
    rebuilt = reconcile(config, "--apply")
    assert len(rebuilt["adopted"]) == 30 and rebuilt["changed"]["adopted"] == 30
    again = run_backfill(config, "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert not logged(again.stderr, "reconcile: adopted")  # nothing left to adopt
    assert json.loads(again.stdout)["outcomes"] == {"done": 30}
    assert_uploaded_exactly_once(emu.url, expected)


def test_a_start_asks_nothing_about_videos_the_listing_lacks(
    tmp_path: Path, media: Path, emu
) -> None:
    """The videos of 40 done files are deleted remotely; a backfill's startup adoption
    lists the key's videos once and asks about none of the 40 one by one (that is
    `reconcile`'s job: at 100,000 files it was 100,000 requests before the first upload)."""
    make_tree(media / "old", 40, size=4 * 1024)
    config = engine_config(tmp_path, media, emu.url)
    assert run_backfill(config).returncode == 0
    headers = {"X-Api-Key": API_KEY}
    gone = [record["video_id"] for record in emulator_records(emu.url)]
    for video_id in gone:
        httpx.delete(f"{emu.url}/v2/videos/{video_id}", headers=headers).raise_for_status()
    before = len(emulator_requests(emu.url))
    (media / "new").mkdir()
    (media / "new" / "late.mp4").write_bytes(os.urandom(5000))
    again = run_backfill(config, "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["outcomes"] == {"done": 41}
    asked = [
        (r["method"], r["path"])
        for r in emulator_requests(emu.url)[before:]
        if r["path"].startswith("/v2/videos/")
    ]
    assert asked == [], f"asked about videos one by one: {asked[:5]}"
    assert any(r["path"] == "/v2/videos" for r in emulator_requests(emu.url)[before:])
    listed = reconcile(config)  # reconcile does confirm each one gone
    assert len(listed["missing_remotely"]) == 40
