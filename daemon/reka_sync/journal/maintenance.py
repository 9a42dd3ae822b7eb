"""Care of the journal file: consistent copies while the service writes it, full checks,
and the one way `run` and `backfill` refuse a damaged journal at start.

How this works
--------------
* A backup reads the journal through a read-only connection that holds one read
  transaction (one WAL snapshot) for the whole copy, and copies it with SQLite's online
  backup API, STEP_PAGES pages a step. In WAL mode the service keeps committing
  meanwhile: its commits go to the WAL, only its checkpoints wait for the copy to end.
  Without the held snapshot, each commit of another process would restart the copy
  from its first page, and a busy service could keep a large copy from ever ending.
* The copy is written to ``FILE.tmp``, taken out of WAL mode (one self-contained file),
  checked in full (``PRAGMA integrity_check``), fsynced, renamed over FILE, and its
  folder fsynced: FILE is the old copy or the new one, never half of one. A copy that
  fails its check is not kept: the older copies are worth more than it.
* ``backup_dated`` names the copy ``journal-YYYYMMDD.db`` (local date) in a folder and
  removes the copies beyond the newest `keep`, by name: no clock or mtime is trusted, a
  second copy on the same day replaces the first, and other files there are left alone.
* ``check`` opens the journal read-only and reports SQLite's full integrity check, the
  sqlite-utils migrations applied (the schema version) and the files per state.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from reka_sync.errors import EXIT_FAILED, JournalError, UsageError
from reka_sync.journal import Journal
from reka_sync.journal.connection import APPLICATION_ID, DAMAGED_HINT, JournalDamaged
from reka_sync.lifecycle import State
from reka_sync.progress import human_size

STEP_PAGES = 1024  # pages copied per step of the backup (4 MiB at SQLite's default page size)
BUSY_SLEEP_S = 0.05  # a step that meets a lock waits this long, then tries again
COPY_NAME = re.compile(r"journal-(\d{8})\.db")  # a dated copy: journal-20260131.db
STALE_TMP = re.compile(r"journal-\d{8}\.db\.tmp")  # left by a copy that was interrupted
SIDE_FILES = ("-journal", "-wal", "-shm")  # what SQLite may leave beside a database
PROBLEMS_SHOWN = 10  # lines of integrity_check printed as text (JSON has them all)
_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


@dataclass(frozen=True)
class Schema:
    """The journal's schema version: sqlite-utils migrations applied, oldest first."""

    applied: tuple[str, ...]
    pending: tuple[str, ...] = ()  # this reka-sync's, not applied yet: the next run applies them
    unknown: tuple[str, ...] = ()  # applied by a newer reka-sync than this one

    @property
    def newest(self) -> str | None:
        """Return the name of the newest migration applied (None: none)."""
        return self.applied[-1] if self.applied else None


@dataclass(frozen=True)
class Health:
    """What a full check found: SQLite's findings (none when intact), schema and counts.
    `schema` and `counts` are None when the damage keeps them from being read."""

    path: Path
    size: int
    problems: tuple[str, ...]
    schema: Schema | None
    counts: dict[State, int] | None

    @property
    def intact(self) -> bool:
        """Return whether SQLite found nothing wrong."""
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        """Return the report as plain values, for `journal check --json`."""
        schema = self.schema
        return {
            "path": str(self.path),
            "size": self.size,
            "intact": self.intact,
            "problems": list(self.problems),
            "schema": None
            if schema is None
            else {
                "version": schema.newest,
                "applied": list(schema.applied),
                "pending": list(schema.pending),
                "unknown": list(schema.unknown),
            },
            "counts": None if self.counts is None else _by_name(self.counts),
            "advice": None if self.intact else DAMAGED_HINT,
        }


@dataclass(frozen=True)
class Backup:
    """A copy made: where, its size and files per state, and older copies removed."""

    source: Path
    path: Path
    size: int
    counts: dict[State, int]
    removed: tuple[Path, ...] = field(default=())


