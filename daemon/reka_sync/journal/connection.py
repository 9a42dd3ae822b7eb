"""The journal's SQLite connections: opening, checking and migrating the file, and the
two ways in (a write, a read), with SQLite's errors turned into JournalError.

Writes are group-committed (``GroupWriter``): a thread that writes queues its write
and takes the writer's lock; whoever holds it runs every write queued meanwhile in
one transaction (one that fails is rolled back alone), and commits once. A caller returns
only after the commit that holds its write, so "committed before the effect it
unlocks" still holds per caller, at one commit (and at most one fsync) per batch.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote

from reka_sync.errors import JournalError, NoJournalYet

APPLICATION_ID = 0x52534A31  # "RSJ1": PRAGMA application_id marks the file as ours
BUSY_TIMEOUT_S = 10.0
BATCH_MOST = 256  # writes per group commit, at most
# SQLite's page cache per connection: the kernel caches the file anyway, and a cache that
# fills up as the journal grows would make memory grow with the number of files.
CACHE_KIB = 1024
# The newest migration of journal/schema.py (a test keeps them equal): a journal that has
# it is opened without importing sqlite_utils, which costs more than the rest of the open.
NEWEST_MIGRATION = "0017_fewer_state_indexes"
T = TypeVar("T")


# What to do about a damaged journal, said the same way by every command (start of `run`
# and `backfill`, `status`, `doctor`, `journal check`). Never "delete it and start again":
# a journal started from nothing knows no upload, and only reconcile finds them again.
DAMAGED_HINT = (
    "stop reka-sync and keep the file; restore the latest backup (`reka-sync journal "
    "backup`; the timer reka-sync-journal-backup keeps daily copies in "
    "/var/lib/reka-sync/backups) with the service stopped, or move the damaged file aside "
    "and run `reka-sync reconcile --apply` to rebuild it from the API"
)
DAMAGE_SHOWN = 300  # characters of SQLite's findings quoted in the message; the rest elided


def damaged_message(path: Path, what: str) -> str:
    """Given the journal's path and what SQLite found wrong with it, return the one message
    every command gives about a damaged journal: what is wrong, and the way back."""
    what = " ".join(what.split())  # SQLite's findings span lines; the message is one
    found = what if len(what) <= DAMAGE_SHOWN else what[: DAMAGE_SHOWN - 1] + "…"
    return f"the journal {path} is damaged ({found}); {DAMAGED_HINT}"


class JournalDamaged(JournalError):
    """The journal file is damaged (SQLite's check failed, or it is not a database at all).

    A JournalError (exit 74 where nothing else is said); `run` and `backfill` stop with
    exit 1 on it at start, before anything writes to the file.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        super().__init__(damaged_message(path, what))


class JournalConnection:
    """The journal file, opened for this process. Safe to share between threads."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        # Reads use their own connection, so they never wait for a commit's fsync.
        self._reader = conn
        self._read_lock = self._lock
        self._writer: GroupWriter | None = None
        self._check: IntegrityCheck | None = None
        # Stat keys read from the rows, by root: (the cache's generation then, the keys
        # packed), for `keep_stat_keys` to cache once the walk that asked is done.
        self._stale_keys: dict[str, tuple[int, bytes]] = {}
        self._found_due = False  # the last claim of uploads found some (the next may too)
        self.path = path

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, check_beside: bool = False) -> Self:
        """Given a path, return the open, migrated journal. Raise JournalDamaged if the file
        is damaged (checked before anything writes to it), JournalError if unusable.

        `check_beside`: a journal closed cleanly (no WAL left over) is checked on a thread
        of its own while the caller reads (a backfill's walk); every write waits for the
        verdict, and `checked` gives it. Otherwise the check is done before this returns.
        """
        _refuse_foreign_file(path)
        if readonly and not path.exists():
            raise NoJournalYet(
                f"no journal at {path} yet; `reka-sync run` or `backfill` creates it"
            )
        check = None
        if not readonly:
            if check_beside and _closed_cleanly(path):
                check = IntegrityCheck(path)
            else:
                _require_intact_before_writing(path)
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
        journal._check = check
        try:
            with mapped(path):
                journal._prepare(readonly)
        except JournalError:
            conn.close()
            raise
        return journal

    def checked(self) -> None:
        """Return once the integrity check begun at open is done (at once if there was none).
        Raise JournalDamaged if it found damage, JournalError if the file could not be read."""
        if self._check is not None:
            self._check.wait()

    def _prepare(self, readonly: bool) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
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
        conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()
        self._writer = GroupWriter(conn, self.path, self.checked)
        self._reader = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False
        )
        self._reader.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._reader.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        self._read_lock = threading.RLock()

    def _migrate(self) -> None:
        if self._migrated():
            return
        self.checked()  # a damaged journal is never migrated
        from reka_sync.journal import snapshot

        if self._empty():
            with mapped(self.path):
                if snapshot.create(self._conn):
                    return
        import sqlite_utils  # only writers migrate; `status` never pays for the import

        from reka_sync.journal.schema import migrations

        with mapped(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                migrations.apply(sqlite_utils.Database(self._conn, execute_plugins=False))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _empty(self) -> bool:
        return not self._conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()

    def _migrated(self) -> bool:
        """Return True if the journal has every migration (read-only; False if unsure)."""
        try:
            found = self._conn.execute(
                "SELECT 1 FROM _sqlite_migrations WHERE migration_set = 'reka-sync' AND name = ?",
                (NEWEST_MIGRATION,),
            ).fetchall()
        except sqlite3.OperationalError:
            return False  # no migration table yet: a new journal
        return bool(found)

    def close(self) -> None:
        """Finish the writes handed over so far, then close; the file stays as it is."""
        if self._writer is not None:
            self._writer.stop()
        with self._lock, self._read_lock:
            if self._reader is not self._conn:
                self._reader.close()
            self._conn.close()

    def _run(self, work: Callable[[sqlite3.Connection], T], *, durable: bool = False) -> T:
        """Given a write (a function of the connection), run it in the next group commit
        and return its result once that commit is done.

        `durable`: the commit is fsynced before this returns (power-loss safe); every other
        commit survives a crash of the process, and is fsynced with the next durable one.
        Raise JournalError if the write or its commit fails.
        """
        if self._writer is None:
            raise JournalError(f"journal {self.path} is open read-only")
        return self._writer.run(work, durable)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._read_lock, mapped(self.path):
            cursor = self._reader.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return list(cursor.fetchall())

    def require_intact(self) -> None:
        """Raise JournalDamaged, saying what to do, if SQLite's quick check finds damage."""
        verdict = self.check_integrity()
        if verdict != "ok":
            raise JournalDamaged(self.path, verdict)

    def check_integrity(self) -> str:
        """Return SQLite's integrity-check verdict ("ok" when healthy, else what is wrong)."""
        try:
            return "; ".join(str(row[0]) for row in self._read("PRAGMA quick_check"))
        except sqlite3.DatabaseError as exc:
            return str(exc)

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Yield the read connection for the caller alone, SQLite's errors mapped (for the
        journal's own care: backups and full checks, in `maintenance`)."""
        with self._read_lock, mapped(self.path):
            yield self._reader


@dataclass
class _Write(Generic[T]):
    work: Callable[[sqlite3.Connection], T]
    durable: bool
    done: bool = False  # committed (or failed): set by the leader that ran it
    result: T | None = None
    error: BaseException | None = None


class GroupWriter:
    """Group commit without a thread of its own: each write is queued, and the caller that
    holds the writer's lock (the leader) runs every write queued so far in one transaction.

    A caller queues its write, then takes the lock: if a leader before it ran the write
    meanwhile, it returns that result at once; otherwise it leads, and commits its own
    write with whatever else is queued. A write alone (the common case) is run by its
    own thread, with no hand-over to another thread and back.

    A write is a function of the connection alone, and may be run twice: a batch is run
    without a savepoint per write, and when one write fails the transaction is rolled
    back and the batch run again, each write under its own savepoint.
    """

    def __init__(
        self, conn: sqlite3.Connection, path: Path, gate: Callable[[], None] | None = None
    ) -> None:
        self._conn = conn
        self._path = path
        self._gate = gate  # raises while nothing may be written (the journal is damaged)
        self._queue: deque[_Write[Any]] = deque()
        self._synchronous = ""
        self._closed = False
        self._lead = threading.Lock()  # held by the leader while it runs a batch
        self._leader: int | None = None  # its thread, which may write within a write

    def run(self, work: Callable[[sqlite3.Connection], T], durable: bool) -> T:
        """Given a write, queue it, wait for its commit and return its result."""
        if self._leader == threading.get_ident():  # a write within a write: same batch
            return work(self._conn)
        request = _Write(work, durable)
        self._queue.append(request)
        with self._lead:
            self._leader = threading.get_ident()
            try:
                while not request.done:
                    if self._closed:
                        raise JournalError(f"journal {self._path} is closed")
                    self._commit(self._next_batch())
            finally:
                self._leader = None
        if request.error is not None:
            with mapped(self._path):
                raise request.error
        return request.result  # type: ignore[return-value]

    def stop(self) -> None:
        """Commit what is queued, then refuse every write from now on."""
        with self._lead:
            self._leader = threading.get_ident()
            try:
                while self._queue:
                    self._commit(self._next_batch())
            finally:
                self._leader = None
                self._closed = True

    def _next_batch(self) -> list[_Write[Any]]:
        batch: list[_Write[Any]] = []
        while self._queue and len(batch) < BATCH_MOST:
            batch.append(self._queue.popleft())
        return batch

    def _commit(self, batch: list[_Write[Any]]) -> None:
        conn = self._conn
        try:
            if self._gate is not None:
                self._gate()
                self._gate = None  # passed: no need to ask again
            self._set_synchronous("FULL" if any(w.durable for w in batch) else "NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:  # alone: its failure rolls the transaction back
                batch[0].result = batch[0].work(conn)
            elif not self._all_of(batch):  # one failed: again, each under its own savepoint
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                for write in batch:
                    write.error = None
                    self._one_of_many(write)
            conn.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 (the transaction is lost: every write of it)
            for write in batch:
                write.error = write.error or exc
            self._roll_back()
        finally:
            for write in batch:
                write.done = True

    def _all_of(self, batch: list[_Write[Any]]) -> bool:
        """Run a batch's writes with no savepoint each (two statements fewer per write);
        return False at the first that fails, its effects and the others' to be undone."""
        for write in batch:
            try:
                write.result = write.work(self._conn)
            except Exception:  # noqa: BLE001 (the batch is run again, this write alone raising)
                return False
        return True

    def _one_of_many(self, write: _Write[Any]) -> None:
        conn = self._conn
        conn.execute("SAVEPOINT write")
        try:
            write.result = write.work(conn)
        except Exception as exc:  # noqa: BLE001 (handed to its caller; the others go on)
            write.error = exc
            conn.execute("ROLLBACK TO write")
        conn.execute("RELEASE write")

    def _roll_back(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolled back on its own (a full disk), or cannot: the next BEGIN says

    def _set_synchronous(self, level: str) -> None:
        if level != self._synchronous:
            self._conn.execute(f"PRAGMA synchronous = {level}")
            self._synchronous = level


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
        # Nothing tells a journal whose first page is lost from another file: say both.
        raise JournalDamaged(
            path,
            "it is not a SQLite database; if journal.path names the wrong file, point it at "
            "the journal instead",
        )


class IntegrityCheck:
    """SQLite's quick check of the journal file, on a thread of its own (it reads every
    page: a quarter of a second at 100,000 files, spent beside a backfill's walk)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._error: JournalError | None = None
        self._thread = threading.Thread(target=self._check, name="reka-journal-check", daemon=True)
        self._thread.start()

    def _check(self) -> None:
        try:
            _require_intact_before_writing(self._path)
        except JournalError as exc:
            self._error = exc

    def wait(self) -> None:
        """Return once the check is done. Raise the JournalDamaged (or JournalError) it
        found, every time it is asked."""
        self._thread.join()
        if self._error is not None:
            raise self._error


def _closed_cleanly(path: Path) -> bool:
    """Given the journal's path, return True if no WAL is left over: its last writer closed
    it, and nothing a crash left behind would be checkpointed into a file not yet checked."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size == 0
    except FileNotFoundError:
        return True


def _require_intact_before_writing(path: Path) -> None:
    """Given the journal's path, raise JournalDamaged if SQLite's quick check finds damage.

    Read-only, before anything opens the file for writing: a damaged journal is never
    migrated, and its WAL is never checkpointed into it (a writer's close would), so the
    file stays exactly as it was for a restore or a closer look.
    """
    if not path.exists() or path.stat().st_size == 0:
        return  # nothing yet: SQLite makes a new journal
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {path}: {exc}") from None
    try:
        with mapped(path):
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            verdict = "; ".join(str(row[0]) for row in conn.execute("PRAGMA quick_check"))
    finally:
        conn.close()
    if verdict != "ok":
        raise JournalDamaged(path, verdict)


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
        raise JournalDamaged(path, str(exc)) from None
