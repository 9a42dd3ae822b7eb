"""Row-level SQL helpers shared by the Journal's methods (call them inside its locks)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from reka_sync.errors import JournalError, LeaseLost
from reka_sync.journal.records import JOB_COLUMNS, Job
from reka_sync.lifecycle import Event, State
from reka_sync.names import from_db, storable, to_db
from reka_sync.stability import FileStat

# One encoder for every event's detail: json.dumps(sort_keys=True) makes one per call.
_DETAIL = json.JSONEncoder(sort_keys=True).encode


def in_chunks(values: Iterable[Any], size: int = 500) -> Iterator[tuple[list[Any], str]]:
    """Given values for an `IN (...)` clause, yield them in chunks with their `?, ?` marks,
    so no query passes more variables than SQLite allows."""
    items = list(values)
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        yield chunk, ", ".join("?" for _ in chunk)


def rows_by_path(conn: sqlite3.Connection, paths: list[str]) -> dict[str, sqlite3.Row]:
    """Given paths, return their rows by path (one query per 500; an unknown path is left
    out)."""
    rows = _rows_where(conn, "path", [to_db(p) for p in paths])
    return {from_db(r["path"]): r for r in rows}


def rows_by_id(conn: sqlite3.Connection, ids: Iterable[int]) -> dict[int, sqlite3.Row]:
    """Given job ids, return their rows by id (one query per 500; an unknown id is left out)."""
    return {r["id"]: r for r in _rows_where(conn, "id", ids)}


def _rows_where(
    conn: sqlite3.Connection, column: str, keys: Iterable[Any]
) -> Iterator[sqlite3.Row]:
    for chunk, marks in in_chunks(keys):
        cursor = conn.execute(
            f"SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE {column} IN ({marks})", chunk
        )
        cursor.row_factory = sqlite3.Row
        yield from cursor.fetchall()


def checked_row(
    conn: sqlite3.Connection, job_id: int, expect: State | None, owner: str | None
) -> sqlite3.Row:
    row = row_by_id(conn, job_id)
    if expect is not None and row["state"] != expect.value:
        raise JournalError(f"job {job_id} is {row['state']}, not {expect.value}")
    if owner is not None and row["lease_owner"] != owner:
        raise LeaseLost(f"job {job_id} is now leased by {row['lease_owner']}, not {owner}")
    return row


def row_by_id(conn: sqlite3.Connection, job_id: int) -> sqlite3.Row:
    cursor = conn.execute(f"SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE id = ?", (job_id,))
    cursor.row_factory = sqlite3.Row
    row: sqlite3.Row | None = cursor.fetchone()
    if row is None:
        raise JournalError(f"no job with id {job_id}")
    return row


def log_event(
    conn: sqlite3.Connection,
    file_id: int,
    now: float,
    event: Event | str,
    old: State | None,
    new: State,
    detail: dict[str, Any] | None,
) -> None:
    conn.execute(
        "INSERT INTO events (file_id, at, event, from_state, to_state, detail)"
        " VALUES (?,?,?,?,?,?)",
        (
            file_id,
            now,
            str(event),
            old.value if old else None,
            new.value,
            _DETAIL(detail) if detail else None,
        ),
    )


def stat_of(row: sqlite3.Row) -> FileStat:
    return FileStat(row["size"], row["mtime_ns"], row["inode"], row["device"])


def sql_values(values: Iterable[Any]) -> list[Any]:
    return [
        int(v) if isinstance(v, bool) else storable(v) if isinstance(v, str) else v for v in values
    ]


def to_job(row: sqlite3.Row) -> Job:
    return job_of(dict(zip(row.keys(), tuple(row), strict=True)))


def job_of(data: dict[str, Any]) -> Job:
    """Given a row's columns by name (as stored), return the job."""
    data["state"] = State(data["state"])
    data["path"], data["rel_path"] = from_db(data["path"]), from_db(data["rel_path"])
    data["outcome_unknown"] = bool(data["outcome_unknown"])
    return Job(**data)
