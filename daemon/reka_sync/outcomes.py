"""What each outcome of a step does to a job: the one place that says it (pure: no I/O, no clock).

A worker step does the I/O (stat, read, HTTP) and hands over *what happened*; the
functions here turn that, with the job's ledger and `now`, into a typed `Move`: the
lifecycle event (or a note), and the row changes as typed fields. The journal
applies moves and nothing else.

The attempt ledger
------------------
* ``attempts`` counts tries that failed (or succeeded) for a reason that can be the
  file's or the request's: a 4xx, a 5xx, a timeout, a dropped connection, an
  unreadable file, the API failing to store what it received.
* A try that was abandoned for a reason outside the file gives its attempt back:
  the file changed, a pause (429, key refused, a pause asked for locally), a lost
  race (a twin being sent, another process's lease), a deferral (root unmounted,
  group deleted remotely), or shutdown.
* A send is committed before its first byte leaves (`sending`): attempts + 1,
  ``outcome_unknown`` set, the upload key written. A crash after that leaves exactly
  that row: an attempt spent and an outcome to reconcile.
* ``outcome_unknown`` says the body may have reached the API with no answer telling
  what became of it: it is set when a send is committed, cleared by an answer (a
  202, an error status from the API itself, a body that never left), and kept when
  no usable answer came after the whole body went out (timeout, dropped connection,
  a 502/503/504 from a gateway, an unreadable 2xx, shutdown after the last byte).
  A job whose outcome is unknown reconciles before any new send (`must_reconcile`).
* A change of content starts a new upload key; a key whose outcome is unknown is
  kept until reconcile has settled it.

What happens on a 429: `pauses.pause_for` turns the answer into a pause of that
kind of request for every worker (until ``retry-after``, else the rate-limit
reset, else a backoff); the upload that met it goes back to the queue, due when
the pause ends, its attempt given back (`classify`: PAUSED). A 401/403 pauses
everything the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from reka_sync.errors import (
    ApiStatusError,
    AuthError,
    Cancelled,
    Conflict,
    FileChanged,
    FileOutside,
    FileProblem,
    FileVanished,
    LeaseLost,
    NotFound,
    NotSent,
    OutcomeUnknown,
    Paused,
    RateLimited,
    ServerError,
    TransportError,
    ValidationFailed,
)
from reka_sync.lifecycle import Event, State
from reka_sync.moves import UNSET, Changes, Lease, Move, Superseded
from reka_sync.pauses import AUTH_PAUSE
from reka_sync.retry import Backoff, server_wait
from reka_sync.stability import FileStat

FIRST_POLL = 0.2  # seconds from acceptance to the first status poll, at most
# The events (None: a note, such as "polled") that leave a job waiting for a step of the
# control pool (a poll, a group move, indexing, archiving) at its next_attempt_at.
CONTROL_EVENTS = frozenset(
    {Event.ACCEPTED, Event.ADOPTED, Event.STORED, Event.INDEX, Event.ARCHIVE, None}
)
UNREACHABLE_WAIT = 5.0  # seconds a file waits after the API could not be reached


# -- what a step can report ----------------------------------------------------------------


class Reach(StrEnum):
    """How far a request got: what we know about whether the API acted on it."""

    NONE = "none"  # nothing reached the API (not sent, or refused before sending)
    ANSWERED = "answered"  # the API answered: it did not store anything
    MAYBE = "maybe"  # the body went out and no usable answer came: it may have


class Kind(StrEnum):
    RETRYABLE = "retryable"  # the file's or the request's: spend an attempt, wait, try again
    PERMANENT = "permanent"  # the file's: spend an attempt, fail
    EXHAUSTED = "exhausted"  # every attempt was spent already (sends cut short): fail
    PAUSED = "paused"  # a pause of that kind of request: wait for its end, attempt given back
    CHANGED = "changed"  # the file changed: settle again, attempt given back
    VANISHED = "vanished"  # the file is gone: missing, attempt given back
    DEFERRED = "deferred"  # not now, not the file's fault: wait, attempt given back
    RELEASED = "released"  # we stopped on purpose (shutdown): due at once, attempt given back
    LOST = "lost"  # another process holds the job now: write nothing


@dataclass(frozen=True)
class Failure:
    """A try that did not end with the video stored."""

    kind: Kind
    reason: str
    reach: Reach = Reach.NONE
    wait: float | None = None  # what the server (or the pause) asked for, in seconds
    request_id: str | None = None  # the API's id for the request, to quote to support


@dataclass(frozen=True)
class Stored:
    """The API has the video: it answered 202 (`adopted` False) or reconcile found it."""

    video_id: str
    digest: str | None
    sample_hash: str | None
    remote_status: str | None
    adopted: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Duplicate:
    """The same content is already a video: this file points at it."""

    video_id: str | None
    digest: str
    sample_hash: str
    group_name: str | None
    group_id: str | None
    detail: dict[str, Any] = field(default_factory=dict)


Happened = Stored | Duplicate | Failure


class Ledger(Protocol):
    """The columns of a job the ledger reads (a journal `Job` has them)."""

    @property
    def id(self) -> int: ...
    @property
    def attempts(self) -> int: ...
    @property
    def outcome_unknown(self) -> bool: ...
    @property
    def upload_key(self) -> str | None: ...


@dataclass(frozen=True)
class Policy:
    """The retry settings the moves need."""

    max_attempts: int
    backoff: Backoff
    poll_interval: float
    processing_deadline: float = 3600.0


def control_due(move: Move) -> float | None:
    """Given a move, return when the job it leaves waiting for the control pool (a poll,
    a group move, indexing, archiving) comes due, or None if it leaves none waiting."""
    due = move.changes.next_attempt_at
    if move.event not in CONTROL_EVENTS or not isinstance(due, (int, float)):
        return None
    return float(due)


# -- classifying errors --------------------------------------------------------------------


def classify(error: BaseException, sent: bool, request_id: str | None = None) -> Failure:
    """Given the error that ended a try, whether the try committed a send (and the API's
    request id), return the failure it is. An error outside the tree (a bug) is
    permanent for the file."""
    failure = _classify(error, sent)
    return dataclasses.replace(failure, request_id=request_id) if request_id else failure


def _classify(error: BaseException, sent: bool) -> Failure:
    reason = str(error) or type(error).__name__
    if isinstance(error, LeaseLost):
        return Failure(Kind.LOST, reason)
    if isinstance(error, FileChanged):
        return Failure(Kind.CHANGED, reason)
    if isinstance(error, FileVanished):
        return Failure(Kind.VANISHED, reason)
    if isinstance(error, FileOutside):
        return Failure(Kind.PERMANENT, reason)
    if isinstance(error, FileProblem):
        return Failure(Kind.RETRYABLE, reason)
    if isinstance(error, Cancelled):
        return Failure(Kind.RELEASED, reason, Reach.MAYBE if error.body_complete else Reach.NONE)
    if isinstance(error, Paused):
        return Failure(Kind.PAUSED, reason, Reach.NONE, error.seconds)
    if isinstance(error, ApiStatusError):
        return _status_failure(error, reason)
    if isinstance(error, OutcomeUnknown):
        return Failure(Kind.RETRYABLE, reason, Reach.MAYBE)
    if isinstance(error, NotSent) and error.unreachable:  # the API is not there: not the file's
        return Failure(Kind.PAUSED, reason, Reach.NONE, UNREACHABLE_WAIT)
    if isinstance(error, (NotSent, TransportError)):
        return Failure(Kind.RETRYABLE, reason, Reach.NONE)
    return Failure(
        Kind.PERMANENT,
        f"unexpected error: {reason}",
        Reach.MAYBE if sent else Reach.NONE,
    )


def _status_failure(error: ApiStatusError, reason: str) -> Failure:
    if isinstance(error, AuthError):
        return Failure(Kind.PAUSED, f"API key refused: {reason}", Reach.ANSWERED, AUTH_PAUSE)
    if isinstance(error, RateLimited):
        wait = server_wait(error.retry_after, error.reset_after)
        return Failure(Kind.PAUSED, reason, Reach.ANSWERED, wait)
    if isinstance(error, (ValidationFailed, Conflict, NotFound)):
        return Failure(Kind.PERMANENT, reason, Reach.ANSWERED)
    if isinstance(error, ServerError):
        return Failure(Kind.RETRYABLE, reason, Reach.ANSWERED, server_wait(error.retry_after, None))
    return Failure(Kind.PERMANENT, reason, Reach.ANSWERED)


# -- upload moves --------------------------------------------------------------------------


def claimed(job: Ledger, lease: Lease, reclaim: bool) -> Move:
    """Given a due job (or one whose holder's lease expired: `reclaim`), return the move
    that leases it. The ledger is left as it is: a send cut short by the holder's death
    already says its outcome is unknown (`sending` committed that before the first byte)."""
    return Move(
        job.id,
        Event.RECLAIM if reclaim else Event.CLAIM,
        Changes(lease=lease),
        {"owner": lease.owner},
    )


def must_reconcile(job: Ledger) -> bool:
    """Given a job about to be sent, return True if an earlier send's fate must be
    looked up first (its outcome is unknown and its key is known)."""
    return job.outcome_unknown and job.upload_key is not None


def upload_key(job: Ledger, fresh: str) -> str:
    """Given a job about to be sent and a fresh key, return the key this send carries:
    the job's own while its chain goes on, else the fresh one."""
    return job.upload_key or fresh


def out_of_attempts(job: Ledger, policy: Policy) -> Failure | None:
    """Given a job about to be sent, return the failure it is if its attempts are spent
    already (sends cut short by a crash or a lost lease count too), else None."""
    if job.attempts < policy.max_attempts:
        return None
    return Failure(
        Kind.EXHAUSTED,
        f"gave up after {job.attempts} attempts; the last ones were cut short "
        "(the process sending it stopped: a crash, or out of memory?)",
    )


def sending(
    job: Ledger, key: str, sample_hash: str, group_name: str | None, group_id: str | None
) -> Move:
    """Given a job about to be sent and its key, return the move committed before the
    first byte leaves: an attempt spent and an outcome unknown until the answer."""
    return Move(
        job.id,
        None,
        Changes(
            attempts=job.attempts + 1,
            upload_key=key,
            outcome_unknown=True,
            sample_hash=sample_hash,
            group_name=group_name,
            group_id=group_id,
            last_error=None,
        ),
        {"attempt": job.attempts + 1, "key": key},
        note="sending",
    )


def reconciled_nothing(job: Ledger) -> Move:
    """Given a job whose earlier send the API does not have, return the note that says
    so: the outcome is known now (nothing stored), and the next send may go."""
    return Move(job.id, None, Changes(outcome_unknown=False), {"found": False}, note="reconciled")


def after_upload(
    job: Ledger, sent: bool, happened: Happened, policy: Policy, now: float, rand: float
) -> Move | None:
    """Given a job as it was claimed, whether this try committed a send, what happened and
    a random draw, return the move to commit (None: another process has the job)."""
    if isinstance(happened, Stored):
        return _stored(job, sent, happened, policy, now)
    if isinstance(happened, Duplicate):
        return Move(
            job.id,
            Event.DUPLICATE,
            Changes(
                video_id=happened.video_id,
                digest=happened.digest,
                sample_hash=happened.sample_hash,
                group_name=happened.group_name,
                group_id=happened.group_id,
                lease=None,
                last_error=None,
            ),
            {"video_id": happened.video_id, **happened.detail},
        )
    return _failed(job, sent, happened, policy, now, rand)


def _stored(job: Ledger, sent: bool, stored: Stored, policy: Policy, now: float) -> Move:
    return Move(
        job.id,
        Event.ADOPTED if stored.adopted else Event.ACCEPTED,
        Changes(
            video_id=stored.video_id,
            digest=stored.digest,
            sample_hash=stored.sample_hash,
            accepted_at=now,
            remote_status=stored.remote_status,
            outcome_unknown=False,
            lease=None,
            attempts=job.attempts + 1 if sent else job.attempts,
            next_attempt_at=now + min(FIRST_POLL, policy.poll_interval),
            last_error=None,
        ),
        {"video_id": stored.video_id, **stored.detail},
    )


def _failed(
    job: Ledger, sent: bool, failure: Failure, policy: Policy, now: float, rand: float
) -> Move | None:
    if failure.kind is Kind.LOST:
        return None
    unknown = failure.reach is Reach.MAYBE if sent else job.outcome_unknown
    spends = failure.kind in (Kind.RETRYABLE, Kind.PERMANENT)
    # A try spends one attempt, but never past the limit (a reclaim may find it spent).
    attempts = (
        max(job.attempts, min(job.attempts + 1, policy.max_attempts)) if spends else job.attempts
    )
    event, delay, reason = _verdict(failure, attempts, policy, rand)
    # New content is a new chain: a send of the old content whose fate is unknown is
    # superseded (retired by its marker later), never adopted.
    old = Superseded(None, job.upload_key) if event is Event.CHANGED and unknown else None
    changes = Changes(
        attempts=attempts,
        outcome_unknown=unknown and old is None,
        lease=None,
        last_error=reason,
        next_attempt_at=now + delay,
        quiet_since=now if event is Event.CHANGED else UNSET,
        upload_key=None if event is Event.CHANGED else UNSET,
    )
    detail: dict[str, Any] = {"error": reason, "retry_in": round(delay, 1)}
    if not spends:
        detail["attempt_given_back"] = True
    return Move(job.id, event, changes, detail, supersede=old)


def _verdict(
    failure: Failure, attempts: int, policy: Policy, rand: float
) -> tuple[Event, float, str]:
    """Return the event, the wait and the reason a failure leads to."""
    kind, reason = failure.kind, failure.reason
    if kind is Kind.CHANGED:
        return Event.CHANGED, 0.0, reason
    if kind is Kind.VANISHED:
        return Event.VANISHED, 0.0, reason
    if kind in (Kind.PERMANENT, Kind.EXHAUSTED):
        return Event.FAIL, 0.0, reason
    if kind is Kind.RETRYABLE:
        if attempts >= policy.max_attempts:
            return Event.FAIL, 0.0, f"gave up after {attempts} attempts: {reason}"
        delay = max(failure.wait or 0.0, policy.backoff.delay(attempts, rand))
        return Event.RETRY, delay, reason
    if kind is Kind.PAUSED:
        wait = failure.wait if failure.wait is not None else policy.backoff.delay(1, rand)
        return Event.RETRY, wait, reason
    if kind is Kind.DEFERRED:
        return Event.RETRY, failure.wait or 0.0, reason
    return Event.RETRY, 0.0, reason  # RELEASED: due at once


def changed_after_send(
    job: Ledger, deleted: str | None, delete_error: str | None, now: float
) -> Move:
    """Given a job whose file changed while it was sent (its 202 already recorded), and the
    video deleted (or why the delete failed), return the move back to settling: a new
    key, the attempt given back."""
    detail: dict[str, Any] = (
        {"stale_video": deleted, "delete_failed": delete_error}
        if delete_error
        else {"deleted_video": deleted}
    )
    return Move(
        job.id,
        Event.CHANGED,
        Changes(
            video_id=None,
            digest=None,
            upload_key=None,
            accepted_at=None,
            quiet_since=now,
            attempts=max(0, job.attempts - 1),
            last_error="changed during upload; sent again once it settles",
        ),
        detail,
    )


class Versioned(Protocol):
    """The columns of a job a content change reads."""

    @property
    def id(self) -> int: ...
    @property
    def state(self) -> State: ...
    @property
    def video_id(self) -> str | None: ...
    @property
    def upload_key(self) -> str | None: ...
    @property
    def outcome_unknown(self) -> bool: ...


def content_changed(job: Versioned, stat: FileStat, quiet_since: float) -> Move:
    """Given a job whose file now has other content (its new stat), return the move back to
    settling, superseding its video (or a send of unknown fate), if any. New content is a
    new upload chain: a fresh key, attempts from zero, nothing of the old video kept on the
    row. A duplicate's video is its twin's, never superseded."""
    stat_changes = dataclasses.replace(Changes.for_stat(stat, quiet_since), sample_hash=None)
    unknown_send = job.upload_key if job.outcome_unknown else None
    if job.state in (State.DISCOVERED, State.MISSING):
        # Still settling, or back after vanishing, with other bytes: a send of the old
        # content whose fate is unknown must never be adopted for these.
        old_send = Superseded(None, unknown_send) if unknown_send else None
        if job.upload_key:  # the old chain ends here
            stat_changes = dataclasses.replace(stat_changes, upload_key=None, outcome_unknown=False)
        return Move(job.id, Event.SEEN, stat_changes, {"size": stat.size}, supersede=old_send)
    old: Superseded | None = None
    # A duplicate's video is its twin's; an archived file's lives on with the file in DIR.
    if job.state not in (State.SKIPPED, State.ARCHIVED) and (job.video_id or unknown_send):
        old = Superseded(job.video_id, None if job.video_id else unknown_send)
    fresh = dataclasses.replace(
        stat_changes,
        digest=None,
        video_id=None,
        upload_key=None,
        outcome_unknown=False,
        attempts=0,
        accepted_at=None,
        remote_status=None,
        last_error=None,
    )
    detail = {"size": stat.size, **({"superseded": old.video_id or old.upload_key} if old else {})}
    return Move(job.id, Event.CHANGED, fresh, detail, supersede=old)


def requeue(job: Ledger) -> Move:
    """Given a failed, missing or skipped job, return the operator's `retry`: attempts
    start again; an unknown outcome stays, so the next try reconciles first."""
    return Move(
        job.id,
        Event.REQUEUE,
        Changes(attempts=0, last_error=None, outcome_unknown=job.outcome_unknown),
        {"by": "operator"},
    )


# -- poll moves ----------------------------------------------------------------------------


class Remote(Protocol):
    """What the API says of a video (an API `Video` has it)."""

    @property
    def status(self) -> str | None: ...
    @property
    def group_id(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...


class Polled(Ledger, Protocol):
    """The columns of an uploaded job a poll reads."""

    @property
    def video_id(self) -> str | None: ...
    @property
    def accepted_at(self) -> float | None: ...
    @property
    def group_id(self) -> str | None: ...


def after_poll(
    job: Polled,
    video: Remote | None,
    policy: Policy,
    now: float,
    rand: float,
    index: bool = False,
    archive: bool = False,
) -> Move:
    """Given an uploaded job, what the API says of its video (None: unknown to it), whether
    its rule wants features and whether it moves or deletes the file after upload, return
    the move: stored (and filed, if its group is already right: then done, indexing or
    archiving), still waiting, or sent again when the API lost or failed the video before
    storing it."""
    if video is None:
        return _restart(
            job, "the API no longer knows the video before it was stored", policy, now, rand
        )
    if video.status == "uploaded":
        filed = job.group_id is None or video.group_id == job.group_id
        return Move(
            job.id,
            Event.STORED
            if not filed
            else Event.INDEX
            if index
            else Event.ARCHIVE
            if archive
            else Event.STORED_FILED,
            Changes(remote_status=video.status, next_attempt_at=now),
        )
    if video.status == "failed":
        return _restart(job, f"the API failed to store the video: {video.error}", policy, now, rand)
    waited = now - (job.accepted_at if job.accepted_at is not None else now)
    if waited > policy.processing_deadline:
        return Move(
            job.id,
            Event.FAIL,
            Changes(
                remote_status=video.status,
                last_error=f"the API still reports status {video.status!r} after "
                f"{policy.processing_deadline:.0f}s",
            ),
        )
    # Wait as long again as it has waited so far: a video stored at once is seen at the
    # first poll, a slow one costs few polls (batched); never longer than poll_interval.
    wait = min(policy.poll_interval, max(FIRST_POLL, waited))
    return Move(
        job.id, None, Changes(remote_status=video.status, next_attempt_at=now + wait), note="polled"
    )


def _restart(job: Polled, reason: str, policy: Policy, now: float, rand: float) -> Move:
    """The API lost or failed the video before storing it: a new chain, the try spent."""
    if job.attempts >= policy.max_attempts:
        return Move(job.id, Event.FAIL, Changes(last_error=reason))
    delay = policy.backoff.delay(job.attempts, rand)
    return Move(
        job.id,
        Event.RETRY,
        Changes(
            video_id=None,
            digest=None,
            upload_key=None,
            accepted_at=None,
            remote_status=None,
            next_attempt_at=now + delay,
            last_error=reason,
        ),
        {"error": reason, "old_video": job.video_id},
    )


def poll_failed(job: Ledger, streak: int, reason: str, policy: Policy, now: float) -> Move:
    """Given a job whose status poll failed for the `streak`-th time in a row, return the
    note that puts its next poll off (doubling from the poll interval, capped)."""
    delay = min(policy.backoff.cap, policy.poll_interval * 2.0 ** min(streak, 16))
    return Move(
        job.id,
        None,
        Changes(next_attempt_at=now + delay),
        {"error": reason, "retry_in": round(delay, 1)},
        note="poll failed",
    )
