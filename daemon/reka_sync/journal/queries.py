"""The journal's reads: jobs, history, counts and the small tables, never a write."""

from __future__ import annotations

import json
import os
import sys
from array import array
from collections.abc import Iterable
from typing import Any

from xxhash import xxh3_64_intdigest

from reka_sync.journal.connection import JournalConnection, JournalDamaged, mapped
from reka_sync.journal.records import (
    JOB_COLUMNS,
    HistoryEntry,
    Job,
    Listed,
    Pause,
    Replaced,
    Scope,
)
from reka_sync.journal.rows import in_chunks, row_by_id, rows_by_path, to_job
from reka_sync.lifecycle import State
from reka_sync.names import from_db, to_db

# Content that reached the API and whose video is there: a twin of it is not sent again.
# A file deleted locally keeps its video (until on_delete deletes it: then no video_id),
# so a file moved within the roots finds it, whichever the rescan saw first.
STORED_STATES = tuple(
    s.value
    for s in (
        *(State.UPLOADED, State.FILING, State.INDEXING, State.DONE),
        *(State.DELETED, State.ARCHIVING, State.ARCHIVED),
    )
)
STORED_MARKS = ", ".join("?" for _ in STORED_STATES)


def stat_key(path: str, size: int, mtime_ns: int, inode: int, device: int) -> int:
    """Given a file's path and stat, return the key a walk compares with the journal's
    (`stat_keys_under`): equal stats give equal keys, in every process (the journal keeps
    them). The name's bytes are hashed with xxh3, and that with the stat as a tuple of
    ints (Python's hash of ints is not salted): a changed file taken for unchanged because
    its key collides with one of a 100,000-file root's has odds of about one in 10^14."""
    return hash(
        (xxh3_64_intdigest(path.encode("utf-8", "surrogateescape")), size, mtime_ns, inode, device)
    )


# The key of a fixed name and stat, kept first with a root's cached keys: keys cached by a
# process that computed them otherwise (another Python's hash of a tuple), or laid out
# otherwise (not by path), are not used.
_SCHEME = stat_key("reka-sync stat keys, by path", 1, 2, 3, 4)


