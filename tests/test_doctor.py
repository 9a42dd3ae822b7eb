"""`reka-sync doctor`: real emulator, real journal file, real folders."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reka_sync import emulator
from reka_sync.doctor import check_clock, check_inotify
from reka_sync.mounts import mount_of, read_mounts
from tests.conftest import (
    API_KEY,
    PYTHON,
    BindMount,
    cli_env,
    engine_config,
    make_tree,
    report_json,
    run_backfill,
)


def doctor(config: Path, key: str = API_KEY) -> tuple[int, list[dict[str, Any]], str]:
    """Run `reka-sync doctor` both ways; return its exit code, JSON checks and text."""
    env = cli_env(REKA_API_KEY=key)
    command = [PYTHON, "-m", "reka_sync", "doctor", "--config", str(config)]
    as_json = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, env=env, check=False
    )
    as_text = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert as_json.returncode == as_text.returncode
    return as_json.returncode, json.loads(as_json.stdout), as_text.stdout


def levels(checks: list[dict[str, Any]]) -> dict[str, str]:
    return {f"{c['name']}:{c['message'].split(':')[0]}": c["level"] for c in checks}


def test_a_healthy_setup_passes_every_check(tmp_path: Path, media: Path, emu: Any) -> None:
    make_tree(media, 8, size=4096)
    config = engine_config(tmp_path, media, emu.url)
    assert run_backfill(config).returncode == 0
    code, checks, text = doctor(config)
    assert code == 0, text
    assert [c["name"] for c in checks] == ["key", "api", "clock", "root", "inotify", "journal"]
    assert all(c["level"] == "ok" for c in checks), text
    root = next(c for c in checks if c["name"] == "root")
    # media, cameras, cameras/front, cameras/back, cameras/back/2026, projects,
    # projects/alpha, misc
    assert root["message"].endswith(", inotify, 8 folders")
    journal = next(c for c in checks if c["name"] == "journal")
    assert "intact, 8 files recorded; " in journal["message"]
    assert journal["message"].endswith("on its disk")  # free space is checked too
    assert API_KEY not in text


def test_a_refused_key_a_missing_root_and_a_damaged_journal_fail_with_hints(
    tmp_path: Path, media: Path
) -> None:
    strict = emulator.start(settings=emulator.Settings(api_key="the-right-key"))
    try:
        config = engine_config(tmp_path, media, strict.url)
        make_tree(media, 4, size=4096)
        assert run_backfill(config, "--dry-run").returncode == 0  # creates the journal
        journal = tmp_path / "journal.db"
        with sqlite3.connect(journal) as db:  # everything into the main file, then spoil it
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = journal.stat().st_size
        with journal.open("r+b") as handle:  # scribble over every page but the header
            for offset in range(4096, size, 4096):
                handle.seek(offset)
                handle.write(os.urandom(4096))
        media.rename(tmp_path / "elsewhere")
        code, checks, text = doctor(config, key="a-wrong-key")
    finally:
        strict.stop()
    assert code == 1
    found = {c["name"]: c for c in checks}
    assert found["key"]["level"] == "fail" and "refused" in found["key"]["message"]
    assert "reload" in found["key"]["hint"]
    assert found["root"]["level"] == "warn" and "unmounted" in found["root"]["message"]
    assert found["journal"]["level"] == "fail", found["journal"]
    hint = found["journal"]["hint"]
    assert "keep the file" in hint and "backfill" not in hint  # a rebuild would re-upload all
    assert "hint: " in text
    assert "a-wrong-key" not in text


def test_the_clock_and_inotify_checks_draw_their_lines() -> None:
    assert check_clock(1000.0, 1001.0).level == "ok"
    assert check_clock(1000.0, 1030.0).level == "warn"
    late = check_clock(1000.0, 400.0)
    assert late.level == "fail" and "behind" in late.message and "timedatectl" in late.hint
    assert check_clock(None, 1000.0).level == "warn"
    limit = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    assert check_inotify(10).level == "ok"
    assert check_inotify(limit // 2 + 1).level == "warn"
    over = check_inotify(limit + 1)
    assert over.level == "fail" and "60-reka-sync.conf" in over.hint


def test_an_unmounted_share_is_seen_by_doctor_and_skipped_by_backfill(
    tmp_path: Path, emu: Any, bind_mount: Callable[[Path, Path], BindMount]
) -> None:
    share, media = tmp_path / "share", tmp_path / "media"
    share.mkdir()
    media.mkdir()
    expected = make_tree(share, 4, size=4096)
    mounted = bind_mount(share, media)
    config = engine_config(tmp_path, media, emu.url)
    assert run_backfill(config).returncode == 0  # remembers where media was mounted
    mounted.unmount()  # media is an empty folder on the filesystem below again
    code, checks, text = doctor(config)
    assert code == 0, text  # a warning, not a failure: the daemon waits for the share
    root = next(c for c in checks if c["name"] == "root")
    assert root["level"] == "warn", text
    below = mount_of(media, read_mounts()).point
    assert root["message"] == (
        f"{media} is an empty folder on {below}, not on {media} as before (unmounted?)"
    )
    again = run_backfill(config)
    assert again.returncode == 0, again.stderr
    assert f"{media} is unavailable (not mounted?); skipped" in again.stderr
    report = report_json("status", config)
    assert report is not None
    assert report["counts"]["missing"] == 0
    assert report["counts"]["done"] == len(expected)
