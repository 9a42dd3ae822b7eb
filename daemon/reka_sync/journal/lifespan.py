"""The journal's view of a file's life after upload: stored files to check remotely,
files deleted locally, and the videos reka-sync deleted on its own (the hourly cap)."""

from __future__ import annotations

from collections.abc import Iterable

from reka_sync.journal.connection import mapped
from reka_sync.journal.indexing import IndexQueries
from reka_sync.journal.queries import stat_key
from reka_sync.journal.records import JOB_COLUMNS, Job
from reka_sync.journal.rows import to_job
from reka_sync.lifecycle import State
from reka_sync.names import from_db

_COLUMNS = ", ".join(JOB_COLUMNS)

STORED = (State.DONE.value, State.INDEXING.value)
DELETES = "deletes"  # the pause kind of stopped deletions (the hourly cap was reached)
DELETES_RESUMED = "deletes_resumed"  # the check name of the operator's last resume
# States whose row points at a video someone may still want (a duplicate shares its twin's).
HOLDERS = (
    State.UPLOADED.value,
    State.FILING.value,
    State.INDEXING.value,
    State.DONE.value,
    State.SKIPPED.value,
)


class LifeQueries(IndexQueries):
    """What the journal knows of stored files, deletions and removals (the Journal has it)."""

    def stored_page(self, after: int, limit: int) -> list[tuple[int, str]]:
        """Given a job id to start after, return the next stored jobs (done or being
        indexed) as (id, video id), in id order: a page of the remote check."""
        rows = self._read(
            "SELECT id, video_id FROM files WHERE id > ? AND state IN (?, ?)"
            " AND video_id IS NOT NULL ORDER BY id LIMIT ?",
            (after, *STORED, limit),
        )
        return [(r[0], r[1]) for r in rows]

    def gone_from(self, root: str, seen: set[int]) -> list[Job]:
        """Given a root and the stat keys a complete walk of it saw, return its stored jobs
        the walk did not see (deleted, or changed: the caller looks). The rows are read
        one at a time: only those not seen are kept."""
        sql = (
            "SELECT id, path, size, mtime_ns, inode, device FROM files"
            " WHERE root = ? AND state IN (?, ?)"
        )
        with self._read_lock, mapped(self.path):
            unseen = [
                job_id
                for job_id, path, *stats in self._reader.execute(sql, (root, *STORED))
                if stat_key(from_db(path), *stats) not in seen
            ]
        return self.jobs_by_ids(unseen)

    def deleted_due(self, now: float, limit: int = 50) -> list[Job]:
        """Given the time, return files deleted locally whose video is still there and whose
        grace is over (their next_attempt_at)."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM files WHERE state = ? AND video_id IS NOT NULL"
            " AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
            (State.DELETED.value, now, limit),
        )
        return [to_job(r) for r in rows]

    def video_held(self, job: Job) -> bool:
        """Given a deleted file's job, return True if another file may still need its video:
        one pointing at it (a copy or a move already seen as such), or one not yet uploaded
        that is the same file under another name (a rename: same inode, device and size)."""
        marks = ", ".join("?" for _ in HOLDERS)
        waiting = (State.DISCOVERED.value, State.QUEUED.value, State.RETRY_WAIT.value)
        rows = self._read(
            "SELECT 1 FROM files WHERE id != ? AND ("
            f" (video_id = ? AND state IN ({marks}))"
            " OR (inode = ? AND device = ? AND size = ? AND state IN (?, ?, ?))) LIMIT 1",
            (job.id, job.video_id, *HOLDERS, job.inode, job.device, job.size, *waiting),
        )
        return bool(rows)

    def deletes_resumed_at(self) -> float | None:
        """Return when the operator last resumed deletions, if ever."""
        rows = self._read("SELECT at FROM checks WHERE name = ?", (DELETES_RESUMED,))
        return float(rows[0][0]) if rows else None

    def deletions_since(self, since: float) -> int:
        """Given a time, return how many videos reka-sync deleted on its own since then."""
        if not self._read("SELECT 1 FROM sqlite_master WHERE name = 'deletions'"):
            return 0
        return int(self._read("SELECT count(*) FROM deletions WHERE at >= ?", (since,))[0][0])

    def paths_of(self, job_ids: Iterable[int]) -> dict[int, str]:
        """Given job ids, return their paths."""
        ids = list(job_ids)
        marks = ", ".join("?" for _ in ids)
        rows = self._read(f"SELECT id, path FROM files WHERE id IN ({marks})", ids) if ids else []
        return {r[0]: from_db(r[1]) for r in rows}
