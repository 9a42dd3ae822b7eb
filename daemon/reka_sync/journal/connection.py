"""The journal's SQLite connections: opening, checking and migrating the file, and the
two ways in (a write transaction, a read), with SQLite's errors turned into JournalError.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import sqlite_utils

from reka_sync.errors import JournalError, NoJournalYet
from reka_sync.journal.schema import APPLICATION_ID, migrations

BUSY_TIMEOUT_S = 10.0


# Never suggest rebuilding the journal from scratch: that would upload every file again.
DAMAGED_HINT = (
    "stop reka-sync and keep the file; restore a copy of it if you have one (a journal "
    "built from scratch would upload every file again)"
)


class JournalConnection:
    """The journal file, opened for this process. Safe to share between threads."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()
        # Reads use their own connection, so they never wait for a commit's fsync.
        self._reader = conn
        self._read_lock = self._lock
        self.path = path

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Self:
        """Given a path, return the open, migrated journal. Raise JournalError if unusable."""
        _refuse_foreign_file(path)
        if readonly and not path.exists():
            raise NoJournalYet(
                f"no journal at {path} yet; `reka-sync run` or `backfill` creates it"
            )
        try:
            if not readonly:
                path.parent.mkdir(parents=True, exist_ok=True)
            target = f"file:{path}?mode=ro" if readonly else str(path)
            conn = sqlite3.connect(
                target, uri=readonly, timeout=BUSY_TIMEOUT_S, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from None
        journal = cls(conn, path)
        try:
            with mapped(path):
                journal._prepare(readonly)
        except JournalError:
            conn.close()
            raise
        return journal

    def _prepare(self, readonly: bool) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if tables and app_id != APPLICATION_ID:
            raise JournalError(
                f"{self.path} is a SQLite database but not a reka-sync journal; "
                "point journal.path at another file"
            )
        if readonly:
            if not tables:
                raise JournalError(f"{self.path} is empty; `reka-sync run` or `backfill` fills it")
            return
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise JournalError(f"{self.path}: cannot switch to WAL mode")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        with self._write():
            migrations.apply(self._db)
        self._reader = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False
        )
        self._reader.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._read_lock = threading.RLock()

    def close(self) -> None:
        """Close the connection; the file stays as it is."""
        with self._lock, self._read_lock:
            if self._reader is not self._conn:
                self._reader.close()
            self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, mapped(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._read_lock, mapped(self.path):
            cursor = self._reader.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return list(cursor.fetchall())

    def require_intact(self) -> None:
        """Raise JournalError, saying what to do, if SQLite's quick check finds damage."""
        verdict = self.check_integrity()
        if verdict != "ok":
            raise JournalError(f"the journal {self.path} is damaged ({verdict}); {DAMAGED_HINT}")

    def check_integrity(self) -> str:
        """Return SQLite's integrity-check verdict ("ok" when healthy, else what is wrong)."""
        try:
            return "; ".join(str(row[0]) for row in self._read("PRAGMA quick_check"))
        except sqlite3.DatabaseError as exc:
            return str(exc)


def _refuse_foreign_file(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise JournalError(f"{path} is a directory; journal.path must name a file") from None
    except OSError as exc:
        raise JournalError(f"cannot read journal {path}: {exc.strerror}") from None
    if head and head != b"SQLite format 3\x00":
        raise JournalError(
            f"{path} exists and is not a SQLite database; "
            "refusing to touch it, point journal.path elsewhere"
        )


@contextmanager
def mapped(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise JournalError(
                f"journal {path} stayed locked by another process for "
                f"{BUSY_TIMEOUT_S:.0f}s; try again, or stop the other writer"
            ) from None
        if "readonly" in text or "read-only" in text:
            raise JournalError(
                f"journal {path} is read-only for this user; fix its permissions "
                "(and those of its folder)"
            ) from None
        raise JournalError(f"journal {path}: {text}") from None
    except sqlite3.IntegrityError as exc:
        raise JournalError(
            f"journal {path}: a write broke a constraint ({exc}); "
            "this is a bug in reka-sync, please report it"
        ) from None
    except sqlite3.DatabaseError as exc:
        raise JournalError(
            f"journal {path} is damaged or not a database ({exc}); {DAMAGED_HINT}"
        ) from None
