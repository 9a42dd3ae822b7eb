"""The journal's indexing tables: runs, the features of each video, the daily count.

Each file that was ever indexed has one row in ``indexing``: its current run (whether
it must plan, when it started, why it is held) with a version for optimistic locking
that only grows, and ``ended_at`` once the run is over (the next run starts fresh).
``features`` keeps, per file, the features of its current video (status, attempts,
last error), also after the run: `show` reads them, and a later run (a reload asking
for more, `retry`) starts from what is ready. ``index_starts`` counts the runs started
per UTC day, in the transaction that records the start. The writes here run inside
the Journal's `commit_index`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from reka_sync.errors import JournalError
from reka_sync.features import FEATURES, Feature, IndexMove, Outcome, Run, day_of, fresh_run
from reka_sync.journal.queries import JournalQueries, scope_sql
from reka_sync.journal.records import Job, Listed, Scope
from reka_sync.journal.rows import in_chunks, log_event, row_by_id
from reka_sync.lifecycle import Event, State
from reka_sync.moves import Changes, Move
from reka_sync.names import from_db

CAPPED = "today's starts are spent"  # why commit_index refused a move (index.max_per_day)
# A run the daily cap holds: its file in indexing, the run going on for its current video.
_HELD = "f.state = ? AND i.held IS NOT NULL AND i.ended_at IS NULL AND i.video_id = f.video_id"


class IndexQueries(JournalQueries):
    """What the journal knows of indexing runs (the Journal has it)."""

    def runs_of(self, jobs: Sequence[Job]) -> dict[int, Run]:
        """Given jobs in indexing, return each one's run: the one going on for its video,
        else a fresh one that keeps what is known of that video's features."""
        runs: dict[int, Run] = {}
        by_id = {j.id: j for j in jobs if j.video_id}
        for chunk, marks in in_chunks(list(by_id), 500):
            rows = self._read(f"SELECT * FROM indexing WHERE file_id IN ({marks})", chunk)
            kept = self._features_of(chunk, by_id)
            recorded = {
                r["file_id"]: r
                for r in rows
                if r["video_id"] == by_id[r["file_id"]].video_id and r["ended_at"] is None
            }
            for job_id in chunk:
                video_id = str(by_id[job_id].video_id)
                row = recorded.get(job_id)
                features = kept.get(job_id, {})
                if row is None:
                    version = next((r["version"] for r in rows if r["file_id"] == job_id), 0)
                    runs[job_id] = fresh_run(job_id, video_id, features, version)
                else:
                    runs[job_id] = Run(
                        job_id,
                        video_id,
                        features,
                        bool(row["needs_plan"]),
                        row["started_at"],
                        row["held"],
                        row["streak"],
                        row["version"],
                    )
        return runs

    def _features_of(self, ids: list[int], jobs: dict[int, Job]) -> dict[int, dict[str, Feature]]:
        """Given job ids and their jobs, return the features recorded for their videos."""
        marks = ", ".join("?" for _ in ids)
        found: dict[int, dict[str, Feature]] = {}
        for r in self._read(f"SELECT * FROM features WHERE file_id IN ({marks})", ids):
            if r["video_id"] != jobs[r["file_id"]].video_id:
                continue  # an earlier video's
            found.setdefault(r["file_id"], {})[r["name"]] = Feature(
                r["name"], r["status"], r["attempts"], r["retry_at"], r["triggered_at"], r["error"]
            )
        return found

    def features_of(self, job: Job) -> list[Feature]:
        """Given a job, return the features of its current video, dependencies first."""
        if not job.video_id or not self._has_table("features"):
            return []
        found = self._features_of([job.id], {job.id: job}).get(job.id, {}).values()
        order = {name: i for i, name in enumerate(FEATURES)}  # dependencies come first
        return sorted(found, key=lambda f: (order.get(f.name, len(order)), f.name))

    def started_on(self, now: float) -> int:
        """Given the time, return how many indexing runs started on that UTC day."""
        if not self._has_table("index_starts"):
            return 0
        rows = self._read("SELECT n FROM index_starts WHERE day = ?", (day_of(now),))
        return int(rows[0][0]) if rows else 0

    def feature_counts(self) -> dict[str, dict[str, int]]:
        """Return, per feature, how many current videos are in each status."""
        if not self._has_table("features"):
            return {}
        rows = self._read(
            "SELECT x.name, x.status, count(*) FROM features x JOIN files f"
            " ON f.id = x.file_id AND f.video_id = x.video_id GROUP BY x.name, x.status"
        )
        counts: dict[str, dict[str, int]] = {}
        for name, status, n in rows:
            counts.setdefault(name, {})[status] = n
        return counts

    def index_held(self) -> int:
        """Return how many videos wait for the daily cap to start indexing."""
        if not self._has_table("indexing"):
            return 0
        rows = self._read(
            f"SELECT count(*) FROM indexing i JOIN files f ON f.id = i.file_id WHERE {_HELD}",
            (State.INDEXING.value,),
        )
        return int(rows[0][0])

    def scope_held(self, scope: Scope) -> list[Listed]:
        """Given a backfill's scope, return its files whose indexing waits for the daily cap."""
        where, params = scope_sql(scope)
        rows = self._read(
            "SELECT f.path, i.held FROM files f JOIN indexing i ON i.file_id = f.id"
            f" WHERE {_HELD} AND {where}",
            [State.INDEXING.value, *params],
        )
        return [Listed(from_db(r[0]), r[1]) for r in rows]

    def indexing_failed(self, job_id: int) -> bool:
        """Given a job, return True if its last failure came from indexing (its video is
        stored: `retry` indexes it again, no upload)."""
        rows = self._read(
            "SELECT from_state FROM events WHERE file_id = ? AND to_state = ?"
            " ORDER BY id DESC LIMIT 1",
            (job_id, State.FAILED.value),
        )
        return bool(rows) and rows[0][0] == State.INDEXING.value

    def done_videos(self, scope: Scope | None = None) -> list[tuple[int, str, frozenset[str]]]:
        """Return every done job with a video (in `scope`, if given): id, root-relative
        path, features ready."""
        ready = (
            "(SELECT group_concat(x.name) FROM features x WHERE x.file_id = f.id"
            " AND x.video_id = f.video_id AND x.status = 'ready')"
            if self._has_table("features")
            else "NULL"  # not migrated yet: nothing was indexed
        )
        where, params = scope_sql(scope) if scope is not None else ("1", [])
        rows = self._read(
            f"SELECT f.id, f.rel_path, {ready} FROM files f"
            f" WHERE f.state = ? AND f.video_id IS NOT NULL AND {where}",
            [State.DONE.value, *params],
        )
        return [(r[0], from_db(r[1]), frozenset((r[2] or "").split(",")) - {""}) for r in rows]

    def _has_table(self, name: str) -> bool:
        """A read-only journal not yet migrated (an older service still runs) lacks it."""
        return bool(self._read("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)))


def refusal(conn: sqlite3.Connection, move: IndexMove, now: float, cap: int) -> str | None:
    """Given a run's move inside a write, return why it cannot be committed (None: it can;
    a start is counted then): the job moved on, another process wrote the run first, or
    CAPPED when `cap` runs started today already."""
    run = move.run
    try:
        row = row_by_id(conn, run.job_id)
    except JournalError as exc:
        return str(exc)
    if row["state"] != State.INDEXING.value or row["video_id"] != run.video_id:
        return "the job moved on"
    found = conn.execute("SELECT version FROM indexing WHERE file_id = ?", (run.job_id,))
    version = found.fetchone()
    if (version[0] if version else 0) != run.version:
        return "another process wrote its run first"
    if move.starts:
        day = day_of(now)
        got = conn.execute("SELECT n FROM index_starts WHERE day = ?", (day,)).fetchone()
        if cap and (got[0] if got else 0) >= cap:
            return CAPPED
        conn.execute(
            "INSERT INTO index_starts (day, n) VALUES (?, 1)"
            " ON CONFLICT (day) DO UPDATE SET n = n + 1",
            (day,),
        )
    return None


def write_run(conn: sqlite3.Connection, move: IndexMove, now: float) -> Move | None:
    """Given a run's move inside a write, write the run and its features; return the
    lifecycle move that ends it (indexed or failed), if it ends."""
    run = move.run
    conn.execute("DELETE FROM features WHERE file_id = ?", (run.job_id,))
    conn.executemany(
        "INSERT INTO features (file_id, name, video_id, status, attempts, retry_at,"
        " triggered_at, error, updated_at) VALUES (:file_id, :name, :video_id, :status,"
        " :attempts, :retry_at, :triggered_at, :error, :now)",
        [
            {**vars(f), "file_id": run.job_id, "video_id": run.video_id, "now": now}
            for f in run.features.values()
        ],
    )
    conn.execute(
        "INSERT INTO indexing (file_id, video_id, needs_plan, started_at, held, streak,"
        " version, ended_at, updated_at) VALUES (:job_id, :video_id, :needs_plan, :started_at,"
        " :held, :streak, :version, :ended_at, :now) ON CONFLICT (file_id) DO UPDATE SET"
        " video_id = excluded.video_id, needs_plan = excluded.needs_plan,"
        " started_at = excluded.started_at, held = excluded.held, streak = excluded.streak,"
        " version = excluded.version, ended_at = excluded.ended_at,"
        " updated_at = excluded.updated_at",
        {
            "job_id": run.job_id,
            "video_id": run.video_id,
            "needs_plan": int(run.needs_plan),
            "started_at": run.started_at,
            "held": run.held,
            "streak": run.streak,
            "version": run.version + 1,
            "ended_at": now if move.outcome is not None else None,
            "now": now,
        },
    )
    if move.outcome is Outcome.INDEXED:
        changes = Changes(next_attempt_at=now, last_error=None)
        event = Event.ARCHIVE if move.then_archive else Event.INDEXED
        return Move(run.job_id, event, changes, {"features": list(run.features)})
    if move.outcome is Outcome.FAILED:
        return Move(run.job_id, Event.FAIL, Changes(last_error=move.reason), {"error": move.reason})
    conn.execute(
        "UPDATE files SET next_attempt_at = ?, updated_at = ? WHERE id = ?",
        (move.next_at, now, run.job_id),
    )
    if move.trigger:
        detail: dict[str, Any] = {"trigger": [n for n, _ in move.trigger]}
        forced = [n for n, force in move.trigger if force]
        if forced:
            detail["force"] = forced
        log_event(conn, run.job_id, now, "note:index", State.INDEXING, State.INDEXING, detail)
    return None
