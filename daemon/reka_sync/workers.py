"""The worker steps: each runs one step of one job (or one batch) and commits its outcome.

A step does the I/O (stat, read, HTTP) and hands over what happened; `outcomes`
decides what that does to the job, and the journal commits it. A step never
decides what is due (the scheduler does) and never leaves a job half-recorded:
the journal is written before and after every request, so a crash between any
two lines resumes from the journal.

A job's path stays a str here, never a pathlib.Path: Python 3.11's pathlib interns
every part of a path, so a Path per file grows the interpreter's table of interned
strings by one name per upload, and its rehashes (a new 2 MiB table each time)
fragment the heap: RSS crept by about 1 MiB per 10,000 uploads.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from reka_sync import markers, outcomes
from reka_sync.api import ApiClient, Video
from reka_sync.config import ApiConfig, Config
from reka_sync.errors import (
    FileChanged,
    FileOutside,
    FileProblem,
    FileUnreadable,
    FileVanished,
    JournalError,
    LeaseLost,
    NotFound,
    RekaSyncError,
)
from reka_sync.fingerprint import digest_file, sample_file
from reka_sync.groups import GroupResolver
from reka_sync.journal import Job, Journal
from reka_sync.lifecycle import Event
from reka_sync.markers import Marker
from reka_sync.metrics import Meter
from reka_sync.mounts import is_there
from reka_sync.moves import Move
from reka_sync.names import text
from reka_sync.outcomes import Duplicate, Failure, Happened, Kind, Policy, Reach, Stored
from reka_sync.pauses import UPLOADS, PauseBoard
from reka_sync.retry import Backoff
from reka_sync.rules import GroupRules
from reka_sync.scanner import Links, links_of, stat_file
from reka_sync.upload_body import DIGEST_SLOT
from reka_sync.urls import is_url_root, url_sample

log = structlog.get_logger("reka_sync.workers")
TWIN_WAIT = 2.0  # seconds to wait for a twin being sent before looking again
# Beyond the longest wait a step's timeouts allow: a busy journal, a disk spinning up.
QUIET_SLACK = 30.0
T = TypeVar("T")


def quiet_limit(api: ApiConfig) -> float:
    """Given the API settings, return how long a step may go without a sign of life."""
    return api.connect_timeout + max(api.read_timeout, api.stall_timeout) + QUIET_SLACK


def marked(videos: list[Video], key: str) -> list[Video]:
    """Given remote videos and an upload key, return those sent under that key (by a
    marker of either form)."""
    return [v for v in videos if markers.carries(v.description, key)]


@dataclass
class Context:
    """What every step needs; time and randomness are injected."""

    config: Config
    journal: Journal
    api: ApiClient
    groups: GroupResolver
    rules: GroupRules
    pauses: PauseBoard
    owner: str  # this process (leases are named per claim: owner/token)
    clock: Callable[[], float]
    rand: Callable[[], float]
    touch: Callable[[float | None], None]  # a sign of life from the step on this thread
    in_outage: Callable[[], bool]  # the API has been unreachable for a while
    progress: dict[int, int] = field(default_factory=dict)
    meter: Meter = field(default_factory=Meter)
    # Told when a committed move leaves a job due for the control pool (`outcomes.
    # control_due`): the engine runs its poll tick then, not on its next interval.
    wake: Callable[[float], None] = field(default=lambda due: None)

    @property
    def policy(self) -> Policy:
        upload = self.config.upload
        return Policy(
            upload.max_attempts,
            Backoff(upload.backoff_base, upload.backoff_cap),
            upload.poll_interval,
            upload.processing_deadline,
        )


@dataclass(frozen=True)
class Send:
    """A job whose send is committed (`sending`), with what goes out with it."""

    job: Job
    key: str
    group_id: str | None


class Steps:
    """The upload step a worker runs."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._reconcile_since: dict[int, float] = {}  # job -> when reconcile began to wait

    @property
    def links(self) -> Links:
        return links_of(self.ctx.config.watch)

    def upload(self, job: Job, cancel: threading.Event) -> None:
        """Given a leased job, try once to upload its file (or adopt, or dedupe it) and
        commit what happened."""
        with structlog.contextvars.bound_contextvars(path=job.path, job=job.id):
            took = 0.0
            try:
                happened = self._guarded(job, False, lambda: self._prepare(job))
                sent = isinstance(happened, Send)
                if isinstance(happened, Send):
                    send = happened
                    self.ctx.meter.started.inc()
                    began = time.monotonic()
                    happened = self._guarded(job, True, lambda: self._send(send, cancel))
                    took = time.monotonic() - began
            finally:
                self.ctx.progress.pop(job.id, None)
            self._record(job, sent, happened, took)

    def _guarded(self, job: Job, sent: bool, step: Callable[[], T]) -> T | Failure:
        try:
            return step()
        except LeaseLost as exc:
            return self._failure(job, exc, sent)
        except JournalError:
            raise  # not the file's: the engine reports it; the lease runs out, then a reclaim
        except Exception as exc:  # a bug must fail one file, not wedge its lease
            if not isinstance(exc, (RekaSyncError, OSError)):
                log.exception("upload step crashed")
            return self._failure(job, exc, sent)

    def _prepare(self, job: Job) -> Happened | Send:
        """Check the file, settle an unknown earlier send, dedupe; commit the send."""
        ctx = self.ctx
        if is_url_root(job.root):  # the API fetches it: no file to check, no twin
            found = self._reconcile(job) if outcomes.must_reconcile(job) else None
            if found is not None:
                return found
            return self._commit_send(job, url_sample(job.path), [], job.group_name) or _twin_ahead()
        current = stat_file(job.path, self.links)
        if current is None and not is_there(job.root, ctx.journal.root_mounts()):
            return _deferred(
                "its root is unavailable (unmounted?)", ctx.config.watch.rescan_interval
            )
        if current is None:
            raise FileVanished(f"{job.path} vanished before its upload")
        if not current.same_content_as(job.stat):
            raise FileChanged(f"{job.path} changed since it settled")
        if outcomes.must_reconcile(job):
            found = self._reconcile(job)
            if found is not None:
                return found
        sample = sample_file(job.path, job.size)
        # Most files have no twin: the send is committed at once, and the twin check in
        # its commit sends this one to compare digests only when a twin exists.
        sent = self._commit_send(job, sample, [], None)
        if sent is not None:
            return sent
        checked = self._dedupe(job, sample)
        if isinstance(checked, Duplicate):
            return checked
        return self._commit_send(job, sample, checked, None) or _twin_ahead()

    def _commit_send(
        self, job: Job, sample: str, checked: list[int], group: str | None
    ) -> Happened | Send | None:
        """Commit the send of a checked job (its group: `group`, else its rule's). Return
        None, committing nothing, if a twin (same size and sample, not among `checked`) is
        being sent or reached the API."""
        ctx = self.ctx
        group = group or ctx.rules.decide(job.rel_path).group
        group_id = ctx.groups.resolve(group) if group else None
        ctx.pauses.check(UPLOADS, ctx.clock())
        spent = outcomes.out_of_attempts(job, ctx.policy)
        if spent is not None:
            return spent
        key = outcomes.upload_key(job, uuid.uuid4().hex)
        move = outcomes.sending(job, key, sample, group, group_id)
        sending = ctx.journal.begin_send(move, _holder(job), ctx.clock, sample, checked)
        return None if sending is None else Send(sending, key, group_id)

    def _send(self, send: Send, cancel: threading.Event) -> Stored:
        job = send.job
        if is_url_root(job.root):
            return self._send_url(send)
        opened = self.links.target(job.path) if os.path.islink(job.path) else job.path
        if opened is None:
            raise FileChanged(f"{job.path} became a symbolic link that may not be followed")
        accepted = self.ctx.api.upload_file(
            opened,
            video_name=text(os.path.basename(job.path)),
            expected=job.stat,
            size=job.size,
            description=markers.render(
                Marker(
                    send.key,
                    self.ctx.config.journal.instance,
                    job.size,
                    job.mtime_ns,
                    DIGEST_SLOT,
                    job.rel_path,
                )
            ),
            group_id=send.group_id,
            cancel=cancel,
            on_progress=lambda count: self._sending(job, count),
        )
        return Stored(
            accepted.video_id,
            accepted.digest,
            accepted.sample_hash,
            accepted.status,
            detail={"request_id": accepted.request_id, "bytes": accepted.bytes_sent},
        )

    def _send_url(self, send: Send) -> Stored:
        """Ask the API to fetch a URL as a new video, its marker naming the URL."""
        job, instance = send.job, self.ctx.config.journal.instance
        marker = Marker(send.key, instance, 0, 0, url_sample(job.path), job.path)
        video_id = self.ctx.api.upload_url(
            job.path,
            video_name=text(job.rel_path),
            description=markers.render(marker),
            group_id=send.group_id,
        )
        return Stored(video_id, None, url_sample(job.path), "uploading", detail={"url": job.path})

    def _sending(self, job: Job, count: int) -> None:
        self.ctx.progress[job.id] = count
        if count < job.size:
            self.ctx.touch(None)
        else:  # all sent; the answer may take as long as the client waits for it
            self.ctx.touch(self.ctx.api.answer_wait(job.size) + QUIET_SLACK)

    def _failure(self, job: Job, exc: Exception, sent: bool) -> Failure:
        """Turn an error into what happened, after the look at the file or group it calls for."""
        if isinstance(exc, NotFound) and exc.param == "group_id":
            group = self.ctx.rules.decide(job.rel_path).group
            if group:
                self.ctx.groups.forget(group)
                return _deferred(
                    "group was deleted remotely; looking it up again", 0.0, Reach.ANSWERED
                )
        if isinstance(exc, OSError):
            exc = FileUnreadable(f"{job.path} cannot be read: {exc.strerror or exc}")
        if isinstance(exc, FileProblem) and not isinstance(
            exc, (FileChanged, FileVanished, FileOutside)
        ):
            exc = self._file_now(job, exc)
        failure = outcomes.classify(exc, sent, getattr(exc, "request_id", None))
        if failure.kind is Kind.RETRYABLE and self.ctx.in_outage():  # the API's, not the file's
            return dataclasses.replace(failure, kind=Kind.PAUSED, wait=None)
        return failure

    def _file_now(self, job: Job, exc: FileProblem) -> FileProblem:
        """A read failed: a file that is gone or changed says so; else the read error stands."""
        current = stat_file(job.path, self.links)
        if current is None:
            return FileVanished(f"{job.path} vanished during its upload ({exc})")
        if not current.same_content_as(job.stat):
            return FileChanged(f"{job.path} changed during its upload ({exc})")
        return exc

    def _record(self, job: Job, sent: bool, happened: Happened | Send, took: float) -> None:
        ctx = self.ctx
        assert not isinstance(happened, Send)
        now = ctx.clock()
        move = outcomes.after_upload(job, sent, happened, ctx.policy, now, ctx.rand())
        if move is None:
            log.debug("lease lost; another process carries on")
            return
        try:
            done = ctx.journal.apply(move, now, owner=_holder(job))
        except LeaseLost as exc:
            log.debug("lost the job to another process; its result is dropped", reason=str(exc))
            return
        self._count(job, sent, happened, move, took)
        due = outcomes.control_due(move)
        if due is not None:
            ctx.wake(due)
        if isinstance(happened, Failure):
            _log_failure(happened, move)
        elif isinstance(happened, Stored) and not happened.adopted:
            log.info(
                "uploaded", video_id=happened.video_id, group=done.group_name, **happened.detail
            )
            self._check_unchanged(done)

    def _count(self, job: Job, sent: bool, happened: Happened, move: Move, took: float) -> None:
        """Given a committed try, count it for the metrics: a failure only once its send
        began (a file that vanished, a twin waited for, are not failed uploads)."""
        meter = self.ctx.meter
        if isinstance(happened, Failure) and sent:
            meter.failed.labels(error_class=happened.kind.value).inc()
            if move.event is Event.RETRY and happened.kind is Kind.RETRYABLE:
                meter.retries.inc()
        elif isinstance(happened, Stored) and sent and not happened.adopted:
            meter.uploaded(job.size, took, self.ctx.clock())

    def _check_unchanged(self, job: Job) -> None:
        """The file changed while it was sent: delete the video, settle the file again."""
        if is_url_root(job.root):
            return
        after = stat_file(job.path, self.links)
        if after is not None and after.same_content_as(job.stat):
            return
        error, now = None, self.ctx.clock()
        try:
            if job.video_id:
                self.ctx.api.delete_video(job.video_id)
                self.ctx.journal.count_deletion(job.video_id, "changed during its send", now)
        except RekaSyncError as exc:
            error = str(exc)
        move = outcomes.changed_after_send(job, job.video_id, error, self.ctx.clock())
        self.ctx.journal.apply(move, self.ctx.clock())

    def _reconcile(self, job: Job) -> Stored | Failure | None:
        """The last send's outcome is unknown: adopt its video if the API has it; None if
        the API has nothing under its key (the note that says so is committed)."""
        ctx = self.ctx
        assert job.upload_key is not None
        videos = ctx.api.list_videos()
        mine = marked(videos, job.upload_key)
        if mine:
            self._reconcile_since.pop(job.id, None)
            keep, *extra = mine
            for video in extra:  # several attempts of one chain landed: keep one
                ctx.api.delete_video(video.video_id)
                ctx.journal.count_deletion(video.video_id, "a second copy of one send", ctx.clock())
            return self._adopted(job, keep, [v.video_id for v in extra])
        if self._unmarked_in_progress(job, videos, ctx.clock()):
            return _deferred(
                "reconcile: the API is still storing videos whose marker it does not show yet",
                ctx.config.upload.poll_interval,
            )
        ctx.journal.apply(outcomes.reconciled_nothing(job), ctx.clock(), owner=_holder(job))
        return None

    def _unmarked_in_progress(self, job: Job, videos: list[Video], now: float) -> bool:
        """Are videos still being stored whose marker the API does not show yet (ours,
        maybe)? Waited for at most processing_deadline from this process's first look."""
        unknown = [
            v for v in videos if v.status not in ("uploaded", "failed") and v.description is None
        ]
        ids = {v.video_id for v in unknown}
        if not ids or not ids - self.ctx.journal.known_video_ids(ids):
            self._reconcile_since.pop(job.id, None)
            return False
        since = self._reconcile_since.setdefault(job.id, now)
        return now - since < self.ctx.config.upload.processing_deadline

    def _adopted(self, job: Job, video: Video, deleted: list[str]) -> Stored:
        if is_url_root(job.root):
            detail = {"deleted_extra": deleted} if deleted else {}
            sample = url_sample(job.path)
            return Stored(video.video_id, None, sample, video.status, adopted=True, detail=detail)
        return Stored(
            video.video_id,
            digest_file(job.path, lambda: self.ctx.touch(None)),
            sample_file(job.path, job.size),
            video.status,
            adopted=True,
            detail={"deleted_extra": deleted} if deleted else {},
        )

    def _dedupe(self, job: Job, sample: str) -> Duplicate | list[int]:
        """Return the duplicate this job is if its content was uploaded already; else the
        ids of the twins whose digests differ."""
        twins = self.ctx.journal.uploaded_twins(job.size, sample, job.id)
        if not twins:
            return []
        digest = digest_file(job.path, lambda: self.ctx.touch(None))
        twin = next((t for t in twins if t.digest == digest), None)
        if twin is None:
            return [t.id for t in twins]
        group_name, group_id, detail = self._follow_move(job, twin)
        return Duplicate(
            twin.video_id,
            digest,
            sample,
            group_name,
            group_id,
            {"duplicate_of": twin.path, **detail},
        )

    def _follow_move(self, job: Job, twin: Job) -> tuple[str | None, str | None, dict[str, str]]:
        """A file moved (its twin's path is gone): if its rule now names another group, move
        the video there. Return the group the video is in, and what happened."""
        decision = self.ctx.rules.decide(job.rel_path)
        if (
            stat_file(twin.path, self.links) is not None
            or not twin.video_id
            or (decision.group is None or decision.group == twin.group_name)
        ):
            return twin.group_name, twin.group_id, {}
        group_id = self.ctx.groups.resolve(decision.group)
        self.ctx.api.move_videos(group_id, [twin.video_id])
        moved = {"moved_from_group": twin.group_name or "", "moved_to_group": decision.group}
        return decision.group, group_id, moved


def _log_failure(failure: Failure, move: Move) -> None:
    """A file that fails for good is a warning; a try that will be retried is news."""
    fields = {"kind": failure.kind.value, "error": move.changes.columns().get("last_error")}
    if failure.request_id:
        fields["request_id"] = failure.request_id
    if move.event is Event.FAIL:
        log.warning("upload failed for good", **fields)
    else:
        log.info("upload step failed", retry_in=(move.detail or {}).get("retry_in"), **fields)


def _holder(job: Job) -> str:
    """Given a claimed job, return the lease owner this worker holds it under."""
    assert job.lease_owner is not None, "a worker step runs only on a claimed job"
    return job.lease_owner


def _twin_ahead() -> Failure:
    return _deferred("a file with the same content is being uploaded", TWIN_WAIT)


def _deferred(reason: str, seconds: float, reach: Reach = Reach.NONE) -> Failure:
    return Failure(Kind.DEFERRED, reason, reach, seconds)
