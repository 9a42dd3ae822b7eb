"""Outages and a sick environment: the service waits them out, one-shot commands exit clearly.

The emulator runs in this process on a fixed port with its state in a folder, so it
can be stopped (connection refused) and started again with every video it stored.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reka_sync import emulator
from tests.conftest import (
    API_KEY,
    PYTHON,
    ServiceProcess,
    assert_uploaded_exactly_once,
    cli_env,
    emulator_records,
    engine_config,
    make_tree,
    report_json,
    run_backfill,
    set_faults,
    start_backfill,
    wait_for,
    with_settings,
)


def reka(config: Path, command: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a reka-sync command that ends by itself (with the key, if given); return it."""
    return subprocess.run(
        [PYTHON, "-m", "reka_sync", command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(**({"REKA_API_KEY": key} if key else {})),
        check=False,
    )


def fill_disk(folder: Path) -> Path:
    """Write a file into `folder` until its filesystem is full; return the file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)
    return filler


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Restartable:
    """The emulator on one port, with its state on disk: stop it, start it again."""

    def __init__(self, data: Path, **settings: Any) -> None:
        self.data, self.port, self.settings = data, free_port(), settings
        self.running: emulator.RunningEmulator | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.running = emulator.start(
            port=self.port,
            data_dir=self.data,
            settings=emulator.Settings(processing_delay=0.1, **self.settings),
        )

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs to put a journal on and fill up (needs root to mount)."""
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("needs to mount a small tmpfs (run as root)")
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=False)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Restartable]:
    server = Restartable(tmp_path / "emulator")
    yield server
    server.stop()


def test_an_outage_spends_no_attempt_and_the_service_carries_on(
    tmp_path: Path, media: Path, api: Restartable
) -> None:
    expected = make_tree(media, 20)
    config = with_settings(engine_config(tmp_path, media, api.url), "api", outage_grace=2.0)
    api.stop()  # the API is gone before the first upload
    service = ServiceProcess(config)
    try:
        wait_for(
            lambda: service.logged("API unreachable; everything waits for it"),
            timeout=60,
            message="the outage to be declared",
        )
        status = report_json("status", config)
        assert status is not None and "API unreachable since" in status["pauses"][0]["reason"]
        assert status["counts"].get("failed", 0) == 0
        shown = report_json("show", config, next(iter(expected)))
        assert shown is not None and "API unreachable since" in shown["pauses"][0]["reason"]
        api.start()
        wait_for(
            lambda: (s := report_json("status", config)) and s["counts"].get("done") == 20,
            timeout=120,
            message="every file after the outage",
        )
    finally:
        assert service.stop() == 0
    assert_uploaded_exactly_once(api.url, expected)
    shows = [report_json("show", config, path) for path in expected]
    assert all(s is not None and s["attempts"] == 1 for s in shows), "the outage spent attempts"
    started = [e for e in service.lines if e.get("event", "").startswith("API unreachable")]
    ended = [e for e in service.lines if e.get("event") == "API reachable again; carrying on"]
    assert len(started) == 1 and len(ended) == 1, (started, ended)


def test_backfill_exits_78_at_once_when_the_key_is_refused(tmp_path: Path, media: Path) -> None:
    make_tree(media, 4)
    running = emulator.start(settings=emulator.Settings(api_key="the-right-key"))
    try:
        started = time.monotonic()
        done = run_backfill(engine_config(tmp_path, media, running.url), timeout=60)
        assert done.returncode == 78, done.stdout + done.stderr
        assert time.monotonic() - started < 10
        assert "refused the key" in done.stderr and "run backfill again" in done.stderr
        assert "systemctl" not in done.stderr
        assert emulator_records(running.url) == []
    finally:
        running.stop()


