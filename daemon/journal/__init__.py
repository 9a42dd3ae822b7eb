"""The SQLite journal: the source of truth, and the only module that speaks SQL.

How this works
--------------
* One row per file in ``files`` (keyed by absolute path) and an append-only
  ``events`` table: every state change writes both in one transaction, so
  ``reka-sync show`` tells exactly what happened and in what order.
* Writes use ``BEGIN IMMEDIATE`` so two processes (the service and a
  backfill) queue on SQLite's write lock instead of deadlocking; WAL lets
  readers (``status``) run beside them. ``synchronous=FULL`` makes a
  committed state survive power loss: every state change is committed
  before the effect it unlocks.
* Upload work is claimed with a lease (owner + expiry) in one
  ``UPDATE ... RETURNING``; a process that dies leaves its leases to expire,
  and the next claim takes the rows over (event ``reclaim``).
* The schema is versioned with sqlite-utils' ``Migrations``; the file is
  stamped with ``PRAGMA application_id`` so we never write into a database
  that is not ours.
* One connection per Journal object, guarded by a lock, shared by threads.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from daemon.errors import JournalError
from daemon.journal.records import (
    JOB_COLUMNS,
    WRITABLE,
    HistoryEntry,
    Job,
    LeaseLost,
    Move,
    Pause,
    ScanSummary,
    SeenFile,
)
from daemon.journal.rows import (
    checked_row,
    in_chunks,
    log_event,
    row_by_id,
    rows_by_path,
    sql_values,
    stat_of,
    to_job,
)
from daemon.journal.schema import APPLICATION_ID, migrations
from daemon.lifecycle import Event, State, next_state

BUSY_TIMEOUT_S = 10.0
UPLOAD_CLAIMABLE = (State.QUEUED.value, State.RETRY_WAIT.value)

__all__ = [
    "HistoryEntry",
    "Job",
    "Journal",
    "LeaseLost",
    "Move",
    "Pause",
    "ScanSummary",
    "SeenFile",
]


class Journal:
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
    def open(cls, path: Path, *, readonly: bool = False) -> Journal:
        """Given a path, return the open, migrated journal. Raise JournalError if unusable."""
        _refuse_foreign_file(path)
        if readonly and not path.exists():
            raise JournalError(
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
            with _mapped(path):
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
        with self._lock, _mapped(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._read_lock, _mapped(self.path):
            cursor = self._reader.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return list(cursor.fetchall())

    # -- recording what the filesystem shows -------------------------------------------

    def record_scan(self, seen: Iterable[SeenFile], now: float, priority: int = 1) -> ScanSummary:
        """Given files a scan or the watcher saw, record new ones and stat changes at once.

        Idempotent on path: an unchanged file writes nothing. Return how many were new,
        changed and unchanged.
        """
        summary = ScanSummary()
        batch = list({item.path: item for item in seen}.values())  # last word per path
        recorded = self._recorded_stats([item.path for item in batch])
        missing = State.MISSING.value
        todo = []
        for item in batch:
            known = recorded.get(item.path)  # (size, mtime_ns, inode, device, state)
            if known is not None and known[:4] == item.stat and known[4] != missing:
                summary.unchanged += 1
            else:
                todo.append(item)
        if not todo:
            return summary  # an unchanged tree costs reads only, no write transaction
        with self._write() as conn:
            rows = rows_by_path(conn, [item.path for item in todo])
            for item in todo:
                row = rows.get(item.path)
                if row is None:
                    self._insert(conn, item, now, priority)
                    summary.new += 1
                elif stat_of(row).same_content_as(item.stat) and row["state"] != State.MISSING:
                    summary.unchanged += 1
                elif self._note_change(conn, row, item, now):
                    summary.changed += 1
                else:
                    summary.unchanged += 1
        return summary

    def _recorded_stats(self, paths: list[str]) -> dict[str, tuple[Any, ...]]:
        found: dict[str, tuple[Any, ...]] = {}
        with self._read_lock, _mapped(self.path):
            for chunk, marks in in_chunks(paths, 900):
                rows = self._reader.execute(
                    "SELECT path, size, mtime_ns, inode, device, state FROM files"
                    f" WHERE path IN ({marks})",
                    chunk,
                )
                found.update((row[0], row[1:]) for row in rows)
        return found

    def _insert(self, conn: sqlite3.Connection, item: SeenFile, now: float, priority: int) -> None:
        s = item.stat
        cursor = conn.execute(
            "INSERT INTO files (path, root, rel_path, size, mtime_ns, inode, device, quiet_since,"
            " state, priority, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                item.path,
                item.root,
                item.rel_path,
                s.size,
                s.mtime_ns,
                s.inode,
                s.device,
                item.quiet_since,
                State.DISCOVERED.value,
                priority,
                now,
                now,
            ),
        )
        log_event(
            conn,
            int(cursor.lastrowid or 0),
            now,
            Event.SEEN,
            None,
            State.DISCOVERED,
            {"size": s.size},
        )

    def _note_change(
        self, conn: sqlite3.Connection, row: sqlite3.Row, item: SeenFile, now: float
    ) -> bool:
        state = State(row["state"])
        if state in (State.UPLOADING, State.UPLOADED, State.FILING):
            return False  # the worker in charge compares stats itself
        event = Event.SEEN if state in (State.DISCOVERED, State.MISSING) else Event.CHANGED
        s = item.stat
        self._apply(
            conn,
            row,
            event,
            now,
            {
                "size": s.size,
                "mtime_ns": s.mtime_ns,
                "inode": s.inode,
                "device": s.device,
                "quiet_since": item.quiet_since,
                "sample_hash": None,
            },
            {"size": s.size, "mtime_ns": s.mtime_ns},
        )
        return True

    # -- state changes -----------------------------------------------------------------

    def transition(
        self,
        job_id: int,
        event: Event,
        now: float,
        *,
        expect: State | None = None,
        owner: str | None = None,
        detail: dict[str, Any] | None = None,
        **changes: Any,
    ) -> Job:
        """Given a job, an event and column changes, commit the move and its history entry.

        Return the updated job. Raise IllegalTransition if the lifecycle forbids the move,
        LeaseLost if `owner` no longer holds the job's lease, JournalError if the job is gone
        or not in the `expect`ed state.
        """
        with self._write() as conn:
            row = checked_row(conn, job_id, expect, owner)
            return self._apply(conn, row, event, now, changes, detail)

    def apply_many(self, moves: Sequence[Move], now: float) -> None:
        """Given several jobs' moves (an event, or a note if event is None), commit them at once."""
        with self._write() as conn:
            for move in moves:
                row = row_by_id(conn, move.job_id)
                if move.event is None:
                    self._update(
                        conn,
                        row,
                        f"note:{move.note}",
                        State(row["state"]),
                        now,
                        move.changes,
                        move.detail,
                    )
                else:
                    self._apply(conn, row, move.event, now, move.changes, move.detail)

    def annotate(
        self,
        job_id: int,
        now: float,
        note: str,
        *,
        owner: str | None = None,
        detail: dict[str, Any] | None = None,
        **changes: Any,
    ) -> Job:
        """Given a job, a note and column changes, commit them without a change of state."""
        with self._write() as conn:
            row = checked_row(conn, job_id, None, owner)
            return self._update(
                conn, row, f"note:{note}", State(row["state"]), now, changes, detail
            )

    def begin_send(
        self,
        job_id: int,
        owner: str,
        now: float,
        sample_hash: str,
        checked: Iterable[int],
        **changes: Any,
    ) -> Job | None:
        """Given a leased job about to be sent, mark it sending unless a twin got ahead of it.

        A twin is another job with the same size and sample whose content is being sent or
        has reached the API, and that is not among the `checked` ids (twins the caller has
        already compared digests with). Then nothing is written and None is returned: the
        caller looks again later instead of uploading the same content twice. The check
        and the mark are one transaction.
        """
        exclude = [job_id, *checked]
        marks = ", ".join("?" for _ in exclude)
        with self._write() as conn:
            row = checked_row(conn, job_id, State.UPLOADING, owner)
            twin = conn.execute(
                "SELECT id FROM files WHERE size = ? AND sample_hash = ?"
                f" AND id NOT IN ({marks}) AND ((state = ? AND outcome_unknown = 1"
                " AND lease_expires > ?) OR digest IS NOT NULL) LIMIT 1",
                (row["size"], sample_hash, *exclude, State.UPLOADING.value, now),
            ).fetchone()
            if twin is not None:
                return None
            changes = {**changes, "sample_hash": sample_hash, "outcome_unknown": 1}
            detail = {"attempt": changes.get("attempts"), "key": changes.get("upload_key")}
            return self._update(conn, row, "note:sending", State.UPLOADING, now, changes, detail)

    def _apply(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        event: Event,
        now: float,
        changes: dict[str, Any],
        detail: dict[str, Any] | None,
    ) -> Job:
        new = next_state(State(row["state"]), event)
        return self._update(conn, row, event, new, now, changes, detail)

    def _update(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        event: Event | str,
        new: State,
        now: float,
        changes: dict[str, Any],
        detail: dict[str, Any] | None,
    ) -> Job:
        bad = set(changes) - WRITABLE
        if bad:
            raise ValueError(f"not writable columns: {sorted(bad)}")
        old = State(row["state"])
        values = {**changes, "state": new.value, "updated_at": now}
        assignments = ", ".join(f"{name} = ?" for name in values)
        conn.execute(
            f"UPDATE files SET {assignments} WHERE id = ?",
            [*sql_values(values.values()), row["id"]],
        )
        log_event(conn, row["id"], now, event, old, new, detail)
        return to_job(row_by_id(conn, row["id"]))

    def claim_uploads(self, owner: str, now: float, limit: int, lease_seconds: float) -> list[Job]:
        """Given a lease owner, atomically lease up to `limit` due uploads and return them.

        Live files (priority 0) come before backfill work; rows left `uploading` by a dead
        process are taken over once their lease has expired.
        """
        if limit <= 0:
            return []
        with self._write() as conn:
            rows = conn.execute(
                "SELECT id, state FROM files WHERE (state IN (?, ?) AND next_attempt_at <= ?)"
                " OR (state = ? AND lease_expires < ?)"
                " ORDER BY priority, next_attempt_at, id LIMIT ?",
                (*UPLOAD_CLAIMABLE, now, State.UPLOADING.value, now, limit),
            ).fetchall()
            claimed = []
            for job_id, state in rows:
                event = Event.RECLAIM if state == State.UPLOADING.value else Event.CLAIM
                row = row_by_id(conn, job_id)
                claimed.append(
                    self._apply(
                        conn,
                        row,
                        event,
                        now,
                        {
                            "lease_owner": owner,
                            "lease_expires": now + lease_seconds,
                            "outcome_unknown": 1
                            if state == State.UPLOADING.value
                            else row["outcome_unknown"],
                        },
                        {"owner": owner},
                    )
                )
            return claimed

    def renew_leases(
        self, owner: str, now: float, lease_seconds: float, sent: Mapping[int, int] | None = None
    ) -> int:
        """Given an owner, push its leases' expiry to now + lease_seconds; return how many.

        `sent` (bytes sent so far by file id) replaces the owner's progress for `status`.
        """
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE files SET lease_expires = ? WHERE lease_owner = ? AND state = ?",
                (now + lease_seconds, owner, State.UPLOADING.value),
            )
            conn.execute("DELETE FROM progress WHERE owner = ?", (owner,))
            conn.executemany(
                "INSERT OR REPLACE INTO progress (file_id, owner, sent, at) VALUES (?, ?, ?, ?)",
                [(file_id, owner, count, now) for file_id, count in (sent or {}).items()],
            )
            return cursor.rowcount

    def progress(self) -> dict[int, tuple[int, float]]:
        """Return file id -> (bytes sent, when) for uploads in flight, as their owners last said."""
        rows = self._read(
            "SELECT p.file_id, p.sent, p.at FROM progress p JOIN files f ON f.id = p.file_id"
            " WHERE f.state = ?",
            (State.UPLOADING.value,),
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    def expire_leases(self, is_dead: Callable[[str], bool]) -> int:
        """Given a test of owners, end at once the leases held by dead ones; return how many."""
        owners = [
            r[0]
            for r in self._read(
                "SELECT DISTINCT lease_owner FROM files"
                " WHERE state = ? AND lease_owner IS NOT NULL",
                (State.UPLOADING.value,),
            )
        ]
        dead = [o for o in owners if is_dead(o)]
        if not dead:
            return 0
        with self._write() as conn:
            marks = ", ".join("?" for _ in dead)
            cursor = conn.execute(
                f"UPDATE files SET lease_expires = 0 WHERE state = ? AND lease_owner IN ({marks})",
                (State.UPLOADING.value, *dead),
            )
            return cursor.rowcount

    # -- queries -----------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        """Given an id, return the job. Raise JournalError if there is none."""
        with self._read_lock, _mapped(self.path):
            return to_job(row_by_id(self._reader, job_id))

    def find(self, path: str) -> Job | None:
        """Given an absolute path, return its job, or None if the journal never saw it."""
        rows = self._read(f"SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE path = ?", (path,))
        return to_job(rows[0]) if rows else None

    def jobs(
        self, states: Iterable[State], *, due_before: float | None = None, limit: int = 1000
    ) -> list[Job]:
        """Given states (and optionally a due time), return matching jobs, oldest due first."""
        names = [s.value for s in states]
        marks = ", ".join("?" for _ in names)
        sql = f"SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE state IN ({marks})"
        params: list[Any] = list(names)
        if due_before is not None:
            sql += " AND next_attempt_at <= ?"
            params.append(due_before)
        sql += " ORDER BY priority, next_attempt_at, id LIMIT ?"
        return [to_job(r) for r in self._read(sql, [*params, limit])]

    def uploaded_twins(self, size: int, sample_hash: str, exclude_id: int) -> list[Job]:
        """Given a size and sample, return other jobs whose content reached the API."""
        rows = self._read(
            f"SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE size = ? AND sample_hash = ?"
            " AND id != ? AND digest IS NOT NULL AND video_id IS NOT NULL ORDER BY id",
            (size, sample_hash, exclude_id),
        )
        return [to_job(r) for r in rows]

    def known_video_ids(self, video_ids: Iterable[str]) -> set[str]:
        """Given remote video ids, return those the journal knows."""
        known: set[str] = set()
        for chunk, marks in in_chunks(video_ids):
            rows = self._read(f"SELECT video_id FROM files WHERE video_id IN ({marks})", chunk)
            known.update(r[0] for r in rows)
        return known

    def tally(self, job_ids: Iterable[int]) -> dict[State, tuple[int, int]]:
        """Given job ids, return how many of them, and how many bytes, are in each state."""
        counts = dict.fromkeys(State, (0, 0))
        for chunk, marks in in_chunks(job_ids):
            rows = self._read(
                f"SELECT state, count(*), total(size) FROM files WHERE id IN ({marks})"
                " GROUP BY state",
                chunk,
            )
            for state, count, size in rows:
                old_count, old_size = counts[State(state)]
                counts[State(state)] = (old_count + count, old_size + int(size))
        return counts

    def jobs_by_ids(self, job_ids: Iterable[int]) -> list[Job]:
        """Given job ids, return those jobs (in id order)."""
        found: list[Job] = []
        for chunk, marks in in_chunks(job_ids):
            rows = self._read(
                f"SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE id IN ({marks})", chunk
            )
            found.extend(to_job(r) for r in rows)
        return sorted(found, key=lambda j: j.id)

    def ids_of(self, paths: Iterable[str]) -> list[int]:
        """Given absolute paths, return the ids of those the journal knows."""
        with self._read_lock, _mapped(self.path):
            return [r["id"] for r in rows_by_path(self._reader, list(paths)).values()]

    def counts(self) -> dict[State, int]:
        """Return how many files are in each state (every state present, zeros included)."""
        found = {r[0]: r[1] for r in self._read("SELECT state, count(*) FROM files GROUP BY state")}
        return {state: int(found.get(state.value, 0)) for state in State}

    def history(self, job_id: int) -> list[HistoryEntry]:
        """Given a job id, return its events in the order they happened."""
        rows = self._read(
            "SELECT at, event, from_state, to_state, detail FROM events"
            " WHERE file_id = ? ORDER BY id",
            (job_id,),
        )
        return [
            HistoryEntry(
                r["at"],
                r["event"],
                r["from_state"],
                r["to_state"],
                json.loads(r["detail"]) if r["detail"] else {},
            )
            for r in rows
        ]

    def recent_failures(self, limit: int = 10) -> list[Job]:
        """Return the most recently failed jobs, newest first."""
        rows = self._read(
            f"SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE state = ?"
            " ORDER BY updated_at DESC LIMIT ?",
            (State.FAILED.value, limit),
        )
        return [to_job(r) for r in rows]

    def recorded_under(self, root: str) -> set[tuple[str, int, int, int, int]]:
        """Given a root, return (path, size, mtime_ns, inode, device) of its present files.

        Files recorded as missing are left out: seeing one again is news.
        """
        with self._read_lock, _mapped(self.path):
            return set(
                self._reader.execute(
                    "SELECT path, size, mtime_ns, inode, device FROM files"
                    " WHERE root = ? AND state != ?",
                    (root, State.MISSING.value),
                )
            )

    def group_ids(self) -> dict[str, str]:
        """Return the cached group name → id map."""
        return {r["name"]: r["group_id"] for r in self._read("SELECT name, group_id FROM groups")}

    def save_group(self, name: str, group_id: str, now: float) -> None:
        """Given a group's name and id, cache them."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO groups (name, group_id, updated_at) VALUES (?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET group_id = excluded.group_id,"
                " updated_at = excluded.updated_at",
                (name, group_id, now),
            )

    def forget_group(self, name: str) -> None:
        """Given a group name, drop its cached id (it was deleted remotely)."""
        with self._write() as conn:
            conn.execute("DELETE FROM groups WHERE name = ?", (name,))

    def set_pause(self, kind: str, until: float, reason: str) -> None:
        """Given a kind of request, pause it until `until` (seconds since the epoch)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO pauses (kind, until, reason) VALUES (?,?,?) ON CONFLICT(kind)"
                " DO UPDATE SET until = max(until, excluded.until), reason = excluded.reason",
                (kind, until, reason),
            )

    def clear_pause(self, kind: str) -> None:
        """Given a kind, lift its pause."""
        with self._write() as conn:
            conn.execute("DELETE FROM pauses WHERE kind = ?", (kind,))

    def pauses(self, now: float) -> list[Pause]:
        """Return the pauses still in force at `now`."""
        rows = self._read("SELECT kind, until, reason FROM pauses WHERE until > ?", (now,))
        return [Pause(r["kind"], r["until"], r["reason"]) for r in rows]

    def set_root_available(
        self, root: str, available: bool, now: float, mount: str | None = None
    ) -> bool:
        """Given a root, whether it is there and its mount point, record it; True if it changed."""
        rows = self._read("SELECT available, since, mount FROM roots WHERE path = ?", (root,))
        was = bool(rows[0]["available"]) if rows else None
        last_mount = rows[0]["mount"] if rows else None
        mount = mount if available and mount else last_mount
        if was == available and mount == last_mount:
            return False
        since = rows[0]["since"] if was == available else now
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO roots (path, available, since, mount) VALUES (?,?,?,?)",
                (root, int(available), since, mount),
            )
        return was != available

    def root_mounts(self) -> dict[str, str]:
        """Return each root's mount point when it was last there (roots never there left out)."""
        rows = self._read("SELECT path, mount FROM roots WHERE mount IS NOT NULL")
        return {r["path"]: r["mount"] for r in rows}

    def unavailable_roots(self) -> dict[str, float]:
        """Return the roots last seen unavailable, with since when."""
        rows = self._read("SELECT path, since FROM roots WHERE available = 0")
        return {r["path"]: r["since"] for r in rows}

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
def _mapped(path: Path) -> Iterator[None]:
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
        raise JournalError(f"journal {path} is damaged or not a database: {exc}") from None
