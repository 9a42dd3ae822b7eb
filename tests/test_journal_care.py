"""Care of the journal: `journal backup` while the service writes, `--keep`, `journal check`,
and a damaged journal met at the start of `run` and `backfill`.

Real parts only: the emulator over loopback, real journals made by the code, real damage
(bytes overwritten in the file), the commands as subprocesses.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reka_sync.journal import Journal
from reka_sync.journal.connection import NEWEST_MIGRATION, JournalDamaged
from reka_sync.journal.maintenance import backup, backup_dated
from reka_sync.lifecycle import State
from tests.conftest import (
    API_KEY,
    PYTHON,
    ServiceProcess,
    cli_env,
    emulator_records,
    engine_config,
    journal_of_two_files,
    make_tree,
    run_backfill,
    wait_for,
)

THE_WAY_BACK = ("reka-sync journal backup", "reka-sync-journal-backup", "reconcile --apply")


def reka(*args: str, key: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `reka-sync ARGS` to its end (with the API key if `key`); return it."""
    return subprocess.run(
        [PYTHON, "-m", "reka_sync", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(**({"REKA_API_KEY": API_KEY} if key else {})),
        check=False,
    )


def newest_migration() -> str:
    """Return the name of the newest migration this reka-sync knows."""
    import sqlite_utils

    from reka_sync.journal.schema import migrations

    return str(migrations.pending(sqlite_utils.Database(memory=True))[-1].name)


def printed_counts(text: str) -> dict[str, int]:
    """Given what `journal backup` printed, return the counts per state it names."""
    return {state: int(n) for state, n in re.findall(r"\b([a-z_]+)=(\d+)\b", text)}


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {state: n for state, n in counts.items() if n}


def spoil_the_middle(path: Path) -> None:
    """Overwrite 8 KiB in the middle of a journal (two pages' worth) with fixed garbage."""
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size // 2 - 4096)
        handle.write(random.Random(17).randbytes(8192))


def files_alone(journal: Path) -> None:
    """Fold a closed journal's WAL into its file, so the file alone is the journal."""
    Journal.open(journal).close()  # the last writer to close checkpoints and removes the WAL
    assert not journal.with_name(journal.name + "-wal").exists()


@pytest.fixture
def uploaded(tmp_path: Path, media: Path, emu: Any) -> Iterator[Path]:
    """Yield the config of a journal the code made by uploading 6 files to the emulator."""
    config = engine_config(tmp_path, media, emu.url)
    make_tree(media, 6, size=8192)
    done = run_backfill(config, "--no-wait-index")
    assert done.returncode == 0, done.stdout + done.stderr
    files_alone(tmp_path / "journal.db")
    yield config


def test_a_backup_while_run_writes_is_one_consistent_moment_that_checks_intact(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url)
    live = tmp_path / "journal.db"
    service = ServiceProcess(config)
    try:
        make_tree(media, 8, size=8192)
        wait_for(lambda: len(emulator_records(emu.url)) == 8, timeout=30, message="8 uploads")
        watching = Journal.open(live, readonly=True)
        before = sum(watching.counts_from_rows().values())
        arrived: list[int] = []

        def between_steps(left: int, total: int) -> None:
            # The first step is copied; now a file arrives and the service records it.
            if arrived or not left:
                return
            (media / "late.mp4").write_bytes(os.urandom(9000))
            arrived.append(
                wait_for(
                    lambda: sum(watching.counts_from_rows().values()) > before,
                    timeout=20,
                    message="the service to record a file during the copy",
                )
            )

        copy = backup(live, tmp_path / "moment.db", pages=1, progress=between_steps)
        assert arrived, "the copy took a single step: nothing was written meanwhile"
        assert sum(copy.counts.values()) == before  # the moment the copy began
        assert sum(watching.counts_from_rows().values()) == before + 1
        watching.close()
        held = Journal.open(copy.path, readonly=True)
        try:  # the counters the triggers keep agree with the rows: no commit half copied
            assert held.counts() == held.counts_from_rows() == copy.counts
        finally:
            held.close()

        (media / "later").mkdir()
        for index in range(4):  # files keep arriving while the command copies
            (media / "later" / f"clip{index}.mp4").write_bytes(os.urandom(9000 + index))
        done = reka("journal", "backup", str(tmp_path / "copy.db"), "--config", str(config))
        assert done.returncode == 0, done.stderr
        assert wait_for(lambda: len(emulator_records(emu.url)) == 13, timeout=30, message="13")
    finally:
        assert service.stop() == 0
    assert str(tmp_path / "copy.db") in done.stdout and "KiB" in done.stdout
    printed = printed_counts(done.stdout)
    assert sum(printed.values()) >= 9, done.stdout  # the 8, the late one, and maybe more
    checked = reka("journal", "check", str(tmp_path / "copy.db"), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["intact"] and report["problems"] == []
    assert report["schema"]["version"] == newest_migration() and report["schema"]["pending"] == []
    assert nonzero(report["counts"]) == printed
    assert (tmp_path / "copy.db").read_bytes()[18:20] == b"\x01\x01"  # one file, not WAL
    assert not list(tmp_path.glob("*.tmp"))


def test_keep_7_keeps_the_newest_seven_dated_copies_and_nothing_else_is_touched(
    tmp_path: Path, config_file: Path
) -> None:
    journal, _ = journal_of_two_files(config_file)
    journal.close()
    live = tmp_path / "journal.db"
    folder = tmp_path / "backups"
    first = backup_dated(live, folder, 7, time.mktime((2020, 3, 1, 12, 0, 0, 0, 0, -1)))
    assert first.path == folder / "journal-20200301.db" and first.removed == ()
    for day in range(2, 11):  # nine more days of copies: 1 to 10 March
        (folder / f"journal-202003{day:02d}.db").write_bytes(first.path.read_bytes())
    (folder / "notes.txt").write_text("mine")
    (folder / "journal-20200305.db.tmp").write_bytes(b"half a copy")  # a copy interrupted

    made = backup_dated(live, folder, 7, time.mktime((2020, 3, 11, 9, 0, 0, 0, 0, -1)))
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == [f"journal-202003{day:02d}.db" for day in range(5, 12)] + ["notes.txt"]
    assert [p.name for p in made.removed] == [
        *(f"journal-2020030{day}.db" for day in range(1, 5)),
        "journal-20200305.db.tmp",
    ]
    again = backup_dated(live, folder, 7, time.mktime((2020, 3, 11, 21, 0, 0, 0, 0, -1)))
    assert again.path == made.path and again.removed == ()  # the same day: replaced
    assert len(list(folder.glob("journal-*.db"))) == 7

    # The command names today's copy; the dated names of March 2020 are older than today.
    done = reka("journal", "backup", "--keep", "7", str(folder), "--config", str(config_file))
    assert done.returncode == 0, done.stderr
    today = time.strftime("journal-%Y%m%d.db")
    assert (folder / today).exists() and str(folder / today) in done.stdout
    assert sorted(p.name for p in folder.glob("journal-*.db"))[-1] == today
    assert len(list(folder.glob("journal-*.db"))) == 7
    assert "removed 1 older copy: journal-20200305.db" in done.stdout
    assert printed_counts(done.stdout) == {"discovered": 2}
    assert (folder / "notes.txt").read_text() == "mine"
    assert reka("journal", "check", str(folder / today)).returncode == 0


def test_backup_refuses_the_live_journal_and_says_why_it_cannot_write(
    tmp_path: Path, config_file: Path
) -> None:
    journal, _ = journal_of_two_files(config_file)
    journal.close()
    live = tmp_path / "journal.db"
    before = live.read_bytes()
    config = ("--config", str(config_file))

    itself = reka("journal", "backup", str(live), *config)
    assert itself.returncode == 2 and "is the live journal" in itself.stderr
    assert live.read_bytes() == before
    notes = tmp_path / "notes.db"
    notes.write_text("important notes\n")
    other = reka("journal", "backup", str(notes), *config)
    assert other.returncode == 2 and "refusing to replace it" in other.stderr
    assert notes.read_text() == "important notes\n"
    nowhere = reka("journal", "backup", str(tmp_path / "nowhere/copy.db"), *config)
    assert nowhere.returncode == 74, nowhere.stderr
    assert f"the folder {tmp_path / 'nowhere'} does not exist" in nowhere.stderr

    small = tmp_path / "small"  # a 16 KiB disk, and a read-only one
    locked = tmp_path / "locked"
    try:
        for point, options in ((small, "size=16k"), (locked, "ro")):
            point.mkdir()
            mounted = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                capture_output=True,
                check=False,
            )
            if mounted.returncode != 0:
                pytest.skip("needs to mount a tmpfs (run as root)")
        full = reka("journal", "backup", str(small / "copy.db"), *config)
        assert full.returncode == 74, full.stderr
        assert f"cannot write the copy {small / 'copy.db'}: the disk is full" in full.stderr
        assert list(small.iterdir()) == []  # no half copy, no .tmp left behind
        unwritable = reka("journal", "backup", "--keep", "7", str(locked / "backups"), *config)
        assert unwritable.returncode == 74, unwritable.stderr
        assert f"{locked} is on a read-only filesystem" in unwritable.stderr
        assert "Traceback" not in full.stderr + unwritable.stderr
    finally:
        for point in (small, locked):
            if point.is_mount():
                subprocess.run(["umount", "--lazy", str(point)], check=False)
    assert live.read_bytes() == before


def test_check_shows_the_version_and_counts_of_an_intact_journal(
    tmp_path: Path, config_file: Path
) -> None:
    missing = reka("journal", "check", "--config", str(config_file))
    assert missing.returncode == 1 and "no journal at" in missing.stderr
    journal, _ = journal_of_two_files(config_file)
    journal.close()
    done = reka("journal", "check", "--json", "--config", str(config_file))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["intact"] and report["advice"] is None
    assert report["schema"]["version"] == newest_migration()
    assert report["schema"]["unknown"] == [] and report["schema"]["pending"] == []
    assert nonzero(report["counts"]) == {State.DISCOVERED.value: 2}
    text = reka("journal", "check", "--config", str(config_file))
    assert text.returncode == 0 and ": intact" in text.stdout
    assert f"schema: {newest_migration()}" in text.stdout and "discovered=2" in text.stdout


def test_check_on_a_damaged_journal_exits_1_with_the_way_back(
    tmp_path: Path, uploaded: Path
) -> None:
    journal = tmp_path / "journal.db"
    spoil_the_middle(journal)
    damaged = journal.read_bytes()
    done = reka("journal", "check", "--config", str(uploaded))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DAMAGED" in done.stdout and "what to do:" in done.stdout
    assert all(way in done.stdout for way in THE_WAY_BACK), done.stdout
    report = json.loads(reka("journal", "check", "--json", "--config", str(uploaded)).stdout)
    assert not report["intact"] and report["problems"] and "reconcile" in report["advice"]
    assert journal.read_bytes() == damaged

    # A damaged journal is never copied over the good copies, nor makes them go.
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / "journal-20200101.db").write_bytes(b"an older copy")
    copy = reka("journal", "backup", "--keep", "1", str(folder), "--config", str(uploaded))
    assert copy.returncode == 74 and "the copy was not kept" in copy.stderr, copy.stderr
    assert [p.name for p in folder.iterdir()] == ["journal-20200101.db"]