def test_backfill_exits_75_after_max_wait_and_a_rerun_finishes(
    tmp_path: Path, media: Path, api: Restartable
) -> None:
    expected = make_tree(media, 6)
    config = engine_config(tmp_path, media, api.url)
    api.stop()
    started = time.monotonic()
    done = run_backfill(config, "--max-wait", "4s", timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 75, done.stdout + done.stderr
    assert 4 <= took < 30, took
    assert "unreachable since" in done.stderr and "run backfill again later" in done.stderr
    api.start()
    again = run_backfill(config, "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert_uploaded_exactly_once(api.url, expected)
    shows = [report_json("show", config, path) for path in expected]
    assert all(s is not None and s["attempts"] == 1 for s in shows)


def test_a_second_service_on_one_journal_refuses_and_names_the_first(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url)
    first = ServiceProcess(config)
    try:
        second = reka(config, "run", key=API_KEY)
        assert second.returncode == 1
        assert f"PID {first.proc.pid}" in second.stderr
        make_tree(media, 2)
        beside = run_backfill(config, "--json")  # a backfill beside the service is fine
        assert beside.returncode == 0, beside.stderr
    finally:
        assert first.stop() == 0


def test_backfill_exits_74_when_the_journal_disk_fills_and_a_rerun_loses_nothing(
    tmp_path: Path, media: Path, emu: Any, small_disk: Path
) -> None:
    expected = make_tree(media, 40, size=32 * 1024)
    config = engine_config(tmp_path, media, emu.url)
    with_settings(config, "journal", path=str(small_disk / "journal.db"))
    set_faults(emu.url, [{"kind": "latency", "scope": "upload", "seconds": 0.3}])
    proc = start_backfill(config, capture=True)
    wait_for(lambda: len(emulator_records(emu.url)) >= 2, timeout=60, message="uploads")
    filler = fill_disk(small_disk)  # the disk fills up under the journal
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 74, out + err
    assert "cannot be written" in err and "free on its disk" in err
    assert err.count("the journal cannot be written") <= 2, err
    filler.unlink()
    set_faults(emu.url, [])
    again = run_backfill(config, "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["outcomes"] == {"done": 40}
    assert_uploaded_exactly_once(emu.url, expected)


def test_run_refuses_a_damaged_journal_with_exit_1_and_keeps_it(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url)
    make_tree(media, 4, size=4096)
    assert run_backfill(config, "--dry-run").returncode == 0  # creates the journal
    journal = tmp_path / "journal.db"

    with sqlite3.connect(journal) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = journal.stat().st_size
    with journal.open("r+b") as handle:  # spoil every page but the header
        for offset in range(4096, size, 4096):
            handle.seek(offset)
            handle.write(os.urandom(4096))
    damaged = journal.read_bytes()
    done = reka(config, "run", key=API_KEY)
    # Exit 1, not 74 (issue 17): nothing to wait for, the way back is a backup or reconcile.
    assert done.returncode == 1, done.stderr
    assert "keep the file" in done.stderr and "Traceback" not in done.stderr
    assert "reka-sync journal backup" in done.stderr and "reconcile" in done.stderr
    assert journal.read_bytes() == damaged, "the damaged journal was changed"
    assert emulator_records(emu.url) == []


def test_run_rides_out_a_full_journal_disk_and_catches_up_at_once(
    tmp_path: Path, media: Path, emu: Any, small_disk: Path
) -> None:
    config = engine_config(tmp_path, media, emu.url, settle_seconds=1)
    with_settings(config, "journal", path=str(small_disk / "journal.db"))
    service = ServiceProcess(config)
    try:
        first = make_tree(media, 4)
        wait_for(lambda: len(emulator_records(emu.url)) == 4, timeout=60, message="4 files")
        filler = fill_disk(small_disk)
        late = media / "late"
        late.mkdir()
        for index in range(3):  # they arrive while nothing can be recorded
            (late / f"late{index}.mp4").write_bytes(os.urandom(20_000 + index))
        wait_for(
            lambda: service.logged(
                "the journal cannot be written; nothing new is recorded until it can"
            ),
            timeout=60,
            message="the journal trouble to be said",
        )
        filler.unlink()
        freed = time.monotonic()
        wait_for(lambda: len(emulator_records(emu.url)) == 7, timeout=60, message="late ones")
        caught_up = time.monotonic() - freed
    finally:
        assert service.stop() == 0
    expected = {**first, **{str(late / f"late{i}.mp4"): "Inbox" for i in range(3)}}
    assert_uploaded_exactly_once(emu.url, expected)
    assert caught_up < 20, f"the files that arrived meanwhile took {caught_up:.0f}s"
    episode = [
        e
        for e in service.lines
        if "journal" in e.get("event", "") or "disk is full" in str(e.get("error", ""))
    ]
    assert len(episode) < 10, episode


def test_status_on_a_damaged_journal_says_so_and_exits_74(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    make_tree(media, 20, size=4096)
    config = engine_config(tmp_path, media, emu.url)
    assert run_backfill(config).returncode == 0
    healthy = report_json("status", config)
    assert healthy is not None and healthy["counts"]["done"] == 20
    journal = tmp_path / "journal.db"

    with sqlite3.connect(journal) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root_page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'files'").fetchone()
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    with journal.open("r+b") as handle:  # spoil the files table itself, not its indexes
        handle.seek((root_page[0] - 1) * page_size)
        handle.write(os.urandom(page_size))
    done = reka(config, "status")
    assert done.returncode == 74, done.stdout + done.stderr
    assert "damaged" in done.stderr and "keep the file" in done.stderr
    assert "done=" not in done.stdout