def check(path: Path) -> Health:
    """Given a journal's path, open it read-only and return its health: SQLite's full
    integrity check, the migrations applied and the files per state.

    Raise NoJournalYet if there is no file, JournalError if it cannot be read at all
    (permissions, a lock held too long, another application's database).
    """
    size = path.stat().st_size if path.exists() else 0
    try:
        journal = Journal.open(path, readonly=True)
    except JournalDamaged as exc:  # not even its first page reads
        return Health(path, size, (exc.what,), None, None)
    try:
        try:
            with journal.reading() as conn:
                found = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        except JournalDamaged as exc:  # SQLite gave up instead of listing what it found
            found = [exc.what]
        problems = () if found == ["ok"] else tuple(found)
        return Health(path, size, problems, _schema(journal), _counts(journal))
    finally:
        journal.close()


def _schema(journal: Journal) -> Schema | None:
    """Given an open journal, return its migrations, or None if they cannot be read."""
    import sqlite_utils  # `check` only: the other commands never pay for the import

    from reka_sync.journal.schema import migrations

    try:
        with journal.reading() as conn:
            db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
            applied = tuple(m.name for m in migrations.applied(db))
            pending = tuple(m.name for m in migrations.pending(db))
    except (JournalError, sqlite3.Error):
        return None
    # Every migration this reka-sync has: those an empty database would still need.
    known = {m.name for m in migrations.pending(sqlite_utils.Database(memory=True))}
    return Schema(applied, pending, tuple(n for n in applied if n not in known))


def _counts(journal: Journal) -> dict[State, int] | None:
    """Given an open journal, return its files per state (counted from the rows), or None
    if the damage keeps them from being counted."""
    try:
        return journal.counts_from_rows()
    except JournalError:
        return None


def backup(
    journal_path: Path,
    target: Path,
    *,
    pages: int = STEP_PAGES,
    progress: Callable[[int, int], None] | None = None,
) -> Backup:
    """Given the journal's path and a file to write, copy the journal there consistently,
    even while `reka-sync run` writes it, `pages` pages a step; return the copy made.
    `progress` is called after each step with the pages left and the pages in all.

    Raise UsageError if `target` is the journal itself, a folder, or an existing file that
    is not a journal copy; NoJournalYet if there is no journal; JournalDamaged if the copy
    fails its check (then it is not kept); JournalError if it cannot be written (a full
    disk, a folder that is missing or not writable). FILE is never left half written.
    """
    _refuse_target(journal_path, target)
    tmp = target.with_name(target.name + ".tmp")
    source = Journal.open(journal_path, readonly=True)
    try:
        with _writing(tmp):
            _remove_with_side_files(tmp)  # left by an interrupted copy
        _copy(source, tmp, pages, progress)
        health = check(tmp)
        if not health.intact or health.counts is None:
            what = "; ".join(health.problems) or "its files cannot be counted"
            raise JournalDamaged(
                journal_path, f"{what}; the copy was not kept, older copies are untouched"
            )
        with _writing(target):
            _fsync(tmp)
            os.replace(tmp, target)
    except BaseException:
        _remove_with_side_files(tmp, quietly=True)  # the error that stopped us says more
        raise
    finally:
        source.close()
    with _writing(target):
        _fsync(target.parent)  # the rename itself survives a power cut
    return Backup(journal_path, target, health.size, health.counts)


def backup_dated(journal_path: Path, folder: Path, keep: int, now: float) -> Backup:
    """Given the journal's path, a folder, how many copies to keep and the time, write
    today's copy (journal-YYYYMMDD.db, local date) into the folder, then remove the
    dated copies beyond the newest `keep` (the one just made is always kept); return the
    copy made, with the copies removed.

    Raise UsageError if `keep` < 1 or `folder` is a file; otherwise as `backup`.
    """
    if keep < 1:
        raise UsageError(f"--keep {keep}: keep at least 1 copy")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; with --keep, name the folder of copies")
    target = folder / time.strftime("journal-%Y%m%d.db", time.localtime(now))
    with _writing(target):
        folder.mkdir(parents=True, exist_ok=True)
    made = backup(journal_path, target)
    return replace(made, removed=tuple(prune(folder, keep, made.path)))