@pytest.mark.parametrize(
    "damage",
    ["bytes overwritten in the middle", "the same, nothing new to do", "a file of garbage"],
)
def test_run_and_backfill_refuse_a_damaged_journal_the_same_way_and_leave_it_as_it_was(
    tmp_path: Path, media: Path, emu: Any, damage: str
) -> None:
    config = engine_config(tmp_path, media, emu.url)
    journal = tmp_path / "journal.db"
    if damage == "a file of garbage":
        journal.write_bytes(random.Random(3).randbytes(64 * 1024))
        make_tree(media, 3, size=8192)
    else:
        make_tree(media, 3, size=8192)
        assert run_backfill(config, "--no-wait-index").returncode == 0
        files_alone(journal)
        spoil_the_middle(journal)
        if damage != "the same, nothing new to do":  # backfill's verdict then ends its walk
            (media / "new.mp4").write_bytes(os.urandom(9000))  # work that must not start
    damaged = journal.read_bytes()
    uploads = len(emulator_records(emu.url))
    said = {}
    for command in ("run", "backfill"):
        done = reka(command, "--config", str(config), key=True)
        assert done.returncode == 1, f"{command}: {done.stderr}"
        [line] = [ln for ln in done.stderr.splitlines() if f"{command} did not start" in ln]
        assert f"the journal {journal} is damaged" in line and "Traceback" not in done.stderr
        assert all(way in line for way in THE_WAY_BACK), line
        said[command] = line.replace(f"reka-sync: {command} did not start: ", "")
        assert journal.read_bytes() == damaged, f"{command} changed the damaged journal"
    assert said["run"] == said["backfill"]
    assert len(emulator_records(emu.url)) == uploads  # nothing was sent


