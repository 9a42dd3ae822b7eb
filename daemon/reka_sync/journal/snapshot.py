"""A new journal's schema in one transaction: what the migrations leave in an empty file.

A journal made by `schema.migrations` pays for importing sqlite-utils (about 0.1 s of a
backfill's start) and runs every migration one by one. A new, empty file instead gets
the statements below, taken from `sqlite_master` of a journal the migrations made, and
the migrations recorded as applied: the same file, made in a few milliseconds. An
existing journal is still migrated by sqlite-utils; this is only ever a shortcut for an
empty one.

tests/test_journal_snapshot.py checks that a journal made here and one made by the
migrations have the same schema; after a new migration,
`python -m tests.test_journal_snapshot` writes this file anew.
"""

# ruff: noqa: E501  (the statements below are kept exactly as SQLite keeps them)

from __future__ import annotations

import datetime
import sqlite3

from reka_sync.journal.connection import APPLICATION_ID

MIGRATION_SET = "reka-sync"


def create(conn: sqlite3.Connection) -> bool:
    """Given a connection to a journal with no tables, write the whole schema and record
    every migration as applied, in one transaction; return True. Return False, writing
    nothing, if the file has tables after all (another process made it meanwhile)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            conn.execute("ROLLBACK")
            return False
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for statement in STATEMENTS:
            conn.execute(statement)
        applied = str(datetime.datetime.now(datetime.UTC))
        conn.executemany(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES (?, ?, ?)",
            [(MIGRATION_SET, name, applied) for name in MIGRATIONS],
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return True


def dump(conn: sqlite3.Connection) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
    """Given a connection to a journal, return its application id, the statements that
    make its schema (in the order they were made) and the migrations it has applied."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    statements = tuple(
        row[0]
        for row in conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
        )
    )
    names = tuple(
        row[0]
        for row in conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY id",
            (MIGRATION_SET,),
        )
    )
    return app_id, statements, names


# -- written by `python -m tests.test_journal_snapshot`; do not edit below -----------------