def prune(folder: Path, keep: int, made: Path) -> list[Path]:
    """Given the folder of dated copies, how many to keep and the copy just made, remove
    the copies beyond the newest `keep` (by the date in their names; `made` always stays)
    and the leftovers of interrupted copies; return what was removed, oldest first.
    Raise JournalError if one cannot be removed."""
    others = sorted(
        (p for p in folder.iterdir() if COPY_NAME.fullmatch(p.name) and p.name != made.name),
        key=lambda p: p.name,
        reverse=True,
    )
    doomed = others[keep - 1 :]
    doomed += [
        p for p in folder.iterdir() if STALE_TMP.fullmatch(p.name) and p.name != made.name + ".tmp"
    ]
    for path in doomed:
        try:
            _remove_with_side_files(path)
        except OSError as exc:
            raise JournalError(
                f"the copy {made} is made, but the older copy {path} cannot be removed: "
                f"{exc.strerror}"
            ) from None
    return sorted(doomed, key=lambda p: p.name)


def _refuse_target(journal_path: Path, target: Path) -> None:
    """Raise UsageError unless `target` may receive a copy: not the live journal (nor one
    of its own files), not a folder, and not some other file that exists already."""
    live = os.path.realpath(journal_path)
    named = os.path.realpath(target)
    own = {live, *(live + side for side in SIDE_FILES)}
    if named in own or (
        target.exists() and journal_path.exists() and os.path.samefile(target, journal_path)
    ):
        raise UsageError(
            f"{target} is the live journal; name another file for the copy (to restore a "
            "copy, stop the service and copy it over the journal instead)"
        )
    if target.is_dir():
        raise UsageError(
            f"{target} is a folder; name the file to write, or pass --keep N to keep dated "
            "copies in that folder"
        )
    if target.exists() and not _is_journal_file(target):
        raise UsageError(f"{target} exists and is not a journal copy; refusing to replace it")


def _is_journal_file(path: Path) -> bool:
    """Given an existing file, return whether its header says it is a reka-sync journal."""
    try:
        with path.open("rb") as handle:
            header = handle.read(72)
    except OSError:
        return False
    return (
        len(header) == 72
        and header[:16] == b"SQLite format 3\x00"
        and int.from_bytes(header[68:72], "big") == APPLICATION_ID
    )


def _copy(
    source: Journal, tmp: Path, pages: int, progress: Callable[[int, int], None] | None
) -> None:
    """Given the open journal, copy it into `tmp` as one snapshot, in steps, then make
    `tmp` one self-contained file (not WAL). Raise JournalError if `tmp` cannot be
    written, JournalDamaged if the journal cannot be read."""
    with _writing(tmp):
        dest = sqlite3.connect(tmp)
    try:
        with source.reading() as conn:
            conn.execute("BEGIN")  # one snapshot for every step; other processes commit on
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # taken here
                with _writing(tmp):
                    conn.backup(
                        dest,
                        pages=pages,
                        sleep=BUSY_SLEEP_S,
                        progress=None if progress is None else _step(progress),
                    )
            finally:
                conn.rollback()  # a read transaction: nothing to commit
        with _writing(tmp):
            dest.execute("PRAGMA journal_mode = DELETE").fetchone()
    finally:
        dest.close()


def _step(progress: Callable[[int, int], None]) -> Callable[[int, int, int], None]:
    """Given a progress callback (pages left, pages in all), return one for sqlite3."""

    def step(status: int, remaining: int, total: int) -> None:
        progress(remaining, total)

    return step


@contextmanager
def _writing(copy: Path) -> Iterator[None]:
    """Turn what goes wrong while writing the file `copy` (or its folder) into a
    JournalError that names the problem: a full disk, a folder missing or not writable,
    an I/O error."""
    target = copy.with_name(copy.name.removesuffix(".tmp"))
    folder = copy.parent
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL:
            raise _cannot_write(target, folder, _disk_full(folder)) from None
        if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
            raise _cannot_write(target, folder, _why_not_writable(folder)) from None
        if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR:
            raise _cannot_write(target, folder, f"an I/O error ({exc})") from None
        raise
    except OSError as exc:
        if exc.errno in _FULL:
            raise _cannot_write(target, folder, _disk_full(folder)) from None
        if exc.errno in _DENIED or exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise _cannot_write(target, folder, _why_not_writable(folder)) from None
        raise _cannot_write(target, folder, exc.strerror or str(exc)) from None


