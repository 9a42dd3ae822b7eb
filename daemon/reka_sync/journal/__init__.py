"""The SQLite journal: the source of truth, and the only module that speaks SQL.

How this works
--------------
* One row per file in ``files`` (keyed by absolute path) and an append-only
  ``events`` table: every state change writes both in one transaction, so
  ``reka-sync show`` tells exactly what happened and in what order.
* Writes are group-committed (``connection.GroupWriter``): a writer queues its
  write and takes the writer's lock; the thread holding it runs every write
  queued meanwhile in one ``BEGIN IMMEDIATE`` transaction (a write that fails
  is rolled back alone), and every caller waits for the commit that holds its
  write before it acts on it. A write alone is run by its own thread (no
  hand-over). Two processes (the service and a backfill) queue on SQLite's
  write lock instead of deadlocking; WAL lets readers (``status``) run beside
  them.
* Durability: every commit survives a crash of the process (WAL). Only the
  commit of a send (``begin_send``: the upload key, before any byte goes out) is
  also fsynced (``synchronous=FULL``), because it alone guards against a
  duplicate: after a power cut the next start must know the file may have been
  sent, and reconcile it by its key instead of sending it again. Every other
  commit is ``synchronous=NORMAL``: a power cut may lose the last of them, and
  each such loss is redone harmlessly (a claim is a lease that ran out; an
  accepted upload is found again by its key; a poll or a group move is asked
  again; a scan sees the file again). A durable commit also makes durable every
  commit before it.
* Upload work is claimed with a lease (owner + expiry) in one
  transaction, timed at its commit; a process that dies leaves its leases to expire,
  and the next claim takes the rows over (event ``reclaim``).
* The schema is versioned with sqlite-utils' ``Migrations``; the file is
  stamped with ``PRAGMA application_id`` so we never write into a database
  that is not ours.
* Every write of a job row is a ``Move`` from ``outcomes`` (a lifecycle event or a
  note, and typed column changes), applied with its history entry in one
  transaction: what an outcome does to a job is decided there, never here.
* Each Journal holds two connections: one for writes, used only under the
  GroupWriter's lock once the file is open, and a read-only one behind a
  lock, shared by threads, so reads never wait for a commit's fsync
  (``connection.py``). Reads live in ``queries.py``; this module holds every
  write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from reka_sync.errors import IllegalTransition, JournalError, LeaseLost
from reka_sync.features import IndexMove
from reka_sync.journal.connection import mapped
from reka_sync.journal.controls import ControlQueries
from reka_sync.journal.indexing import CAPPED, refusal, write_run
from reka_sync.journal.lifespan import DELETES, DELETES_RESUMED
from reka_sync.journal.queries import STORED_MARKS, STORED_STATES, stat_key
from reka_sync.journal.records import (
    JOB_COLUMNS,
    HistoryEntry,
    Job,
    Listed,
    Pause,
    Replaced,
    ScanSummary,
    Scope,
    SeenFile,
    Skipped,
)
from reka_sync.journal.rows import (
    checked_row,
    in_chunks,
    job_of,
    log_event,
    row_by_id,
    rows_by_id,
    rows_by_path,
    sql_values,
    stat_of,
    to_job,
)
from reka_sync.lifecycle import Event, State, next_state
from reka_sync.moves import Changes, Lease, Move
from reka_sync.names import to_db
from reka_sync.stability import FileStat
from reka_sync.urls import URL_ROOT, UrlItem, name_of

UPLOAD_CLAIMABLE = (State.QUEUED.value, State.RETRY_WAIT.value)
# What one bad item of a scan may raise: it is refused, the others are recorded.
RECORD_ERRORS = (sqlite3.Error, IllegalTransition, ValueError, OverflowError)

__all__ = [
    "CAPPED",
    "DELETES",
    "HistoryEntry",
    "Job",
    "Journal",
    "LeaseLost",
    "Listed",
    "Pause",
    "Replaced",
    "ScanSummary",
    "Scope",
    "SeenFile",
    "Skipped",
    "stat_key",
]


class Journal(ControlQueries):
    """The journal: its reads (JournalQueries, IndexQueries, LifeQueries, ControlQueries)
    and every write.
    Safe to share between threads."""

    def record_scan(self, seen: Iterable[SeenFile], now: float, priority: int = 1) -> ScanSummary:
        """Given files a scan or the watcher saw, record new ones and stat changes at once.

        Idempotent on path: an unchanged file writes nothing. Return how many were new,
        changed and unchanged, and the files that could not be recorded (with why): one
        bad item never holds the others back.
        """
        summary = ScanSummary()
        batch = list({item.path: item for item in seen}.values())  # last word per path
        recorded = self._recorded_stats([item.path for item in batch])
        gone = (State.MISSING.value, State.DELETED.value)
        todo = []
        for item in batch:
            known = recorded.get(item.path)  # (size, mtime_ns, inode, device, state)
            if known is not None and known[:4] == item.stat and known[4] not in gone:
                summary.unchanged += 1
            else:
                todo.append(item)
        if not todo:
            return summary  # an unchanged tree costs reads only, no write transaction

        unchanged = summary.unchanged

        def write(conn: sqlite3.Connection) -> ScanSummary:
            rows = rows_by_path(conn, [item.path for item in todo])
            conn.execute("SAVEPOINT scan")
            try:
                counted = self._record_all(conn, rows, todo, now, priority, unchanged, False)
            except RECORD_ERRORS:  # one item failed: again, each item under its own savepoint
                conn.execute("ROLLBACK TO scan")
                counted = self._record_all(conn, rows, todo, now, priority, unchanged, True)
            conn.execute("RELEASE scan")
            return counted

        return self._run(write)

    def _record_all(
        self,
        conn: sqlite3.Connection,
        rows: Mapping[str, sqlite3.Row],
        todo: Sequence[SeenFile],
        now: float,
        priority: int,
        unchanged: int,
        alone: bool,
    ) -> ScanSummary:
        """Record each item of `todo`; return the summary. `alone`: each under a savepoint,
        an item that fails rolled back and counted as refused (else its error is raised)."""
        summary = ScanSummary(unchanged=unchanged)
        for item in todo:
            if not alone:
                self._record_one(conn, rows.get(item.path), item, now, priority, summary)
                continue
            conn.execute("SAVEPOINT item")
            try:
                self._record_one(conn, rows.get(item.path), item, now, priority, summary)
            except RECORD_ERRORS as exc:
                conn.execute("ROLLBACK TO item")
                summary.refused.append((item.path, str(exc) or type(exc).__name__))
            conn.execute("RELEASE item")
        return summary

    def _record_one(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row | None,
        item: SeenFile,
        now: float,
        priority: int,
        summary: ScanSummary,
    ) -> None:
        if row is None:
            self._insert(conn, item, now, priority)
            summary.new += 1
        elif stat_of(row).same_content_as(item.stat) and row["state"] not in (
            State.MISSING,
            State.DELETED,
        ):
            summary.unchanged += 1
        elif self._note_change(conn, row, item, now):
            summary.changed += 1
        else:
            summary.unchanged += 1

    def _insert(self, conn: sqlite3.Connection, item: SeenFile, now: float, priority: int) -> None:
        s = item.stat
        cursor = conn.execute(
            "INSERT INTO files (path, root, rel_path, size, mtime_ns, inode, device, quiet_since,"
            " state, priority, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                to_db(item.path),
                item.root,
                to_db(item.rel_path),
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

    def record_skipped(self, skipped: Iterable[Skipped], now: float) -> int:
        """Given paths a scan passed over (links not followed, FIFOs, devices), record each
        as skipped with its reason; a file waiting for upload that became one is skipped
        too. Return how many were recorded."""
        batch = list({item.path: item for item in skipped}.values())
        if not batch:
            return 0

        def write(conn: sqlite3.Connection) -> int:
            recorded = 0
            rows = rows_by_path(conn, [item.path for item in batch])
            for item in batch:
                row = rows.get(item.path)
                if row is None:
                    seen = SeenFile(item.path, item.root, item.rel_path, FileStat(0, 0, 0, 0), now)
                    self._insert(conn, seen, now, 1)
                    row = rows_by_path(conn, [item.path])[item.path]
                elif State(row["state"]) not in (State.DISCOVERED, State.QUEUED, State.RETRY_WAIT):
                    continue
                if row["last_error"] != item.reason or row["state"] != State.SKIPPED.value:
                    move = Move(row["id"], Event.IGNORE, Changes(last_error=item.reason))
                    self._commit(conn, row, move, now)
                    recorded += 1
            return recorded

        return self._run(write)

    def _note_change(
        self, conn: sqlite3.Connection, row: sqlite3.Row, item: SeenFile, now: float
    ) -> bool:
        if row["state"] == State.UPLOADING.value:
            return False  # the worker sending it compares stats itself
        s = item.stat
        back = stat_of(row).same_content_as(s)  # a missing or deleted file back as it was
        if back and row["state"] == State.DELETED and row["video_id"] is None:
            move = Move(row["id"], Event.REQUEUE, Changes(quiet_since=item.quiet_since))
        elif back:  # same chain (a deleted one finds its video again)
            move = Move(row["id"], Event.SEEN, Changes(quiet_since=item.quiet_since))
        else:
            from reka_sync import outcomes  # writers only: `status` and `show` skip it

            move = outcomes.content_changed(to_job(row), s, item.quiet_since)
        self._commit(conn, row, move, now)
        return True

    def apply(
        self, move: Move, now: float, *, expect: State | None = None, owner: str | None = None
    ) -> Job:
        """Given a move (an event or a note, and typed row changes), commit it with its
        history entry; return the updated job.

        Raise IllegalTransition if the lifecycle forbids the move, LeaseLost if `owner` no
        longer holds the job's lease, JournalError if the job is gone or not in the
        `expect`ed state.
        """

        def write(conn: sqlite3.Connection) -> Job:
            return self._commit_job(conn, checked_row(conn, move.job_id, expect, owner), move, now)

        return self._run(write)

    def apply_many(self, moves: Sequence[Move], now: float) -> list[tuple[Move, str]]:
        """Given several jobs' moves, commit them in one transaction; return the moves that
        could not be made (a job another process moved on, or removed), each with why.

        One bad move never holds the others back: they are committed without it.
        """

        def write(conn: sqlite3.Connection) -> list[tuple[Move, str]]:
            refused: list[tuple[Move, str]] = []
            ids = [move.job_id for move in moves]
            rows = rows_by_id(conn, ids) if len(set(ids)) == len(ids) else {}
            for move in moves:
                try:  # both are raised before the move writes anything: no savepoint
                    row = rows.get(move.job_id) or row_by_id(conn, move.job_id)
                    self._commit(conn, row, move, now)
                except (IllegalTransition, JournalError) as exc:
                    refused.append((move, str(exc)))
            return refused

        return self._run(write) if moves else []

    def commit_index(
        self, moves: Sequence[IndexMove], now: float, cap: int
    ) -> list[tuple[IndexMove, str]]:
        """Given indexing runs' moves, commit them in one transaction; return those refused,
        each with why: the job moved on, another process wrote its run first (leave it), or
        CAPPED: a start when `cap` runs (0: no cap) started today already (hold it instead).
        A move's triggers may be sent once it is committed: a run that ends moves its job
        to done or failed in the same transaction."""

        def write(conn: sqlite3.Connection) -> list[tuple[IndexMove, str]]:
            refused: list[tuple[IndexMove, str]] = []
            for move in moves:
                why = refusal(conn, move, now, cap)
                if why:
                    refused.append((move, why))
                    continue
                ending = write_run(conn, move, now)
                if ending is not None:
                    self._commit(conn, row_by_id(conn, ending.job_id), ending, now)
            return refused

        # A start counted and triggers about to go out survive a power cut (the cap holds).
        durable = any(m.trigger for m in moves)
        return self._run(write, durable=durable) if moves else []

    def record_deletion(self, move: Move, video_id: str, reason: str, now: float) -> None:
        """Given the move of a job whose video reka-sync deleted on its own, commit it with
        the deletion counted for the hourly cap."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO deletions (at, file_id, video_id, reason) VALUES (?,?,?,?)",
                (now, move.job_id, video_id, reason),
            )
            self._commit(conn, row_by_id(conn, move.job_id), move, now)

        self._run(write)

    def count_deletion(self, video_id: str, reason: str, now: float) -> None:
        """Given a video reka-sync deleted on its own for no job (a replaced content), count it
        for the hourly cap."""
        self._execute(
            "INSERT INTO deletions (at, file_id, video_id, reason) VALUES (?,?,?,?)",
            (now, None, video_id, reason),
        )

    def record_urls(self, items: Sequence[UrlItem], now: float) -> int:
        """Given URLs to upload, record each new one queued (a URL known already is left as
        it is: uploaded once); return how many were new."""

        def write(conn: sqlite3.Connection) -> int:
            new = 0
            for item in items:
                cursor = conn.execute(
                    "INSERT INTO files (path, root, rel_path, size, mtime_ns, inode, device,"
                    " quiet_since, state, priority, group_name, created_at, updated_at)"
                    " VALUES (?,?,?,0,0,0,0,?,?,1,?,?,?) ON CONFLICT (path) DO NOTHING",
                    (
                        item.url,
                        URL_ROOT,
                        name_of(item),
                        now,
                        State.QUEUED.value,
                        *(item.group, now, now),
                    ),
                )
                if cursor.rowcount:
                    new += 1
                    file_id = int(cursor.lastrowid or 0)
                    detail = {"url": item.url, "group": item.group}
                    log_event(conn, file_id, now, Event.SEEN, None, State.QUEUED, detail)
            return new

        return self._run(write) if items else 0

    def wake_held(self, now: float) -> int:
        """Given the time, make every run the daily cap holds due now (the cap may have
        changed); return how many."""

        def write(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE files SET next_attempt_at = ? WHERE state = ? AND id IN"
                " (SELECT file_id FROM indexing WHERE held IS NOT NULL AND ended_at IS NULL)",
                (now, State.INDEXING.value),
            ).rowcount

        return self._run(write)

    def begin_send(
        self,
        move: Move,
        owner: str,
        now: float | Callable[[], float],
        sample_hash: str,
        checked: Iterable[int],
    ) -> Job | None:
        """Given the `sending` move of a leased job, commit it unless a twin got ahead of it.

        A twin is another job with the same size and sample whose content is being sent or
        has reached the API, and that is not among the `checked` ids (twins the caller has
        already compared digests with). Then nothing is written and None is returned: the
        caller looks again later instead of uploading the same content twice. The check
        and the commit are one transaction, fsynced before this returns: the send it
        unlocks must be known after a power cut, or the file could go out twice.
        """
        exclude = [move.job_id, *checked]
        marks = ", ".join("?" for _ in exclude)

        def write(conn: sqlite3.Connection) -> Job | None:
            at = now() if callable(now) else now  # the lease is judged when the write runs
            row = checked_row(conn, move.job_id, State.UPLOADING, owner)
            if (row["lease_expires"] or 0) < at:
                raise LeaseLost(f"job {move.job_id}: the lease ran out before the send")
            twin = conn.execute(
                "SELECT id FROM files WHERE size = ? AND sample_hash = ?"
                f" AND id NOT IN ({marks}) AND ((state = ? AND outcome_unknown = 1"
                " AND lease_expires > ?) OR (digest IS NOT NULL AND video_id IS NOT NULL"
                f" AND state IN ({STORED_MARKS})))"
                " LIMIT 1",
                (row["size"], sample_hash, *exclude, State.UPLOADING.value, at, *STORED_STATES),
            ).fetchone()
            if twin is not None:
                return None
            return self._commit_job(conn, row, move, at)

        return self._run(write, durable=True)

    def _commit_job(
        self, conn: sqlite3.Connection, row: sqlite3.Row, move: Move, now: float
    ) -> Job:
        """Commit a move (`_commit`) and return the job as it now is."""
        stored = self._commit(conn, row, move, now)
        return job_of({**dict(zip(row.keys(), tuple(row), strict=True)), **stored})

    def _commit(
        self, conn: sqlite3.Connection, row: sqlite3.Row, move: Move, now: float
    ) -> dict[str, Any]:
        """Write a move to the job's row, with its history entry; return the columns written.

        Raise (before writing anything) IllegalTransition if the lifecycle forbids the move,
        JournalError if the move expects a stat the row no longer has.
        """
        if move.expect is not None and stat_of(row) != move.expect:
            raise JournalError(f"job {row['id']}: its file changed since the move was decided")
        old = State(row["state"])
        new = old if move.event is None else next_state(old, move.event)
        values = {**move.changes.columns(), "state": new.value, "updated_at": now}
        stored = dict(zip(values, sql_values(values.values()), strict=True))
        assignments = ", ".join(f"{name} = ?" for name in stored)
        conn.execute(f"UPDATE files SET {assignments} WHERE id = ?", [*stored.values(), row["id"]])
        event = move.event if move.event is not None else f"note:{move.note}"
        log_event(conn, row["id"], now, event, old, new, move.detail)
        if move.supersede is not None:
            conn.execute(
                "INSERT INTO superseded (file_id, video_id, upload_key, since) VALUES (?,?,?,?)",
                (row["id"], move.supersede.video_id, move.supersede.upload_key, now),
            )
        return stored

    def claim_uploads(
        self,
        owner: str,
        now: float | Callable[[], float],
        limit: int,
        lease_seconds: float,
        running: Sequence[int] = (),
    ) -> list[Job]:
        """Given a lease owner, atomically lease up to `limit` due uploads and return them.

        Given a clock as `now`, the time is read once the write lock is held, so a claim
        that waited for the lock still holds a lease of `lease_seconds` from its commit.
        Live files (priority 0) come before backfill work; rows left `uploading` by a dead
        process are taken over once their lease has expired, never one of the caller's
        own `running` jobs (its worker still sends it, even if its lease lapsed).
        """
        if limit <= 0:
            return []
        if not self._found_due:  # nothing due last time: no write transaction unless some is
            with self._read_lock, mapped(self.path):
                if not _due_uploads(self._reader, now() if callable(now) else now, 1, running):
                    return []
        from reka_sync import outcomes  # writers only: `status` and `show` skip it

        def write(conn: sqlite3.Connection) -> list[Job]:
            at = now() if callable(now) else now
            claimed = []
            lease = Lease(owner, at + lease_seconds)
            for row in _due_uploads(conn, at, limit, running):
                reclaim = row["state"] == State.UPLOADING.value
                move = outcomes.claimed(to_job(row), lease, reclaim)
                claimed.append(self._commit_job(conn, row, move, at))
            return claimed

        claimed = self._run(write)
        self._found_due = bool(claimed)  # more are likely due: the next claim skips the look
        return claimed

    def renew_leases(
        self,
        owner: str,
        now: float,
        lease_seconds: float,
        sent: Mapping[int, int] | None = None,
        held: Iterable[int] | None = None,
    ) -> int:
        """Given an owner, push its leases' expiry to now + lease_seconds; return how many.

        Given `held` (the jobs its workers still run), only those are renewed: a lease
        whose step ended without recording its outcome runs out, so the job is taken over.
        `sent` (bytes sent so far by file id) replaces the owner's progress for `status`.
        """
        jobs = None if held is None else list(held)

        def write(conn: sqlite3.Connection) -> int:
            where = "state = ? AND (lease_owner = ? OR substr(lease_owner, 1, ?) = ?)"
            params: list[Any] = [State.UPLOADING.value, owner, len(owner) + 1, owner + "/"]
            renewed = 0
            for chunk, marks in in_chunks(jobs) if jobs is not None else [([], "")]:
                ids = f" AND id IN ({marks})" if jobs is not None else ""
                cursor = conn.execute(
                    f"UPDATE files SET lease_expires = ? WHERE {where}{ids}",
                    [now + lease_seconds, *params, *chunk],
                )
                renewed += cursor.rowcount
            conn.execute("DELETE FROM progress WHERE owner = ?", (owner,))
            conn.executemany(
                "INSERT OR REPLACE INTO progress (file_id, owner, sent, at) VALUES (?, ?, ?, ?)",
                [(file_id, owner, count, now) for file_id, count in (sent or {}).items()],
            )
            return renewed

        return self._run(write)

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
        marks = ", ".join("?" for _ in dead)
        sql = f"UPDATE files SET lease_expires = 0 WHERE state = ? AND lease_owner IN ({marks})"
        return self._run(lambda conn: conn.execute(sql, (State.UPLOADING.value, *dead)).rowcount)

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        self._run(lambda conn: conn.execute(sql, params))

    def resume_deletes(self, now: float) -> None:
        """Given the time, lift the stop of deletions (the operator's `resume-deletes`): the
        hourly count starts again from now."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM pauses WHERE kind = ?", (DELETES,))
            conn.execute(
                "INSERT OR REPLACE INTO checks (name, at, verdict) VALUES (?, ?, 'resumed')",
                (DELETES_RESUMED, now),
            )

        self._run(write)

    def record_check(self, verdict: str, now: float) -> None:
        """Given the verdict of an integrity check, keep it for `status`."""
        self._execute(
            "INSERT OR REPLACE INTO checks (name, at, verdict) VALUES ('quick_check', ?, ?)",
            (now, verdict),
        )

    def keep_stat_keys(self) -> None:
        """Cache the stat keys `stat_keys_under` last read from the rows, for the next walk
        to read at once; a root whose rows changed since (its generation moved on) is left
        to be read from its rows again."""
        pending, self._stale_keys = self._stale_keys, {}
        if not pending or self._writer is None:
            return

        def write(conn: sqlite3.Connection) -> None:
            for root, (generation, packed) in pending.items():
                conn.execute(
                    "INSERT INTO walk_keys (root, generation, keys) VALUES (?, ?, ?)"
                    " ON CONFLICT (root) DO UPDATE SET keys = excluded.keys"
                    " WHERE walk_keys.generation = excluded.generation",
                    (root, generation, packed),
                )

        self._run(write)

    def set_root_tally(self, root: str, other_extensions: int) -> None:
        """Given a root and how many files its last rescan passed over for their extension,
        record it (for `status`); a count as it was writes nothing (each rescan asks)."""
        rows = self._read("SELECT other_extensions FROM roots WHERE path = ?", (root,))
        if not rows or rows[0][0] == other_extensions:
            return
        self._execute(
            "UPDATE roots SET other_extensions = ? WHERE path = ?", (other_extensions, root)
        )

    def close_superseded(self, replaced_id: int, outcome: str, now: float) -> None:
        """Given a superseded video, record what became of it (deleted, already gone, kept)."""
        self._execute(
            "UPDATE superseded SET outcome = ?, done_at = ? WHERE id = ?",
            (outcome, now, replaced_id),
        )

    def save_group(self, name: str, group_id: str, now: float) -> None:
        """Given a group's name and id, cache them."""
        self._execute(
            "INSERT INTO groups (name, group_id, updated_at) VALUES (?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET group_id = excluded.group_id,"
            " updated_at = excluded.updated_at",
            (name, group_id, now),
        )

    def forget_group(self, name: str) -> None:
        """Given a group name, drop its cached id (it was deleted remotely)."""
        self._execute("DELETE FROM groups WHERE name = ?", (name,))

    def set_pause(self, kind: str, until: float, reason: str) -> None:
        """Given a kind of request, pause it until `until` (seconds since the epoch)."""
        self._execute(
            "INSERT INTO pauses (kind, until, reason) VALUES (?,?,?) ON CONFLICT(kind)"
            " DO UPDATE SET until = max(until, excluded.until), reason = excluded.reason",
            (kind, until, reason),
        )

    def clear_pause(self, kind: str) -> None:
        """Given a kind, lift its pause."""
        self._execute("DELETE FROM pauses WHERE kind = ?", (kind,))

    def set_root_available(
        self, root: str, available: bool, now: float, mount: str | None = None
    ) -> bool | None:
        """Given a root, whether it is there and its mount point, record it; return whether
        it was there before (None: never recorded)."""
        rows = self._read("SELECT available, since, mount FROM roots WHERE path = ?", (root,))
        was = bool(rows[0]["available"]) if rows else None
        last_mount = rows[0]["mount"] if rows else None
        mount = mount if available and mount else last_mount
        if was == available and mount == last_mount:
            return was
        since = rows[0]["since"] if was == available else now
        self._execute(
            "INSERT OR REPLACE INTO roots (path, available, since, mount) VALUES (?,?,?,?)",
            (root, int(available), since, mount),
        )
        return was


