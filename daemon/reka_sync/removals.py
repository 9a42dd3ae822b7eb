"""The service's look after stored files: videos removed remotely, files deleted locally.

Runs on the control pool beside the status polls. The remote check walks the stored
files a page of 500 at a time, asking the API for their videos by id (50 per
request); a video absent from the answer is confirmed by a get (a 404) before its
file is marked removed. A file a complete rescan no longer finds (its root there) is
marked deleted by the engine; here, with ``watch.on_delete = "delete"``, its video is
deleted once the grace is over, never while its root is away, never while another
file points at it, and never past the hourly cap (`Guard`). What each case does to a
job is `deletions`.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from reka_sync import deletions
from reka_sync.config import WatchConfig
from reka_sync.errors import NotFound, RekaSyncError
from reka_sync.journal import DELETES, Job, Journal
from reka_sync.mounts import is_there
from reka_sync.workers import Context

log = structlog.get_logger("reka_sync.removals")
CHECK_PAGE = 500  # stored files per look of the remote check
ID_BATCH = 50  # ids per listing request
FAR = 10 * 365 * 86400.0  # a stop of deletions lasts until the operator lifts it
RECHECK = 600.0  # seconds before a video kept for now (root away, a copy) is looked at again


class Guard:
    """The hourly cap on the deletions reka-sync decides on its own."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def allows(self, now: float) -> bool:
        """Given the time, return True if one more deletion may go; at the cap, stop
        deletions (said in the log and in `status`) until `resume-deletes`."""
        journal, cap = self.ctx.journal, self.ctx.config.watch.max_deletes_per_hour
        if any(p.kind == DELETES for p in journal.pauses(now)):
            return False
        since = deletions.count_since(now, journal.deletes_resumed_at())
        if deletions.may_delete(journal.deletions_since(since), cap):
            return True
        reason = (
            f"reka-sync deleted {cap} videos within the hour (watch.max_deletes_per_hour);"
            " deletions stop here: check what happened, then run `reka-sync resume-deletes`"
        )
        journal.set_pause(DELETES, now + FAR, reason)
        log.error("deletions stopped at the hourly cap", cap=cap)
        return False


class Remover:
    """The remote check and the deletion of deleted files' videos (one look at a time)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.guard = Guard(ctx)
        self._cursor: int | None = None  # the job id the remote check goes on after
        self._next_pass = ctx.clock() + ctx.config.watch.remote_check_interval

    def use(self, ctx: Context) -> None:
        """Given a new context (a reload), work with it from now on; the remote check's
        place and time are kept (a reload every hour must not put it off for ever)."""
        self.ctx = ctx
        self.guard = Guard(ctx)

    def due(self, now: float) -> bool:
        """Given the time, return True if a look has work: a remote check page, deletions."""
        if self._cursor is not None or now >= self._next_pass:
            return True
        delete = self.ctx.config.watch.on_delete == "delete"
        return delete and bool(self.ctx.journal.deleted_due(now, limit=1))

    def step(self, now: float) -> None:
        """Given the time, check one page of stored files remotely if a pass is due, and
        delete the videos of deleted files whose grace is over."""
        if self._cursor is not None or now >= self._next_pass:
            self._check_page(now)
        if self.ctx.config.watch.on_delete == "delete":
            self._delete_due(now)

    # -- videos removed remotely ---------------------------------------------------------

    def _check_page(self, now: float) -> None:
        ctx = self.ctx
        page = ctx.journal.stored_page(self._cursor or 0, CHECK_PAGE)
        if not page:
            self._cursor, self._next_pass = None, now + ctx.config.watch.remote_check_interval
            return
        try:
            absent = self._absent([video for _, video in page])
        except RekaSyncError as exc:  # an outage, a pause: this page again next time
            log.info("remote check put off", error=str(exc))
            return
        reupload = ctx.config.upload.reupload_removed
        moves = [deletions.removed(j, v, reupload) for j, v in page if v in absent]
        ctx.journal.apply_many(moves, ctx.clock())
        if moves:
            log.warning(
                "videos removed remotely (deleted in Reka, or expired)",
                files=len(moves),
                uploaded_again=reupload,
            )
        self._cursor = page[-1][0]

    def _absent(self, video_ids: list[str]) -> set[str]:
        """Given video ids, return those the API no longer has (a listing by ids, each
        absence confirmed by a 404)."""
        api = self.ctx.api
        listed: set[str] = set()
        for i in range(0, len(video_ids), ID_BATCH):
            listed.update(v.video_id for v in api.list_videos(video_ids[i : i + ID_BATCH]))
        gone = set()
        for video_id in (v for v in video_ids if v not in listed):
            try:
                api.get_video(video_id)
            except NotFound:
                gone.add(video_id)
        return gone

    # -- files deleted locally -----------------------------------------------------------

    def _delete_due(self, now: float) -> None:
        ctx = self.ctx
        mounts = ctx.journal.root_mounts()
        for job in ctx.journal.deleted_due(now):
            if not self._may_go(job, mounts, now):
                continue
            if not self.guard.allows(now):
                return
            assert job.video_id is not None
            try:
                ctx.api.delete_video(job.video_id)
            except NotFound:
                pass  # deleted in Reka meanwhile: nothing to do but record it
            except RekaSyncError as exc:
                log.info("cannot delete a deleted file's video yet", error=str(exc))
                return
            move = deletions.video_deleted(job.id, job.video_id)
            ctx.journal.record_deletion(move, job.video_id, "file deleted", ctx.clock())
            log.info("deleted the video of a file deleted locally", path=job.path)

    def _may_go(self, job: Job, mounts: dict[str, str], now: float) -> bool:
        """A deleted file's video stays while its root is away (an unmounted share) or
        while another file points at it (a move or a copy within the roots)."""
        ctx, grace = self.ctx, self.ctx.config.watch.delete_grace
        reason = None
        if job.root in ctx.journal.unavailable_roots() or not is_there(job.root, mounts):
            reason = "its root is unavailable (unmounted?); a file there is not gone"
        elif ctx.journal.video_held(job):
            reason = "another file under the roots has the same video (moved or copied)"
        if reason is None:
            return True
        ctx.journal.apply(deletions.video_kept(job.id, reason, now + max(grace, RECHECK)), now)
        return False


def _absent_here(path: str) -> bool:
    """Given a path, return True only if it certainly no longer exists (any other failure
    to look, a link no longer followed, a file now ignored: it is not gone)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def mark_deleted(
    journal: Journal, watch: WatchConfig, root: Path, seen: set[int], now: float
) -> int:
    """Given a root a rescan walked whole and the stat keys it saw, mark its stored files
    that are gone (the root still there) as deleted locally; return how many."""
    gone = [job for job in journal.gone_from(str(root), seen) if _absent_here(job.path)]
    if not gone or not is_there(str(root), journal.root_mounts()):
        return 0
    moves = [deletions.gone(j.id, j.video_id, now, watch.delete_grace) for j in gone]
    marked = len(moves) - len(journal.apply_many(moves, now))
    log.info("stored files deleted locally", root=str(root), files=marked, videos=watch.on_delete)
    return marked