class JournalQueries(JournalConnection):
    """What the journal knows, read through the read-only connection."""

    def _recorded_stats(self, paths: list[str]) -> dict[str, tuple[Any, ...]]:
        found: dict[str, tuple[Any, ...]] = {}
        with self._read_lock, mapped(self.path):
            for chunk, marks in in_chunks([to_db(p) for p in paths], 900):
                rows = self._reader.execute(
                    "SELECT path, size, mtime_ns, inode, device, state FROM files"
                    f" WHERE path IN ({marks})",
                    chunk,
                )
                found.update((from_db(row[0]), row[1:]) for row in rows)
        return found

    def progress(self) -> dict[int, tuple[int, float]]:
        """Return file id -> (bytes sent, when) for uploads in flight, as their owners last said."""
        rows = self._read(
            "SELECT p.file_id, p.sent, p.at FROM progress p JOIN files f ON f.id = p.file_id"
            " WHERE f.state = ?",
            (State.UPLOADING.value,),
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    def get(self, job_id: int) -> Job:
        """Given an id, return the job. Raise JournalError if there is none."""
        with self._read_lock, mapped(self.path):
            return to_job(row_by_id(self._reader, job_id))

    def find(self, path: str) -> Job | None:
        """Given an absolute path, return its job, or None if the journal never saw it."""
        sql = f"SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE path = ?"
        rows = self._read(sql, (to_db(path),))
        return to_job(rows[0]) if rows else None

    def jobs(
        self,
        states: Iterable[State],
        *,
        due_before: float | None = None,
        limit: int = 1000,
        skip_roots: Iterable[str] = (),
    ) -> list[Job]:
        """Given states (and optionally a due time, and roots to leave out), return matching
        jobs, oldest due first."""
        names = [s.value for s in states]
        marks = ", ".join("?" for _ in names)
        sql = f"SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE state IN ({marks})"
        params: list[Any] = list(names)
        away = list(skip_roots)
        if away:
            sql += f" AND root NOT IN ({', '.join('?' for _ in away)})"
            params.extend(away)
        if due_before is not None:
            sql += " AND next_attempt_at <= ?"
            params.append(due_before)
        sql += " ORDER BY priority, next_attempt_at, id LIMIT ?"
        return [to_job(r) for r in self._read(sql, [*params, limit])]

    def discovered(
        self, after: tuple[int, float, int], limit: int, skip_roots: Iterable[str] = ()
    ) -> list[Job]:
        """Given a (priority, next_attempt_at, id) to start after, return the next discovered
        jobs in that order (live files first; the order of `files_state_due`), leaving out
        those under `skip_roots`: a page of the settle tick."""
        away = list(skip_roots)
        outside = f" AND root NOT IN ({', '.join('?' for _ in away)})" if away else ""
        rows = self._read(
            f"SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE state = ?"
            f" AND (priority, next_attempt_at, id) > (?, ?, ?){outside}"
            " ORDER BY priority, next_attempt_at, id LIMIT ?",
            [State.DISCOVERED.value, *after, *away, limit],
        )
        return [to_job(r) for r in rows]

    def uploaded_twins(self, size: int, sample_hash: str, exclude_id: int) -> list[Job]:
        """Given a size and sample, return other jobs whose content reached the API."""
        rows = self._read(
            f"SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE size = ? AND sample_hash = ?"
            " AND id != ? AND digest IS NOT NULL AND video_id IS NOT NULL"
            f" AND state IN ({STORED_MARKS}) ORDER BY id",  # a failed twin's video is no home
            (size, sample_hash, exclude_id, *STORED_STATES),
        )
        return [to_job(r) for r in rows]

    def known_video_ids(self, video_ids: Iterable[str]) -> set[str]:
        """Given remote video ids, return those the journal knows."""
        known: set[str] = set()
        for chunk, marks in in_chunks(video_ids):
            rows = self._read(f"SELECT video_id FROM files WHERE video_id IN ({marks})", chunk)
            known.update(r[0] for r in rows)
        return known

    def known_remote(self) -> tuple[set[str], set[str]]:
        """Return every video id the journal holds, and the upload keys of sends whose
        video it does not know yet (in flight, or of unknown outcome): reconcile's view."""
        # Only the rows that carry either: reading every row of a fresh 100,000-file journal
        # into one list was the peak of a backfill's memory (13 MB).
        known = "video_id IS NOT NULL AND video_id != ''"
        sent = "upload_key IS NOT NULL AND upload_key != '' AND NOT (" + known + ")"
        videos = {
            r[0]
            for r in self._read(
                f"SELECT video_id FROM files WHERE {known}"
                f" UNION SELECT video_id FROM superseded WHERE {known}"
            )
        }
        keys = {
            r[0]
            for r in self._read(
                f"SELECT upload_key FROM files WHERE {sent}"
                f" UNION SELECT upload_key FROM superseded WHERE {sent}"
            )
        }
        return videos, keys

    def stored_files(self) -> list[tuple[int, str, str]]:
        """Return the files the journal says are stored (done, being indexed, or marked
        removed remotely): id, path, video id."""
        rows = self._read(
            "SELECT id, path, video_id FROM files WHERE state IN (?, ?, ?)"
            " AND video_id IS NOT NULL",
            (State.DONE.value, State.INDEXING.value, State.REMOVED.value),
        )
        return [(r[0], from_db(r[1]), r[2]) for r in rows]

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
        with self._read_lock, mapped(self.path):
            return [r["id"] for r in rows_by_path(self._reader, list(paths)).values()]

    def scope_tally(self, scope: Scope) -> dict[State, tuple[int, int]]:
        """Given a backfill's scope, return how many of its files, and how many bytes, are
        in each state (one aggregate query; every state present)."""
        where, params = scope_sql(scope)
        rows = self._read(
            f"SELECT state, count(*), total(size) FROM files WHERE {where} GROUP BY state", params
        )
        found = {r[0]: (int(r[1]), int(r[2])) for r in rows}
        return {state: found.get(state.value, (0, 0)) for state in State}

    def scope_ids(self, scope: Scope, state: State) -> set[int]:
        """Given a scope and a state, return the ids of its files in that state."""
        where, params = scope_sql(scope)
        rows = self._read(
            f"SELECT id FROM files WHERE {where} AND state = ?", [*params, state.value]
        )
        return {r[0] for r in rows}

    def scope_census(self, scope: Scope) -> tuple[dict[State, int], dict[str, int]]:
        """Given a backfill's scope, return how many of its files are in each state (every
        state present) and how many of its done files are in each group, sorted by name:
        `scope_tally` without the bytes, and the groups, in one pass over `files_census`."""
        where, params = scope_sql(scope)
        rows = self._read(
            f"SELECT state, group_name, count(*) FROM files WHERE {where}"
            " GROUP BY state, group_name",
            params,
        )
        found: dict[str, int] = {}
        for state, _, count in rows:
            found[state] = found.get(state, 0) + count
        done = [(name, count) for state, name, count in rows if state == State.DONE.value]
        return {state: found.get(state.value, 0) for state in State}, _by_group(done)

    def scope_listed(self, scope: Scope, state: State, *, with_video: bool = False) -> list[Listed]:
        """Given a scope and a state, return its files in that state, with their last error
        (`with_video`: only those whose content has a video, i.e. duplicates)."""
        where, params = scope_sql(scope)
        video = "IS NOT NULL" if with_video else "IS NULL"
        rows = self._read(
            f"SELECT path, last_error FROM files WHERE {where} AND state = ?"
            f" AND (video_id {video} OR ? = 0) ORDER BY id",
            [*params, state.value, int(state is State.SKIPPED)],
        )
        return [Listed(from_db(r[0]), r[1]) for r in rows]

    def counts_from_rows(self) -> dict[State, int]:
        """Return how many files are in each state, read from the rows themselves (not an
        index), so damage to the table is met here and reported. Raise JournalError then."""
        sql = "SELECT state, count(*) FROM files NOT INDEXED GROUP BY state"
        found = {r[0]: r[1] for r in self._read(sql)}
        return {state: int(found.get(state.value, 0)) for state in State}

    def counts_checked(self) -> dict[State, int]:
        """Return how many files are in each state: the counters the journal's triggers keep,
        checked in the same snapshot against one pass over the rows themselves (not an
        index) that reads each row's state, so damage to the table is met here as in
        `counts_from_rows`, without sorting every row. Raise JournalDamaged if the rows and
        the counters disagree, JournalError if a page cannot be read."""
        if not self._read("SELECT 1 FROM sqlite_master WHERE name = 'state_counts'"):
            return self.counts_from_rows()  # not migrated yet: no counters
        rows = self._read(
            "SELECT NULL, count(*), total(length(state)) FROM files NOT INDEXED"
            " UNION ALL SELECT state, n, NULL FROM state_counts"
        )
        (_, counted, lengths), *_ = [r for r in rows if r[0] is None]  # the rows' pass
        kept = {r[0]: int(r[1]) for r in rows if r[0] is not None}
        if counted != sum(kept.values()):
            said = f"its state counters say {sum(kept.values())} files, its rows {counted}"
            raise JournalDamaged(self.path, said)
        # The lengths of the states' names add up alike: a count moved to a state with a
        # name of another length shows.
        if lengths != sum(len(state) * n for state, n in kept.items()):
            raise JournalDamaged(self.path, "its state counters disagree with its rows' states")
        return {state: kept.get(state.value, 0) for state in State}

    def last_check(self) -> tuple[float, str] | None:
        """Return when the service last checked the journal's integrity, and the verdict."""
        rows = self._read("SELECT at, verdict FROM checks WHERE name = 'quick_check'")
        return (rows[0][0], rows[0][1]) if rows else None

    def counts(self) -> dict[State, int]:
        """Return how many files are in each state (every state present, zeros included),
        from the counters the journal's triggers keep (no count of rows)."""
        kept = self._read("SELECT 1 FROM sqlite_master WHERE name = 'state_counts'")
        sql = (
            "SELECT state, n FROM state_counts"
            if kept
            # not migrated yet
            else ("SELECT state, count(*) FROM files GROUP BY state")
        )
        found = {r[0]: r[1] for r in self._read(sql)}
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

    def oldest_waiting(self) -> float | None:
        """Return since when the longest-waiting file queued for upload has waited: when it
        was queued, or when its last try ended."""
        rows = self._read(
            "SELECT min(updated_at) FROM files WHERE state IN (?, ?)",
            (State.QUEUED.value, State.RETRY_WAIT.value),
        )
        return rows[0][0] if rows else None

    def recent_failures(self, limit: int = 10) -> list[Job]:
        """Return the most recently failed jobs, newest first."""
        rows = self._read(
            f"SELECT {', '.join(JOB_COLUMNS)} FROM files WHERE state = ?"
            " ORDER BY updated_at DESC LIMIT ?",
            (State.FAILED.value, limit),
        )
        return [to_job(r) for r in rows]

    def stat_keys_under(self, root: str) -> set[int]:
        """Given a root, return `stat_key` of each of its present files, to compare a walk
        with (a set of ints: a 100,000-file root costs a few MiB, not a copy of its rows).

        Files recorded as missing or deleted are left out: seeing one again is news. The
        keys come from the journal's cache of them (`walk_keys`) while no row of the root
        changed since; else from the rows, kept for `keep_stat_keys` to cache.
        """
        with self._read_lock, mapped(self.path):
            reader = self._reader
            reader.execute("BEGIN")  # the cache's generation and the rows: one snapshot
            try:
                cached = reader.execute(
                    "SELECT generation, keys FROM walk_keys WHERE root = ?", (root,)
                ).fetchone()
                if cached is not None and cached[1] is not None:
                    keys = _unpacked(cached[1])
                    if keys is not None:
                        return keys
                ordered = self._keys_from_rows(root)
            finally:
                reader.execute("COMMIT")
        self._stale_keys[root] = (0 if cached is None else cached[0], _packed(ordered))
        return set(ordered)

    def _keys_from_rows(self, root: str) -> list[int]:
        where = "SELECT path, size, mtime_ns, inode, device FROM files WHERE root = ?"
        gone = (State.MISSING.value, State.DELETED.value)
        # From the index `files_seen` alone, by path; the keys of files missing or deleted
        # are taken out again (a few rows, through `files_census`).
        rows = self._reader.execute(where, (root,))
        keys = [stat_key(from_db(path), *stats) for path, *stats in rows]
        rows = self._reader.execute(f"{where} AND state IN (?, ?)", (root, *gone))
        absent = {stat_key(from_db(path), *stats) for path, *stats in rows}
        return [key for key in keys if key not in absent] if absent else keys

    def other_extensions(self) -> int:
        """Return how many files the last rescans passed over for their extension."""
        rows = self._read("SELECT coalesce(sum(other_extensions), 0) FROM roots")
        return int(rows[0][0])

    def superseded_due(self, limit: int = 50) -> list[Replaced]:
        """Return pending superseded videos whose file's new content is stored and filed
        (done, or being indexed)."""
        rows = self._read(
            "SELECT s.* FROM superseded s JOIN files f ON f.id = s.file_id"
            " WHERE s.done_at IS NULL AND f.state IN (?, ?) ORDER BY s.id LIMIT ?",
            (State.DONE.value, State.INDEXING.value, limit),
        )
        return [Replaced(**dict(zip(r.keys(), tuple(r), strict=True))) for r in rows]

    def superseded_of(self, file_id: int) -> list[Replaced]:
        """Given a job, return the videos of its earlier contents, oldest first."""
        rows = self._read("SELECT * FROM superseded WHERE file_id = ? ORDER BY id", (file_id,))
        return [Replaced(**dict(zip(r.keys(), tuple(r), strict=True))) for r in rows]

    def group_ids(self) -> dict[str, str]:
        """Return the cached group name → id map."""
        return {r["name"]: r["group_id"] for r in self._read("SELECT name, group_id FROM groups")}

    def pauses(self, now: float) -> list[Pause]:
        """Return the pauses still in force at `now`."""
        rows = self._read("SELECT kind, until, reason FROM pauses WHERE until > ?", (now,))
        return [Pause(r["kind"], r["until"], r["reason"]) for r in rows]

    def root_mounts(self) -> dict[str, str]:
        """Return each root's mount point when it was last there (roots never there left out)."""
        rows = self._read("SELECT path, mount FROM roots WHERE mount IS NOT NULL")
        return {r["path"]: r["mount"] for r in rows}

    def unavailable_roots(self) -> dict[str, float]:
        """Return the roots last seen unavailable, with since when."""
        rows = self._read("SELECT path, since FROM roots WHERE available = 0")
        return {r["path"]: r["since"] for r in rows}


def scope_sql(scope: Scope) -> tuple[str, list[Any]]:
    """Given a scope, return its WHERE clause and parameters (a name that is not valid
    UTF-8 is stored as bytes: a folder's prefix is matched as text and as bytes)."""
    parts: list[str] = []
    params: list[Any] = []
    if scope.roots:
        parts.append(f"root IN ({', '.join('?' for _ in scope.roots)})")
        params.extend(scope.roots)
    for root, path in scope.paths:
        under = path.rstrip("/") + "/"
        as_text = to_db(under)
        as_bytes = os.fsencode(under)
        parts.append(
            "(root = ? AND (path = ? OR (typeof(path) = 'text' AND substr(path, 1, ?) = ?)"
            " OR (typeof(path) = 'blob' AND substr(path, 1, ?) = ?)))"
        )
        params.extend(
            [
                root,
                to_db(path),
                len(as_text),
                as_text if isinstance(as_text, str) else None,  # not UTF-8: bytes only
                len(as_bytes),
                as_bytes,
            ]
        )
    return f"({' OR '.join(parts)})" if parts else "0", params


def _by_group(rows: Iterable[Any]) -> dict[str, int]:
    """Given (group name, count) rows, return the counts by name ("(no group)" for none),
    sorted by name."""
    counts: dict[str, int] = {}
    for name, count in rows:
        shown = "(no group)" if name is None else name
        counts[shown] = counts.get(shown, 0) + count
    return dict(sorted(counts.items()))  # by name, as SQLite's BINARY order (UTF-8)


def _packed(keys: list[int]) -> bytes:
    """Given stat keys by path, return them as the journal keeps them: 64-bit ints,
    little-endian, after the key of a fixed name and stat (`_SCHEME`). Kept by path, a
    folder's keys are read into ints that lie together in memory, which a walk compares
    folder by folder."""
    packed = array("q", [_SCHEME, *keys])
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _unpacked(blob: bytes) -> set[int] | None:
    """Given stat keys as the journal keeps them, return them; None if they were computed
    otherwise than `stat_key` computes them here (another Python, say): read them again."""
    keys = array("q")
    keys.frombytes(blob[: len(blob) - len(blob) % keys.itemsize])
    if sys.byteorder != "little":
        keys.byteswap()
    if not keys or keys[0] != _SCHEME:
        return None
    found = set(keys)
    found.discard(_SCHEME)
    return found