def _due_uploads(
    conn: sqlite3.Connection, now: float, limit: int, running: Sequence[int]
) -> list[sqlite3.Row]:
    """Return the rows of up to `limit` uploads due at `now`, live files first.

    One statement of one subquery per state, each read in the order of the (state,
    priority, next_attempt_at) index and cut at `limit`, merged by SQLite: one query over
    all the states at once would sort every queued row at each claim, once per file.
    """
    mine = f" AND id NOT IN ({', '.join('?' for _ in running)})" if running else ""
    pick = f"SELECT * FROM (SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE state = ?"
    order = f"{mine} ORDER BY priority, next_attempt_at LIMIT ?)"
    due = [f"{pick} AND next_attempt_at <= ?{order}" for _ in UPLOAD_CLAIMABLE]
    # Left `uploading` by a process that died: its lease ran out.
    dead = f"{pick} AND lease_expires < ?{order}"
    sql = " UNION ALL ".join([*due, dead]) + " ORDER BY priority, next_attempt_at, id LIMIT ?"
    params: list[Any] = []
    for state in (*UPLOAD_CLAIMABLE, State.UPLOADING.value):
        params += [state, now, *running, limit]
    cursor = conn.execute(sql, [*params, limit])
    cursor.row_factory = sqlite3.Row
    return list(cursor.fetchall())
