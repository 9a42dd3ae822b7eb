"""The worker steps: each runs one step of one job (or one batch) and commits its outcome.

A step never decides what is due (the scheduler does) and never leaves a job
half-recorded: the journal is written before and after every request, so a
crash between any two lines resumes from the journal.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from reka_sync.api import Accepted, ApiClient, Video
from reka_sync.config import ApiConfig, Config
from reka_sync.errors import FileChanged, FileVanished, NotFound, RekaSyncError
from reka_sync.fingerprint import digest_file, sample_file
from reka_sync.groups import GroupResolver
from reka_sync.journal import Job, Journal, LeaseLost, Move
from reka_sync.lifecycle import Event, State
from reka_sync.mounts import is_there
from reka_sync.pauses import UPLOADS, PauseBoard
from reka_sync.retry import Action, Backoff, decide
from reka_sync.rules import GroupRules
from reka_sync.scanner import stat_file

log = structlog.get_logger("reka_sync.workers")
TWIN_WAIT = 2.0  # seconds to wait for a twin being sent before looking again
POLL_BATCH = 50
# Beyond the longest wait a step's timeouts allow: a busy journal, a disk spinning up.
QUIET_SLACK = 30.0


def quiet_limit(api: ApiConfig) -> float:
    """Given the API settings, return how long a step may go without a sign of life."""
    return api.connect_timeout + max(api.read_timeout, api.stall_timeout) + QUIET_SLACK


def marker(key: str) -> str:
    """Given an upload key, return the marker written into the video's description."""
    return f"[reka-sync:{key}]"


@dataclass
class Context:
    """What every step needs; time and randomness are injected."""

    config: Config
    journal: Journal
    api: ApiClient
    groups: GroupResolver
    rules: GroupRules
    pauses: PauseBoard
    owner: str
    clock: Callable[[], float]
    rand: Callable[[], float]
    touch: Callable[[float | None], None]  # a sign of life from the step on this thread
    progress: dict[int, int] = field(default_factory=dict)

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.config.upload.backoff_base, self.config.upload.backoff_cap)


