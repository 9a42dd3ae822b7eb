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
from collections.abc import Iterator
from pathlib import Path

import structlog

from reka_sync import deletions, markers
from reka_sync.errors import NotFound, RekaSyncError
from reka_sync.fingerprint import digest_file
from reka_sync.journal import Job
from reka_sync.lifecycle import Event
from reka_sync.mounts import is_there
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
        now = self.ctx.clock()
        action = "keep" if is_url_root(job.root) else self.ctx.rules.after(job.rel_path)
        if action == "keep":  # the rules changed meanwhile (or a URL: no file here)
            return Move(job.id, Event.FILED, Changes(last_error=None), {"after_upload": "keep"})
        if not is_there(job.root, self.ctx.journal.root_mounts()):
            return _later(job, now, "its root is unavailable (unmounted?); the file waits")
        if action == "delete":
            return self._delete(job, now)
        return self._move(job, Path(action.removeprefix("move:")) / job.rel_path, now)

    def _delete(self, job: Job, now: float) -> Move:
        here = _stat(job.path)
        if here is None:  # deleted by us before a crash, or by someone else: as asked
            return _archived(job, {"deleted": True})
        if not self._unchanged(job, here):
            return _later(job, now, CHANGED)
        if not self._stored(job):
            return _later(job, now, "the API does not report the video stored yet")
        if _stat(job.path) != here:  # written to while its digest was read
            return _later(job, now, CHANGED)
        os.unlink(job.path)
        _fsync_dir(os.path.dirname(job.path))
        log.info("deleted after upload", path=job.path, video_id=job.video_id)
        return _archived(job, {"deleted": True})

    def _unchanged(self, job: Job, here: FileStat) -> bool:
        """Is the file the one sent: size, mtime, inode, device, and its digest?"""
        same = here.same_content_as(job.stat)
        return same and digest_file(job.path, self._alive) == job.digest

    def _stored(self, job: Job) -> bool:
        """Is the video stored, with the metadata sent (its marker; the API exposes no size
        to compare)?"""
        if not job.video_id:
            return False
        try:
            video = self.ctx.api.get_video(job.video_id)
        except NotFound:
            return False
        marked = job.upload_key is None or markers.carries(video.description, job.upload_key)
        return video.status == "uploaded" and isinstance(video.raw.get("metadata"), dict) and marked

    def _move(self, job: Job, target: Path, now: float) -> Move:
        here = _stat(job.path)
        if here is None:
            moved = self._moved_to(job, target)
            if moved is not None:
                return _archived(job, {"moved_to": str(moved)})  # moved before a crash
            return deletions.gone(job.id, job.video_id, now, self.ctx.config.watch.delete_grace)
        if not here.same_content_as(job.stat):
            return _later(job, now, CHANGED)
        there = self._moved_to(job, target)
        if there is None:
            there = _free_name(target)
            _make_dirs(there.parent)
            try:
                os.rename(job.path, there)
                _fsync_dir(there.parent)
                return _archived(job, {"moved_to": str(there)})
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
            self._copy(job, there)
        os.unlink(job.path)  # the target holds the very bytes that were sent
        _fsync_dir(os.path.dirname(job.path))
        return _archived(job, {"moved_to": str(there)})

    def _moved_to(self, job: Job, target: Path) -> Path | None:
        """Where a copy of the bytes sent is already (a move cut short), if anywhere: the
        target, or a free name taken beside it."""
        for candidate in _names(target):
            there = _stat(candidate)
            if there is None:
                return None
            if there.size == job.size and digest_file(candidate, self._alive) == job.digest:
                return candidate
        return None

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


def _names(target: Path) -> Iterator[Path]:
    """Given a target, yield it and the free names beside it: "a (2).mp4", "a (3).mp4"."""
    yield target
    for n in range(2, 1000):
        yield target.with_name(f"{target.stem} ({n}){target.suffix}")


def _free_name(target: Path) -> Path:
    """Given a target, return it or the first name beside it that is free (another file
    by that name is never overwritten)."""
    return next(p for p in _names(target) if _stat(p) is None)


def _make_dirs(folder: Path) -> None:
    """Create a folder and its missing parents, each made durable in its parent."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
        _fsync_dir(made.parent)


def _archived(job: Job, detail: dict[str, object]) -> Move:
    return Move(job.id, Event.ARCHIVED, Changes(last_error=None), dict(detail))


CHANGED = "changed since it was sent; left as it is (the rescan sends the new content)"


def _later(job: Job, now: float, reason: str) -> Move:
    return Move(job.id, None, Changes(next_attempt_at=now + RETRY, last_error=reason), note="wait")


def _stat(path: str | Path) -> FileStat | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def _fsync_dir(folder: str | Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