def _why_not_writable(folder: Path) -> str:
    """Given the folder a copy goes to, say why it cannot be written there: missing, on a
    read-only filesystem, or not writable by this user."""
    there = folder
    while not there.is_dir() and there != there.parent:
        there = there.parent
    missing = f"the folder {folder} does not exist and " if there != folder else ""
    try:
        read_only = bool(os.statvfs(there).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return f"{missing}{there} is on a read-only filesystem"
    if not os.access(there, os.W_OK | os.X_OK):
        return f"{missing}{there} is not writable by this user"
    return f"the folder {folder} does not exist" if missing else f"{folder} refuses new files"


def _cannot_write(target: Path, folder: Path, why: str) -> JournalError:
    """Given the copy, its folder and why it could not be written, return the error."""
    return JournalError(
        f"cannot write the copy {target}: {why}. Nothing was written there and the journal "
        "is untouched"
    )


def _disk_full(folder: Path) -> str:
    """Given the folder of a copy, say that its disk is full, and what is left."""
    try:
        return f"the disk is full ({human_size(shutil.disk_usage(folder).free)} free there)"
    except OSError:
        return "the disk is full"


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's) content to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_with_side_files(path: Path, *, quietly: bool = False) -> None:
    """Remove a database file and whatever SQLite left beside it. Raise OSError if one
    cannot be removed, unless `quietly`."""
    for each in (path, *(path.with_name(path.name + side) for side in SIDE_FILES)):
        try:
            each.unlink(missing_ok=True)
        except OSError:
            if not quietly:
                raise


def _by_name(counts: dict[State, int]) -> dict[str, int]:
    """Given files per state, return them keyed by the states' names."""
    return {state.value: n for state, n in counts.items()}


def _counts_text(counts: dict[State, int]) -> str:
    """Given files per state, return "N files (state=n ...)", the states with files only."""
    total = sum(counts.values())
    shown = "  ".join(f"{state.value}={n}" for state, n in counts.items() if n)
    return f"{total} files" + (f" ({shown})" if shown else "")


def format_backup(made: Backup) -> str:
    """Given a copy made, return the lines that say where, how big and what it holds."""
    lines = [
        f"copied {made.source} to {made.path} ({human_size(made.size)}, checked intact)",
        f"the copy holds {_counts_text(made.counts)}",
    ]
    if made.removed:
        names = ", ".join(p.name for p in made.removed)
        copies = "copy" if len(made.removed) == 1 else "copies"
        lines.append(f"removed {len(made.removed)} older {copies}: {names}")
    return "\n".join(lines)


def format_health(health: Health) -> str:
    """Given a check's findings, return them as lines for a person."""
    verdict = "intact" if health.intact else "DAMAGED"
    lines = [f"journal {health.path} ({human_size(health.size)}): {verdict}"]
    lines.extend(f"  {p}" for p in health.problems[:PROBLEMS_SHOWN])
    if len(health.problems) > PROBLEMS_SHOWN:
        lines.append(f"  (and {len(health.problems) - PROBLEMS_SHOWN} more; see --json)")
    lines.append(_schema_text(health.schema))
    lines.append(
        "files per state: unreadable (the damage is in the way)"
        if health.counts is None
        else f"holds {_counts_text(health.counts)}"
    )
    if not health.intact:
        lines.append(f"what to do: {DAMAGED_HINT}")
    return "\n".join(lines)


def _schema_text(schema: Schema | None) -> str:
    """Given the schema found (None: unreadable), return its line for a person."""
    if schema is None:
        return "schema: unreadable"
    if schema.newest is None:
        return "schema: no migrations applied yet (the next run applies them)"
    text = f"schema: {schema.newest} ({len(schema.applied)} migrations applied"
    if schema.unknown:
        text += f"; {', '.join(schema.unknown)} from a newer reka-sync"
    if schema.pending:
        text += f"; {len(schema.pending)} to apply at the next run: {', '.join(schema.pending)}"
    return text + ")"


def refuse_to_start(damage: JournalDamaged, command: str, err: TextIO | None = None) -> int:
    """Given the damage found as `command` (run, backfill) opened the journal, say it and
    the way back on `err` (stderr); return the exit code (1). The file was only read:
    never migrated, written nor recreated."""
    print(f"reka-sync: {command} did not start: {damage}", file=err or sys.stderr)
    return EXIT_FAILED
