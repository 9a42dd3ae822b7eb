"""After upload: a stored file moved into an archive folder, or deleted (`after_upload`).

Runs on the control pool for jobs in state ``archiving`` (stored, filed, indexed). Before
anything is touched the file is re-checked against what was sent (size, mtime, inode;
and for a delete its digest, and the API asked whether the video is stored with its
metadata). A change there is left to the rescan, which sends the new content.

Crash safety, without a journal write between the steps: every state the disk can be in
is recognised at the next look.

* move, same filesystem: one rename; the file is at its old path or at the new one.
* move, across filesystems: a copy to ``NAME.reka-sync-tmp`` beside the target, fsync,
  size and digest verified, renamed into place, the folder fsynced, then the original
  unlinked. A look that finds both checks the target's digest and unlinks the original;
  a leftover temporary copy is overwritten.
* delete: the unlink, then the journal. A look that finds the file gone records it
  deleted as asked.

In every case the video stays, and the file exists exactly once (or, deleted, only
after its video was confirmed stored).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import structlog

from reka_sync.errors import NotFound, RekaSyncError
from reka_sync.fingerprint import digest_file
from reka_sync.journal import Job
from reka_sync.lifecycle import Event
from reka_sync.moves import Changes, Move
from reka_sync.stability import FileStat
from reka_sync.urls import is_url_root
from reka_sync.workers import Context

log = structlog.get_logger("reka_sync.archiving")
TMP_SUFFIX = ".reka-sync-tmp"
COPY_PIECE = 1024 * 1024
RETRY = 300.0  # seconds before an archive that could not be made is tried again


class Archiver:
    """Moves or deletes stored files as their rule says."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def step(self, jobs: list[Job]) -> None:
        """Given jobs in state archiving, move or delete each file, and record it."""
        for job in jobs:
            try:
                move = self._archive(job)
            except (OSError, RekaSyncError) as exc:
                reason = f"cannot {self.ctx.rules.after(job.rel_path)} the file: {exc}"
                log.warning("after_upload failed; trying again later", path=job.path, error=reason)
                move = Move(
                    job.id,
                    None,
                    Changes(next_attempt_at=self.ctx.clock() + RETRY, last_error=reason),
                    note="archive failed",
                )
            if move is not None:
                self.ctx.journal.apply_many([move], self.ctx.clock())

    def _alive(self) -> None:
        """A sign of life while a long file is read or copied (the watchdog's)."""
        self.ctx.touch(None)

    def _archive(self, job: Job) -> Move | None:
        action = "keep" if is_url_root(job.root) else self.ctx.rules.after(job.rel_path)
        if action == "keep":  # the rules changed meanwhile (or a URL: no file here)
            return Move(job.id, Event.FILED, Changes(last_error=None), {"after_upload": "keep"})
        if action == "delete":
            return self._delete(job)
        target = Path(action.removeprefix("move:")) / job.rel_path
        return self._move(job, target)

    def _delete(self, job: Job) -> Move | None:
        here = _stat(job.path)
        if here is None:  # deleted by us before a crash, or by someone else: as asked
            return _archived(job, {"deleted": True})
        if (
            not here.same_content_as(job.stat)
            or digest_file(Path(job.path), self._alive) != job.digest
        ):
            return None  # changed since it was sent: the rescan sends the new content
        if not self._stored(job):
            return _later(job, self.ctx.clock(), "the API does not report the video stored yet")
        os.unlink(job.path)
        _fsync_dir(Path(job.path).parent)
        log.info("deleted after upload", path=job.path, video_id=job.video_id)
        return _archived(job, {"deleted": True})

    def _stored(self, job: Job) -> bool:
        """Is the video stored, with its metadata (the API exposes no size to compare)?"""
        if not job.video_id:
            return False
        try:
            video = self.ctx.api.get_video(job.video_id)
        except NotFound:
            return False
        return video.status == "uploaded" and isinstance(video.raw.get("metadata"), dict)

    def _move(self, job: Job, target: Path) -> Move | None:
        here, there = _stat(job.path), _stat(target)
        if here is None:
            if there is not None and there.size == job.size:
                return _archived(job, {"moved_to": str(target)})  # moved before a crash
            return Move(job.id, Event.GONE, Changes(last_error="vanished before its move"))
        if not here.same_content_as(job.stat):
            return None  # changed since it was sent: the rescan sends the new content
        if there is not None:
            if there.size != job.size or digest_file(target, self._alive) != job.digest:
                raise FileExistsError(f"{target} exists with other content; not overwritten")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(job.path, target)
                _fsync_dir(target.parent)
                return _archived(job, {"moved_to": str(target)})
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
            self._copy(job, target)
        os.unlink(job.path)  # the target holds the very bytes that were sent
        _fsync_dir(Path(job.path).parent)
        return _archived(job, {"moved_to": str(target)})

    def _copy(self, job: Job, target: Path) -> None:
        """Copy across filesystems: to a temporary name, fsynced, verified, renamed."""
        tmp = target.with_name(target.name + TMP_SUFFIX)
        with open(job.path, "rb") as source, open(tmp, "wb") as copy:
            while piece := source.read(COPY_PIECE):
                copy.write(piece)
                self._alive()
            copy.flush()
            os.fsync(copy.fileno())
        if tmp.stat().st_size != job.size or digest_file(tmp, self._alive) != job.digest:
            tmp.unlink(missing_ok=True)
            raise OSError(errno.EIO, f"the copy at {tmp} does not match what was sent")
        os.replace(tmp, target)
        _fsync_dir(target.parent)


def _archived(job: Job, detail: dict[str, object]) -> Move:
    return Move(job.id, Event.ARCHIVED, Changes(last_error=None), dict(detail))


def _later(job: Job, now: float, reason: str) -> Move:
    return Move(job.id, None, Changes(next_attempt_at=now + RETRY, last_error=reason), note="wait")


def _stat(path: str | Path) -> FileStat | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