class _Defer(Exception):
    """Put the job back without spending an attempt: wait `delay` seconds."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


class Steps:
    """The steps a worker can run."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -- upload ----------------------------------------------------------------------------

    def upload(self, job: Job, cancel: threading.Event) -> None:
        """Given a leased job, upload its file (or adopt, or dedupe it) and record the outcome."""
        sent = threading.Event()  # set once this step has begun sending
        with structlog.contextvars.bound_contextvars(path=job.path, job=job.id):
            try:
                self._upload(job, cancel, sent)
            except LeaseLost as exc:
                log.warning("lease lost; another process carries on", reason=str(exc))
            except _Defer as defer:
                self._release(job, str(defer), defer.delay)
            except Exception as exc:  # a bug must fail one file, not wedge its lease
                if not isinstance(exc, (RekaSyncError, OSError)):
                    log.exception("upload step crashed")
                self._after_failure(self.ctx.journal.get(job.id), exc, sent.is_set())
            finally:
                self.ctx.progress.pop(job.id, None)

    def _upload(self, job: Job, cancel: threading.Event, sent: threading.Event) -> None:
        ctx = self.ctx
        current = stat_file(job.path)
        if current is None and not is_there(job.root, ctx.journal.root_mounts()):
            raise _Defer("its root is unavailable (unmounted?)", ctx.config.watch.rescan_interval)
        if current is None:
            raise FileVanished(f"{job.path} vanished before its upload")
        if not current.same_content_as(job.stat):
            raise FileChanged(f"{job.path} changed since it settled")
        if job.outcome_unknown and job.upload_key and self._reconcile(job):
            return
        sample = sample_file(Path(job.path), job.size)
        checked = self._dedupe(job, sample)
        if checked is None:
            return
        decision = ctx.rules.decide(job.rel_path)
        group_id = ctx.groups.resolve(decision.group) if decision.group else None
        ctx.pauses.check(UPLOADS, ctx.clock())
        key = job.upload_key or uuid.uuid4().hex
        sending = ctx.journal.begin_send(
            job.id,
            ctx.owner,
            ctx.clock(),
            sample,
            checked,
            attempts=job.attempts + 1,
            upload_key=key,
            group_name=decision.group,
            group_id=group_id,
            last_error=None,
        )
        if sending is None:
            raise _Defer("a file with the same content is being uploaded", TWIN_WAIT)
        sent.set()
        accepted = ctx.api.upload_file(
            Path(job.path),
            video_name=Path(job.path).name,
            size=job.size,
            description=f"{job.rel_path} {marker(key)}",
            group_id=group_id,
            cancel=cancel,
            on_progress=lambda count: self._sending(job, count),
        )
        self._accepted(sending, accepted)

    def _sending(self, job: Job, count: int) -> None:
        self.ctx.progress[job.id] = count
        if count < job.size:
            self.ctx.touch(None)
        else:  # all sent; the answer may take as long as the client waits for it
            self.ctx.touch(self.ctx.api.answer_wait(job.size) + QUIET_SLACK)

    def _accepted(self, job: Job, accepted: Accepted) -> None:
        ctx = self.ctx
        now = ctx.clock()
        job = ctx.journal.transition(
            job.id,
            Event.ACCEPTED,
            now,
            owner=ctx.owner,
            video_id=accepted.video_id,
            digest=accepted.digest,
            sample_hash=accepted.sample_hash,
            accepted_at=now,
            remote_status=accepted.status,
            outcome_unknown=0,
            lease_owner=None,
            lease_expires=None,
            next_attempt_at=now + min(1.0, ctx.config.upload.poll_interval),
            detail={
                "video_id": accepted.video_id,
                "request_id": accepted.request_id,
                "bytes": accepted.bytes_sent,
            },
        )
        log.info(
            "uploaded",
            video_id=accepted.video_id,
            request_id=accepted.request_id,
            bytes=accepted.bytes_sent,
            group=job.group_name,
        )
        after = stat_file(job.path)
        if after is None or not after.same_content_as(job.stat):
            self._discard_changed(job)

    def _discard_changed(self, job: Job) -> None:
        """The file changed while it was sent: delete the video, settle the file again."""
        detail: dict[str, Any] = {"deleted_video": job.video_id}
        try:
            if job.video_id:
                self.ctx.api.delete_video(job.video_id)
        except RekaSyncError as exc:
            detail = {"stale_video": job.video_id, "delete_failed": str(exc)}
        self.ctx.journal.transition(
            job.id,
            Event.CHANGED,
            self.ctx.clock(),
            video_id=None,
            digest=None,
            upload_key=None,
            accepted_at=None,
            quiet_since=self.ctx.clock(),
            attempts=max(0, job.attempts - 1),
            last_error="changed during upload; sent again once it settles",
            detail=detail,
        )

    def _reconcile(self, job: Job) -> bool:
        """The last attempt's outcome is unknown: adopt its video if the API has it."""
        ctx = self.ctx
        assert job.upload_key is not None
        videos = ctx.api.list_videos()
        mine = [v for v in videos if v.description and marker(job.upload_key) in v.description]
        if mine:
            keep, *extra = mine
            for video in extra:  # several attempts of one chain landed: keep one
                ctx.api.delete_video(video.video_id)
            self._adopt(job, keep, [v.video_id for v in extra])
            return True
        unknown = [
            v for v in videos if v.status not in ("uploaded", "failed") and v.description is None
        ]
        if unknown and set(v.video_id for v in unknown) - ctx.journal.known_video_ids(
            v.video_id for v in unknown
        ):
            age = ctx.clock() - job.updated_at
            if age < ctx.config.upload.processing_deadline:
                raise _Defer(
                    "reconcile: the API is still storing videos whose marker it does not show yet",
                    ctx.config.upload.poll_interval,
                )
        ctx.journal.annotate(
            job.id,
            ctx.clock(),
            "reconciled",
            owner=ctx.owner,
            detail={"found": False},
            outcome_unknown=0,
        )
        return False

    def _adopt(self, job: Job, video: Video, deleted: list[str]) -> None:
        now = self.ctx.clock()
        self.ctx.journal.transition(
            job.id,
            Event.ADOPTED,
            now,
            owner=self.ctx.owner,
            video_id=video.video_id,
            digest=digest_file(Path(job.path), lambda: self.ctx.touch(None)),
            sample_hash=sample_file(Path(job.path), job.size),
            accepted_at=now,
            remote_status=video.status,
            outcome_unknown=0,
            lease_owner=None,
            lease_expires=None,
            next_attempt_at=now,
            detail={"video_id": video.video_id, "deleted_extra": deleted}
            if deleted
            else {"video_id": video.video_id},
        )

    def _dedupe(self, job: Job, sample: str) -> list[int] | None:
        """Record the job as a duplicate and return None if its content was uploaded already;
        else return the ids of the twins whose digests differ."""
        twins = self.ctx.journal.uploaded_twins(job.size, sample, job.id)
        if not twins:
            return []
        digest = digest_file(Path(job.path), lambda: self.ctx.touch(None))
        twin = next((t for t in twins if t.digest == digest), None)
        if twin is None:
            return [t.id for t in twins]
        group_name, group_id, detail = self._follow_move(job, twin)
        self.ctx.journal.transition(
            job.id,
            Event.DUPLICATE,
            self.ctx.clock(),
            owner=self.ctx.owner,
            video_id=twin.video_id,
            digest=digest,
            sample_hash=sample,
            lease_owner=None,
            lease_expires=None,
            group_name=group_name,
            group_id=group_id,
            last_error=None,
            detail={"duplicate_of": twin.path, "video_id": twin.video_id, **detail},
        )
        return None

    def _follow_move(self, job: Job, twin: Job) -> tuple[str | None, str | None, dict[str, Any]]:
        """A file moved (its twin's path is gone): if its rule now names another group, move
        the video there. Return the group the video is in, and what happened."""
        decision = self.ctx.rules.decide(job.rel_path)
        if (
            stat_file(twin.path) is not None
            or not twin.video_id
            or (decision.group is None or decision.group == twin.group_name)
        ):
            return twin.group_name, twin.group_id, {}
        group_id = self.ctx.groups.resolve(decision.group)
        self.ctx.api.move_videos(group_id, [twin.video_id])
        return (
            decision.group,
            group_id,
            {"moved_from_group": twin.group_name, "moved_to_group": decision.group},
        )

    def _release(self, job: Job, reason: str, delay: float) -> None:
        now = self.ctx.clock()
        current = self.ctx.journal.get(job.id)
        if current.state is not State.UPLOADING or current.lease_owner != self.ctx.owner:
            return
        self.ctx.journal.transition(
            job.id,
            Event.RETRY,
            now,
            owner=self.ctx.owner,
            next_attempt_at=now + delay,
            attempts=job.attempts,
            lease_owner=None,
            lease_expires=None,
            detail={"waiting": reason, "seconds": round(delay, 1)},
        )

    def _after_failure(self, job: Job, exc: Exception, sent: bool) -> None:
        """Record a failed upload step. `sent` says whether this step began sending (and so
        already counted its attempt and marked its outcome unknown)."""
        ctx = self.ctx
        now = ctx.clock()
        if job.state is not State.UPLOADING or job.lease_owner != ctx.owner:
            return
        if isinstance(exc, NotFound) and exc.param == "group_id" and job.group_name:
            ctx.groups.forget(job.group_name)
            self._release(job, "group was deleted remotely; looking it up again", 0.0)
            return
        counted = job.attempts if sent else job.attempts + 1
        decision = decide(exc, counted, ctx.config.upload.max_attempts, ctx.backoff, ctx.rand())
        if decision.action in (Action.FAIL, Action.RETRY):  # the attempt counts
            event = Event.FAIL if decision.action is Action.FAIL else Event.RETRY
            attempts = counted
            unknown = decision.outcome_unknown if sent else job.outcome_unknown
        else:  # not the file's fault (pause, shutdown, change): give the attempt back
            event = {Action.SETTLE: Event.CHANGED, Action.VANISHED: Event.VANISHED}.get(
                decision.action, Event.RETRY
            )
            attempts = job.attempts - 1 if sent else job.attempts
            unknown = False if sent else job.outcome_unknown
        ctx.journal.transition(
            job.id,
            event,
            now,
            owner=ctx.owner,
            lease_owner=None,
            lease_expires=None,
            last_error=decision.reason,
            next_attempt_at=now + decision.delay,
            quiet_since=now if event is Event.CHANGED else job.quiet_since,
            attempts=attempts,
            outcome_unknown=unknown,
            detail={"error": decision.reason, "retry_in": round(decision.delay, 1)},
        )
        log.info(
            "upload step failed",
            action=decision.action.value,
            error=decision.reason,
            request_id=getattr(exc, "request_id", None),
        )

    # -- poll and file ---------------------------------------------------------------------

    def poll(self, jobs: list[Job]) -> None:
        """Given uploaded jobs, ask the API how their videos are and record it in one commit."""
        ctx = self.ctx
        try:
            videos = {
                v.video_id: v
                for v in ctx.api.list_videos(ids=[j.video_id for j in jobs if j.video_id])
            }
        except RekaSyncError as exc:
            log.info("poll failed; trying again later", error=str(exc))
            return
        now = ctx.clock()
        moves = [self._polled(job, videos.get(job.video_id or ""), now) for job in jobs]
        ctx.journal.apply_many([m for m in moves if m is not None], now)

    def _polled(self, job: Job, video: Video | None, now: float) -> Move | None:
        upload = self.ctx.config.upload
        if video is None:
            return self._restart(job, "the API no longer knows the video before it was stored")
        if video.status == "uploaded":
            filed = job.group_id is None or video.group_id == job.group_id
            return Move(
                job.id,
                Event.STORED_FILED if filed else Event.STORED,
                {"remote_status": video.status, "next_attempt_at": now},
            )
        if video.status == "failed":
            return self._restart(job, f"the API failed to store the video: {video.error}")
        if now - (job.accepted_at or now) > upload.processing_deadline:
            return Move(
                job.id,
                Event.FAIL,
                {
                    "remote_status": video.status,
                    "last_error": f"the API still reports status {video.status!r} after "
                    f"{upload.processing_deadline:.0f}s",
                },
            )
        return Move(
            job.id,
            None,
            {"remote_status": video.status, "next_attempt_at": now + upload.poll_interval},
            note="polled",
        )

    def _restart(self, job: Job, reason: str) -> Move:
        """The API lost or failed the video before storing it: upload again (a new chain)."""
        if job.attempts >= self.ctx.config.upload.max_attempts:
            return Move(job.id, Event.FAIL, {"last_error": reason})
        delay = self.ctx.backoff.delay(job.attempts, self.ctx.rand())
        return Move(
            job.id,
            Event.RETRY,
            {
                "video_id": None,
                "digest": None,
                "upload_key": None,
                "accepted_at": None,
                "remote_status": None,
                "next_attempt_at": self.ctx.clock() + delay,
                "last_error": reason,
            },
            detail={"error": reason, "old_video": job.video_id},
        )

    def file(self, jobs: list[Job]) -> None:
        """Given stored jobs waiting for their group, move their videos there."""
        by_group: dict[str, list[Job]] = {}
        for job in jobs:
            if job.group_id and job.video_id:
                by_group.setdefault(job.group_id, []).append(job)
        for group_id, members in by_group.items():
            self._move(group_id, members)

    def _move(self, group_id: str, jobs: list[Job]) -> None:
        ctx = self.ctx
        try:
            result = ctx.api.move_videos(group_id, [j.video_id for j in jobs if j.video_id])
        except NotFound:
            for job in jobs:
                if job.group_name:
                    ctx.groups.forget(job.group_name)
                    new_id = ctx.groups.resolve(job.group_name)
                    ctx.journal.annotate(job.id, ctx.clock(), "regroup", group_id=new_id)
            return
        except RekaSyncError as exc:
            log.info("move to group failed; trying again later", error=str(exc))
            return
        moved = set(result.video_ids)
        now = ctx.clock()
        for job in jobs:
            if job.video_id in moved:
                ctx.journal.transition(job.id, Event.FILED, now, detail={"group": job.group_name})
            else:
                ctx.journal.annotate(
                    job.id,
                    now,
                    "move refused",
                    next_attempt_at=now + ctx.config.upload.poll_interval,
                )