MIGRATIONS: tuple[str, ...] = (
    "0001_initial",
    "0002_roots",
    "0003_progress",
    "0004_root_mounts",
    "0006_superseded",
    "0007_root_tally",
    "0008_checks",
    "0009_scale_indexes",
    "0010_state_counts",
    "0011_indexing",
    "0012_deletions",
    "0013_operator_pause",
    "0014_files_seen",
    "0015_files_groups",
    "0016_walk_keys",
    "0017_fewer_state_indexes",
)
STATEMENTS: tuple[str, ...] = (
    """CREATE TABLE "_sqlite_migrations" (
   "id" INTEGER PRIMARY KEY,
   "migration_set" TEXT,
   "name" TEXT,
   "applied_at" TEXT
)""",
    """CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"
    ON "_sqlite_migrations" ("migration_set", "name")""",
    """CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    root TEXT NOT NULL,
    rel_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    device INTEGER NOT NULL,
    quiet_since REAL NOT NULL,
    sample_hash TEXT,
    digest TEXT,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 1,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires REAL,
    upload_key TEXT,
    outcome_unknown INTEGER NOT NULL DEFAULT 0,
    video_id TEXT,
    accepted_at REAL,
    remote_status TEXT,
    group_name TEXT,
    group_id TEXT,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)""",
    """CREATE INDEX files_state_due ON files(state, priority, next_attempt_at)""",
    """CREATE INDEX files_twins ON files(size, sample_hash)""",
    """CREATE INDEX files_video ON files(video_id)""",
    """CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES files(id),
    at REAL NOT NULL,
    event TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    detail TEXT
)""",
    """CREATE INDEX events_file ON events(file_id, id)""",
    """CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    group_id TEXT NOT NULL,
    updated_at REAL NOT NULL
)""",
    """CREATE TABLE pauses (
    kind TEXT PRIMARY KEY,
    until REAL NOT NULL,
    reason TEXT NOT NULL
)""",
    """CREATE TABLE roots (path TEXT PRIMARY KEY, available INTEGER NOT NULL, since REAL NOT NULL, mount TEXT, other_extensions INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE progress (file_id INTEGER PRIMARY KEY, owner TEXT NOT NULL, sent INTEGER NOT NULL, at REAL NOT NULL)""",
    """CREATE TABLE superseded (id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL REFERENCES files(id), video_id TEXT, upload_key TEXT, since REAL NOT NULL, outcome TEXT, done_at REAL)""",
    """CREATE INDEX superseded_open ON superseded(done_at, file_id)""",
    """CREATE TABLE checks (name TEXT PRIMARY KEY, at REAL NOT NULL, verdict TEXT)""",
    """CREATE TABLE state_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID""",
    """CREATE TRIGGER files_counted_in AFTER INSERT ON files BEGIN
            INSERT INTO state_counts (state, n) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
        END""",
    """CREATE TRIGGER files_counted_out AFTER DELETE ON files BEGIN
            UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
        END""",
    """CREATE TRIGGER files_counted_moved AFTER UPDATE OF state ON files
        WHEN OLD.state != NEW.state BEGIN
            UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
            INSERT INTO state_counts (state, n) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
        END""",
    """CREATE TABLE indexing (
            file_id INTEGER PRIMARY KEY REFERENCES files(id),
            video_id TEXT NOT NULL,
            needs_plan INTEGER NOT NULL DEFAULT 1,
            started_at REAL,
            held TEXT,
            streak INTEGER NOT NULL DEFAULT 0,
            version INTEGER NOT NULL DEFAULT 0,
            ended_at REAL,
            updated_at REAL NOT NULL
        )""",
    """CREATE TABLE features (
            file_id INTEGER NOT NULL REFERENCES files(id),
            name TEXT NOT NULL,
            video_id TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            retry_at REAL NOT NULL DEFAULT 0,
            triggered_at REAL,
            error TEXT,
            updated_at REAL NOT NULL,
            PRIMARY KEY (file_id, name)
        ) WITHOUT ROWID""",
    """CREATE TABLE index_starts (day INTEGER PRIMARY KEY, n INTEGER NOT NULL)""",
    """CREATE TABLE deletions (id INTEGER PRIMARY KEY, at REAL NOT NULL, file_id INTEGER, video_id TEXT NOT NULL, reason TEXT NOT NULL)""",
    """CREATE INDEX deletions_at ON deletions(at)""",
    """CREATE TABLE operator_pause (id INTEGER PRIMARY KEY CHECK (id = 1), by TEXT NOT NULL, since REAL NOT NULL, until REAL, abort INTEGER NOT NULL DEFAULT 0)""",
    """CREATE INDEX files_seen ON files(root, path, size, mtime_ns, inode, device)""",
    """CREATE TABLE walk_keys (root TEXT PRIMARY KEY, generation INTEGER NOT NULL DEFAULT 0, keys BLOB)""",
    """CREATE TRIGGER walk_keys_insert AFTER INSERT ON files BEGIN INSERT INTO walk_keys (root, generation) VALUES (new.root, 1) ON CONFLICT (root) DO UPDATE SET generation = generation + 1, keys = NULL; END""",
    """CREATE TRIGGER walk_keys_delete AFTER DELETE ON files BEGIN INSERT INTO walk_keys (root, generation) VALUES (old.root, 1) ON CONFLICT (root) DO UPDATE SET generation = generation + 1, keys = NULL; END""",
    """CREATE TRIGGER walk_keys_update AFTER UPDATE OF root, path, size, mtime_ns, inode, device, state ON files WHEN old.root IS NOT new.root OR old.path IS NOT new.path OR old.size IS NOT new.size OR old.mtime_ns IS NOT new.mtime_ns OR old.inode IS NOT new.inode OR old.device IS NOT new.device OR (old.state IN ('missing', 'deleted')) IS NOT (new.state IN ('missing', 'deleted')) BEGIN INSERT INTO walk_keys (root, generation) VALUES (old.root, 1) ON CONFLICT (root) DO UPDATE SET generation = generation + 1, keys = NULL; INSERT INTO walk_keys (root, generation) VALUES (new.root, 1) ON CONFLICT (root) DO UPDATE SET generation = generation + 1, keys = NULL; END""",
    """CREATE INDEX files_census ON files(root, state, group_name, size)""",
)
