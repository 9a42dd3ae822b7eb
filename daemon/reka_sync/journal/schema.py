"""The journal's schema, versioned with sqlite-utils' Migrations (one per change, never edited)."""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

from reka_sync.journal.connection import APPLICATION_ID

migrations = Migrations("reka-sync")


@migrations(name="0001_initial")
def _initial(db: sqlite_utils.Database) -> None:
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.executescript(_SCHEMA)


_SCHEMA = """
CREATE TABLE files (
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
);
CREATE INDEX files_state_due ON files(state, priority, next_attempt_at);
CREATE INDEX files_twins ON files(size, sample_hash);
CREATE INDEX files_video ON files(video_id);
CREATE INDEX files_root ON files(root);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES files(id),
    at REAL NOT NULL,
    event TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX events_file ON events(file_id, id);
CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    group_id TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE pauses (
    kind TEXT PRIMARY KEY,
    until REAL NOT NULL,
    reason TEXT NOT NULL
);
"""


@migrations(name="0002_roots")
def _roots(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE roots"
        " (path TEXT PRIMARY KEY, available INTEGER NOT NULL, since REAL NOT NULL)"
    )


@migrations(name="0003_progress")
def _progress(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE progress (file_id INTEGER PRIMARY KEY, owner TEXT NOT NULL,"
        " sent INTEGER NOT NULL, at REAL NOT NULL)"
    )


@migrations(name="0004_root_mounts")
def _root_mounts(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE roots ADD COLUMN mount TEXT")  # its mount point when last there


@migrations(name="0006_superseded")
def _superseded(db: sqlite_utils.Database) -> None:
    # Videos of a file's earlier content, kept until their delete succeeded (on_change).
    db.execute(
        "CREATE TABLE superseded (id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL"
        " REFERENCES files(id), video_id TEXT, upload_key TEXT, since REAL NOT NULL,"
        " outcome TEXT, done_at REAL)"
    )
    db.execute("CREATE INDEX superseded_open ON superseded(done_at, file_id)")


@migrations(name="0007_root_tally")
def _root_tally(db: sqlite_utils.Database) -> None:
    # Files under each root the extension filter passed over, at the last rescan.
    db.execute("ALTER TABLE roots ADD COLUMN other_extensions INTEGER NOT NULL DEFAULT 0")


@migrations(name="0008_checks")
def _checks(db: sqlite_utils.Database) -> None:
    # The last integrity check the service ran, for `status`.
    db.execute("CREATE TABLE checks (name TEXT PRIMARY KEY, at REAL NOT NULL, verdict TEXT)")


@migrations(name="0009_scale_indexes")
def _scale_indexes(db: sqlite_utils.Database) -> None:
    # The settle tick pages discovered files by (priority, id); a backfill's progress and
    # summary count its roots' files by state and size from the index alone.
    db.execute("CREATE INDEX files_settle ON files(state, priority)")
    db.execute("CREATE INDEX files_scope ON files(root, state, size)")
    db.execute("DROP INDEX files_root")


@migrations(name="0010_state_counts")
def _state_counts(db: sqlite_utils.Database) -> None:
    # How many files are in each state, kept by triggers in the transaction that moves
    # them: the service's status line reads it instead of counting 100,000 rows.
    db.executescript(
        """
        CREATE TABLE state_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO state_counts (state, n) SELECT state, count(*) FROM files GROUP BY state;
        CREATE TRIGGER files_counted_in AFTER INSERT ON files BEGIN
            INSERT INTO state_counts (state, n) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
        END;
        CREATE TRIGGER files_counted_out AFTER DELETE ON files BEGIN
            UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
        END;
        CREATE TRIGGER files_counted_moved AFTER UPDATE OF state ON files
        WHEN OLD.state != NEW.state BEGIN
            UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
            INSERT INTO state_counts (state, n) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
        END;
        """
    )


@migrations(name="0011_indexing")
def _indexing(db: sqlite_utils.Database) -> None:
    # A file's indexing run (one row per file, kept when the run ends: its version only
    # grows), the features of its video with their status, attempts and errors, and how
    # many runs started on each UTC day (the daily cap).
    db.executescript(
        """
        CREATE TABLE indexing (
            file_id INTEGER PRIMARY KEY REFERENCES files(id),
            video_id TEXT NOT NULL,
            needs_plan INTEGER NOT NULL DEFAULT 1,
            started_at REAL,
            held TEXT,
            streak INTEGER NOT NULL DEFAULT 0,
            version INTEGER NOT NULL DEFAULT 0,
            ended_at REAL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE features (
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
        ) WITHOUT ROWID;
        CREATE TABLE index_starts (day INTEGER PRIMARY KEY, n INTEGER NOT NULL);
        """
    )


@migrations(name="0012_deletions")
def _deletions(db: sqlite_utils.Database) -> None:
    # Videos reka-sync deleted on its own (a local deletion, a replaced content), for the
    # hourly cap; the cap's stop and the operator's resume are kept in `pauses`.
    db.execute(
        "CREATE TABLE deletions (id INTEGER PRIMARY KEY, at REAL NOT NULL, file_id INTEGER,"
        " video_id TEXT NOT NULL, reason TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX deletions_at ON deletions(at)")


@migrations(name="0013_operator_pause")
def _operator_pause(db: sqlite_utils.Database) -> None:
    # `reka-sync pause`: one row while uploads are paused by hand (who, since, until, --now).
    db.execute(
        "CREATE TABLE operator_pause (id INTEGER PRIMARY KEY CHECK (id = 1), by TEXT NOT NULL,"
        " since REAL NOT NULL, until REAL, abort INTEGER NOT NULL DEFAULT 0)"
    )


@migrations(name="0014_files_seen")
def _files_seen(db: sqlite_utils.Database) -> None:
    # What a rescan compares its walk with (`stat_keys_under`), read from the index alone:
    # through `files_scope`, each of a 100,000-file root's rows was a lookup in the table.
    db.execute("CREATE INDEX files_seen ON files(root, path, size, mtime_ns, inode, device)")


@migrations(name="0015_files_groups")
def _files_groups(db: sqlite_utils.Database) -> None:
    # A backfill's summary counts its done files by group (`scope_census`) from the index
    # alone: through `files_scope`, each of a 100,000-file root's rows was read in the table.
    db.execute("CREATE INDEX files_groups ON files(root, state, group_name)")


# A change to what `stat_keys_under` reads (a row added or removed, a name or stat changed,
# a file taken for gone or back) bumps its root's generation and drops its cached keys.
_KEYS_STALE = (
    "INSERT INTO walk_keys (root, generation) VALUES ({root}, 1)"
    " ON CONFLICT (root) DO UPDATE SET generation = generation + 1, keys = NULL;"
)


@migrations(name="0016_walk_keys")
def _walk_keys(db: sqlite_utils.Database) -> None:
    # The stat keys of a root's present files, as `stat_keys_under` last read them (an
    # array of 64-bit ints), so that a rescan of an unchanged tree reads one value, not
    # every row; `generation` tells a cache written late from one gone stale meanwhile.
    db.execute(
        "CREATE TABLE walk_keys (root TEXT PRIMARY KEY,"
        " generation INTEGER NOT NULL DEFAULT 0, keys BLOB)"
    )
    db.execute(
        "CREATE TRIGGER walk_keys_insert AFTER INSERT ON files BEGIN "
        + _KEYS_STALE.format(root="new.root")
        + " END"
    )
    db.execute(
        "CREATE TRIGGER walk_keys_delete AFTER DELETE ON files BEGIN "
        + _KEYS_STALE.format(root="old.root")
        + " END"
    )
    db.execute(
        "CREATE TRIGGER walk_keys_update"
        " AFTER UPDATE OF root, path, size, mtime_ns, inode, device, state ON files"
        " WHEN old.root IS NOT new.root OR old.path IS NOT new.path"
        " OR old.size IS NOT new.size OR old.mtime_ns IS NOT new.mtime_ns"
        " OR old.inode IS NOT new.inode OR old.device IS NOT new.device"
        " OR (old.state IN ('missing', 'deleted')) IS NOT (new.state IN ('missing', 'deleted'))"
        " BEGIN "
        + _KEYS_STALE.format(root="old.root")
        + " "
        + _KEYS_STALE.format(root="new.root")
        + " END"
    )


@migrations(name="0017_fewer_state_indexes")
def _fewer_state_indexes(db: sqlite_utils.Database) -> None:
    # Every index that starts with or holds `state` is rewritten at each of a file's five
    # moves, and each costs its pages in every commit: a backfill of small files spent
    # more on them than on its uploads. The settle tick pages through `files_state_due`
    # now, and one index serves a backfill's counts by state, bytes and groups.
    db.execute("DROP INDEX files_settle")
    db.execute("DROP INDEX files_scope")
    db.execute("DROP INDEX files_groups")
    db.execute("CREATE INDEX files_census ON files(root, state, group_name, size)")