def test_a_journal_checked_beside_its_first_reads_writes_nothing_until_it_passes(
    tmp_path: Path, uploaded: Path
) -> None:
    """backfill checks the journal while it walks: every write waits for the verdict."""
    path = tmp_path / "journal.db"
    intact = Journal.open(path, check_beside=True)
    try:
        intact.checked()
        assert intact.record_check("ok", time.time()) is None  # a write goes through
    finally:
        intact.close()
    files_alone(path)
    spoil_the_middle(path)
    damaged = path.read_bytes()
    journal = Journal.open(path, check_beside=True)
    try:
        with pytest.raises(JournalDamaged):
            journal.record_check("ok", time.time())
        with pytest.raises(JournalDamaged, match="is damaged"):
            journal.checked()  # asked again, the same answer
    finally:
        journal.close()
    assert path.read_bytes() == damaged


def test_a_journal_with_every_migration_opens_without_sqlite_utils(uploaded: Path) -> None:
    """The newest migration is known without sqlite_utils, whose import costs more than
    the rest of opening the journal."""
    assert newest_migration() == NEWEST_MIGRATION
    journal = uploaded.parent / "journal.db"
    probe = (
        "import sys; from pathlib import Path; from reka_sync.journal import Journal; "
        f"Journal.open(Path({str(journal)!r})).close(); print('sqlite_utils' in sys.modules)"
    )
    done = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr
