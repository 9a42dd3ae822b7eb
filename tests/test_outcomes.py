"""The outcome table and the attempt ledger: pure, so no thread, socket or emulator here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reka_sync import outcomes, pauses
from reka_sync.errors import (
    AuthError,
    Cancelled,
    Conflict,
    FileChanged,
    FileUnreadable,
    FileVanished,
    LeaseLost,
    NotFound,
    NotSent,
    OutcomeUnknown,
    Paused,
    RateLimited,
    ServerError,
    ValidationFailed,
)
from reka_sync.journal.records import JOB_COLUMNS
from reka_sync.lifecycle import ACTIVE, Event, State, next_state
from reka_sync.moves import UNSET, Changes, Lease, Move, Superseded
from reka_sync.outcomes import Duplicate, Failure, Kind, Policy, Reach, Stored
from reka_sync.retry import Backoff
from reka_sync.stability import FileStat

POLICY = Policy(max_attempts=4, backoff=Backoff(2.0, 60.0), poll_interval=5.0)
NOW = 1000.0


@dataclass
class Row:
    """A job's row as the moves leave it (the columns the ledger and the poll read)."""

    id: int = 1
    state: State = State.QUEUED
    attempts: int = 0
    outcome_unknown: bool = False
    upload_key: str | None = None
    video_id: str | None = None
    accepted_at: float | None = None
    group_id: str | None = None
    lease_owner: str | None = None
    next_attempt_at: float = 0.0
    quiet_since: float = 0.0
    last_error: str | None = None
    history: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)  # keys retired, never to be adopted

    def apply(self, move: Move | None) -> None:
        if move is None:
            return
        assert move.job_id == self.id
        if move.event is not None:
            self.state = next_state(self.state, move.event)  # raises on an illegal move
            self.history.append(move.event.value)
        for name, value in move.changes.columns().items():
            if hasattr(self, name):
                setattr(self, name, value)
        if move.supersede is not None and move.supersede.upload_key:
            self.superseded.append(move.supersede.upload_key)


def row(**values: object) -> Row:
    return dataclasses.replace(Row(state=State.UPLOADING, lease_owner="me"), **values)  # type: ignore[arg-type]


# -- the table ------------------------------------------------------------------------------

CASES = [
    # (error, sent) -> (kind, reach)
    (ServerError(500, "boom"), True, Kind.RETRYABLE, Reach.ANSWERED),
    (NotSent("refused"), True, Kind.RETRYABLE, Reach.NONE),
    (OutcomeUnknown("no answer"), True, Kind.RETRYABLE, Reach.MAYBE),
    (ValidationFailed(400, "too long"), True, Kind.PERMANENT, Reach.ANSWERED),
    (Conflict(409, "exists"), True, Kind.PERMANENT, Reach.ANSWERED),
    (NotFound(404, "gone"), True, Kind.PERMANENT, Reach.ANSWERED),
    (RateLimited(429, "slow down", retry_after=30.0), True, Kind.PAUSED, Reach.ANSWERED),
    (AuthError(401, "bad key"), True, Kind.PAUSED, Reach.ANSWERED),
    (Paused("uploads paused", seconds=12.0), False, Kind.PAUSED, Reach.NONE),
    (FileChanged("grew"), True, Kind.CHANGED, Reach.NONE),
    (FileVanished("gone"), True, Kind.VANISHED, Reach.NONE),
    (FileUnreadable("EIO"), True, Kind.RETRYABLE, Reach.NONE),
    (Cancelled("shutdown", body_complete=False), True, Kind.RELEASED, Reach.NONE),
    (Cancelled("shutdown", body_complete=True), True, Kind.RELEASED, Reach.MAYBE),
    (LeaseLost("taken over"), True, Kind.LOST, Reach.NONE),
    (KeyError("video_id"), True, Kind.PERMANENT, Reach.MAYBE),
    (KeyError("video_id"), False, Kind.PERMANENT, Reach.NONE),
]


@pytest.mark.parametrize(("error", "sent", "kind", "reach"), CASES)
def test_each_error_is_classified(error: Exception, sent: bool, kind: Kind, reach: Reach) -> None:
    failure = outcomes.classify(error, sent)
    assert (failure.kind, failure.reach) == (kind, reach)
    assert failure.reason


MOVES = [
    # kind, reach, sent -> event, attempts after (from 1), outcome_unknown after
    (Kind.RETRYABLE, Reach.ANSWERED, True, Event.RETRY, 2, False),
    (Kind.RETRYABLE, Reach.MAYBE, True, Event.RETRY, 2, True),
    (Kind.RETRYABLE, Reach.NONE, False, Event.RETRY, 2, False),
    (Kind.PERMANENT, Reach.ANSWERED, True, Event.FAIL, 2, False),
    (Kind.PERMANENT, Reach.MAYBE, True, Event.FAIL, 2, True),
    (Kind.EXHAUSTED, Reach.NONE, False, Event.FAIL, 1, False),
    (Kind.PAUSED, Reach.ANSWERED, True, Event.RETRY, 1, False),
    (Kind.CHANGED, Reach.NONE, True, Event.CHANGED, 1, False),
    (Kind.VANISHED, Reach.NONE, True, Event.VANISHED, 1, False),
    (Kind.DEFERRED, Reach.NONE, False, Event.RETRY, 1, False),
    (Kind.RELEASED, Reach.NONE, True, Event.RETRY, 1, False),
    (Kind.RELEASED, Reach.MAYBE, True, Event.RETRY, 1, True),
]


@pytest.mark.parametrize(("kind", "reach", "sent", "event", "attempts", "unknown"), MOVES)
def test_each_failure_moves_the_job_and_keeps_the_ledger(
    kind: Kind, reach: Reach, sent: bool, event: Event, attempts: int, unknown: bool
) -> None:
    job = row(attempts=1)
    move = outcomes.after_upload(job, sent, Failure(kind, "why", reach, 7.0), POLICY, NOW, 0.5)
    assert move is not None and move.event is event
    columns = move.changes.columns()
    assert columns["attempts"] == attempts
    assert columns["outcome_unknown"] is unknown
    assert columns["lease_owner"] is None and columns["lease_expires"] is None
    if event is Event.RETRY:
        assert columns["next_attempt_at"] >= NOW
    job.apply(move)  # legal from uploading


def test_a_pause_waits_for_the_server_and_gives_the_attempt_back() -> None:
    failure = outcomes.classify(RateLimited(429, "quota", retry_after=3600.0), sent=True)
    move = outcomes.after_upload(row(attempts=3), True, failure, POLICY, NOW, 0.99)
    assert move is not None and move.changes.columns()["next_attempt_at"] == NOW + 3600.0
    assert move.changes.columns()["attempts"] == 3


def test_retries_stop_at_max_attempts_with_the_reason() -> None:
    failure = outcomes.classify(ServerError(503, "down"), sent=True)
    move = outcomes.after_upload(row(attempts=3), True, failure, POLICY, NOW, 0.5)
    assert move is not None and move.event is Event.FAIL
    assert move.changes.columns()["last_error"] == "gave up after 4 attempts: HTTP 503: down"


def test_retry_after_wins_over_a_shorter_backoff() -> None:
    failure = outcomes.classify(ServerError(500, "busy", retry_after=40.0), sent=True)
    move = outcomes.after_upload(row(attempts=0), True, failure, POLICY, NOW, 0.0)
    assert move is not None and move.changes.columns()["next_attempt_at"] == NOW + 40.0


def test_a_change_starts_a_new_key_and_supersedes_an_unknown_send() -> None:
    changed = Failure(Kind.CHANGED, "grew")
    move = outcomes.after_upload(row(upload_key="k1"), True, changed, POLICY, NOW, 0.5)
    assert move is not None and move.changes.columns()["upload_key"] is None
    assert move.supersede is None
    before_send = outcomes.after_upload(
        row(upload_key="k1", outcome_unknown=True), False, changed, POLICY, NOW, 0.5
    )
    assert before_send is not None and before_send.changes.columns()["upload_key"] is None
    assert before_send.changes.columns()["outcome_unknown"] is False
    assert before_send.supersede == Superseded(None, "k1")  # retired by marker, not adopted


def test_stored_and_duplicate_release_the_lease_and_record_the_video() -> None:
    stored = outcomes.after_upload(
        row(attempts=0), True, Stored("v1", "d", "s", "uploading"), POLICY, NOW, 0.5
    )
    assert stored is not None and stored.event is Event.ACCEPTED
    cols = stored.changes.columns()
    assert cols["video_id"] == "v1" and cols["attempts"] == 1 and cols["outcome_unknown"] is False
    assert cols["next_attempt_at"] == NOW + outcomes.FIRST_POLL  # the first poll comes soon
    adopted = outcomes.after_upload(
        row(attempts=2), False, Stored("v1", "d", "s", "uploaded", adopted=True), POLICY, NOW, 0
    )
    assert adopted is not None and adopted.event is Event.ADOPTED
    assert adopted.changes.columns()["attempts"] == 2
    duplicate = outcomes.after_upload(
        row(), False, Duplicate("v0", "d", "s", "G", "g1"), POLICY, NOW, 0.5
    )
    assert duplicate is not None and duplicate.event is Event.DUPLICATE
    assert duplicate.changes.columns()["lease_owner"] is None


def test_a_lost_lease_writes_nothing() -> None:
    lost = outcomes.after_upload(row(), True, Failure(Kind.LOST, "x"), POLICY, NOW, 0.5)
    assert lost is None


def test_the_send_is_committed_with_its_attempt_and_an_unknown_outcome() -> None:
    move = outcomes.sending(row(attempts=2), "key", "sample", "G", "g1")
    cols = move.changes.columns()
    assert move.event is None and move.note == "sending"
    assert (cols["attempts"], cols["outcome_unknown"], cols["upload_key"]) == (3, True, "key")


def test_a_claim_takes_the_lease_and_leaves_the_ledger_alone() -> None:
    lease = Lease("host:1:2", NOW + 60)
    claim = outcomes.claimed(row(state=State.QUEUED), lease, reclaim=False)
    assert claim.event is Event.CLAIM
    reclaim = outcomes.claimed(row(), lease, reclaim=True)
    assert reclaim.event is Event.RECLAIM
    assert reclaim.changes.columns() == {"lease_owner": "host:1:2", "lease_expires": NOW + 60}


@dataclass(frozen=True)
class Video:
    status: str | None
    group_id: str | None = None
    error: str | None = None


@pytest.mark.parametrize(
    ("video", "group_id", "event"),
    [
        (Video("uploaded", "g1"), "g1", Event.STORED_FILED),
        (Video("uploaded", None), "g1", Event.STORED),
        (Video("uploaded", None), None, Event.STORED_FILED),
        (Video("uploading"), None, None),
        (Video("pending"), None, None),
        (Video("failed", error="corrupt"), None, Event.RETRY),
        (None, None, Event.RETRY),
    ],
)
def test_each_poll_answer_moves_the_job(
    video: Video | None, group_id: str | None, event: Event | None
) -> None:
    job = row(state=State.UPLOADED, video_id="v1", accepted_at=NOW - 10, group_id=group_id)
    move = outcomes.after_poll(job, video, POLICY, NOW, 0.5)
    assert move.event is event
    job.apply(move)


@pytest.mark.parametrize(
    ("waited", "wait"),
    [
        (0.0, outcomes.FIRST_POLL),
        (outcomes.FIRST_POLL / 2, outcomes.FIRST_POLL),
        (0.3, 0.3),
        (0.8, 0.8),
        (1.5, 1.5),
        (3.0, 3.0),
        (60.0, 5.0),
    ],
)
def test_a_video_still_being_stored_is_polled_again_as_long_as_it_waited(
    waited: float, wait: float
) -> None:
    """A video stored at once is seen soon (FIRST_POLL); a slow one costs few polls."""
    job = row(state=State.UPLOADED, video_id="v1", accepted_at=NOW - waited)
    move = outcomes.after_poll(job, Video("uploading"), POLICY, NOW, 0.5)
    assert move.event is None
    assert move.changes.columns()["next_attempt_at"] == pytest.approx(NOW + wait)


def test_a_video_that_never_finishes_storing_fails_after_the_deadline() -> None:
    job = row(state=State.UPLOADED, video_id="v1", accepted_at=NOW - 4000)
    move = outcomes.after_poll(job, Video("uploading"), POLICY, NOW, 0.5)
    assert move.event is Event.FAIL and "still reports status 'uploading'" in str(
        move.changes.columns()["last_error"]
    )


def test_failing_polls_back_off() -> None:
    delays = [
        outcomes.poll_failed(row(), streak, "bad json", POLICY, NOW).changes.columns()[
            "next_attempt_at"
        ]
        - NOW
        for streak in range(1, 8)
    ]
    assert delays == sorted(delays) and delays[0] >= POLICY.poll_interval
    assert delays[-1] == POLICY.backoff.cap


@dataclass(frozen=True)
class Answer:
    method: str
    path: str
    status: int
    request_id: str | None = "req_1"
    retry_after: float | None = None
    reset_after: float | None = None


def test_pauses_come_from_429_and_refused_keys_only() -> None:
    upload_429 = pauses.pause_for(Answer("POST", "/v2/videos", 429, retry_after=30), NOW)
    assert upload_429 is not None and (upload_429.kind, upload_429.until) == ("uploads", NOW + 30)
    poll_429 = pauses.pause_for(Answer("GET", "/v2/videos", 429, reset_after=90), NOW)
    assert poll_429 is not None and (poll_429.kind, poll_429.until) == ("requests", NOW + 90)
    refused = pauses.pause_for(Answer("GET", "/v2/videos", 401), NOW)
    assert refused is not None and refused.kind == "all"
    assert pauses.pause_for(Answer("GET", "/v2/videos", 500), NOW) is None


def test_changes_name_only_journal_columns() -> None:
    every = Changes(
        lease=Lease("o", 1.0),
        **{f.name: 1 for f in dataclasses.fields(Changes) if f.name != "lease"},
    )  # type: ignore[arg-type]
    assert set(every.columns()) <= set(JOB_COLUMNS)
    assert Changes().columns() == {}
    assert Changes(video_id=None).columns() == {"video_id": None}
    assert UNSET not in Changes(video_id="v").columns().values()


# -- no sequence of outcomes loses a job or sends twice without reconciling -----------------

ERRORS = [error for error, _, _, _ in CASES]
SEND_ERRORS = [
    ServerError(500, "boom"),
    ServerError(503, "busy"),
    NotSent("refused"),
    OutcomeUnknown("no answer"),
    ValidationFailed(400, "too long"),
    RateLimited(429, "slow", retry_after=5.0),
    AuthError(401, "bad key"),
    FileChanged("grew"),
    FileVanished("gone"),
    FileUnreadable("EIO"),
    Cancelled("stop", body_complete=False),
    Cancelled("stop", body_complete=True),
    LeaseLost("taken"),
    RuntimeError("bug"),
]


LISTING_ERRORS = [
    ServerError(500, "boom"),
    NotSent("refused"),
    OutcomeUnknown("no answer"),
    RateLimited(429, "slow", retry_after=5.0),
    AuthError(401, "bad key"),
]


@dataclass
class World:
    """What the API really holds, which the daemon can only learn by asking."""

    videos: dict[str, int] = field(default_factory=dict)  # upload key -> videos stored
    unreconciled: set[str] = field(default_factory=set)  # keys whose send may have stored
    sends: int = 0
    keys: int = 0

    def fresh_key(self) -> str:
        self.keys += 1
        return f"k{self.keys}"


def _try(job: Row, world: World, data: st.DataObject) -> None:
    """One worker step on a claimed job, as Steps.upload does it, with drawn outcomes."""
    if outcomes.must_reconcile(job) and not _reconcile(job, world, data):
        return
    before = data.draw(st.sampled_from(["send", "send", "duplicate", "error", "twin"]))
    if before == "duplicate":
        duplicate = Duplicate("v0", "d", "s", None, None)
        job.apply(outcomes.after_upload(job, False, duplicate, POLICY, NOW, 0.5))
        return
    if before in ("error", "twin"):
        failure = (
            outcomes.classify(data.draw(st.sampled_from(ERRORS)), sent=False)
            if before == "error"
            else Failure(Kind.DEFERRED, "a twin is being sent", Reach.NONE, 2.0)
        )
        move = outcomes.after_upload(job, False, failure, POLICY, NOW, 0.5)
        if move is None:  # another process holds it; in the model its lease lapses
            assert failure.kind is Kind.LOST
            job.lease_owner = None
        job.apply(move)
        return
    spent = outcomes.out_of_attempts(job, POLICY)
    if spent is not None:
        job.apply(outcomes.after_upload(job, False, spent, POLICY, NOW, 0.5))
        return
    _send(job, world, data)


def _reconcile(job: Row, world: World, data: st.DataObject) -> bool:
    """Look the last send up; return True if the try goes on to send."""
    assert job.upload_key is not None
    if data.draw(st.booleans()):  # the listing itself fails: nothing learnt
        failure = outcomes.classify(data.draw(st.sampled_from(LISTING_ERRORS)), sent=False)
        job.apply(outcomes.after_upload(job, False, failure, POLICY, NOW, 0.5))
        return False
    world.unreconciled.clear()
    if world.videos.get(job.upload_key):
        stored = Stored("v-adopted", "d", "s", "uploaded", adopted=True)
        job.apply(outcomes.after_upload(job, False, stored, POLICY, NOW, 0.5))
        return False
    job.apply(outcomes.reconciled_nothing(job))
    return True


def _send(job: Row, world: World, data: st.DataObject) -> None:
    claimed = dataclasses.replace(job, history=[])
    key = outcomes.upload_key(job, world.fresh_key())
    assert not world.unreconciled, "sent again while an earlier send's fate is unknown"
    job.apply(outcomes.sending(job, key, "s", None, None))
    world.sends += 1
    result = data.draw(st.sampled_from(["accepted", "error", "error", "crash"]))
    if result == "accepted":
        world.videos[key] = world.videos.get(key, 0) + 1
        stored = Stored(f"v{world.sends}", "d", "s", "uploading")
        job.apply(outcomes.after_upload(claimed, True, stored, POLICY, NOW, 0.5))
        return
    if result == "crash":  # SIGKILL mid-send: the row stays as `sending` left it
        world.unreconciled.add(key)
        if data.draw(st.booleans()):
            world.videos[key] = world.videos.get(key, 0) + 1
        job.lease_owner = None  # the lease expires; the next claim is a reclaim
        return
    failure = outcomes.classify(data.draw(st.sampled_from(SEND_ERRORS)), sent=True)
    if failure.reach is Reach.MAYBE:
        world.unreconciled.add(key)
        if data.draw(st.booleans()):
            world.videos[key] = world.videos.get(key, 0) + 1
    if failure.kind is Kind.LOST:
        job.lease_owner = None  # another process holds it; in the model its lease lapses
        return
    job.apply(outcomes.after_upload(claimed, True, failure, POLICY, NOW, 0.5))


def _step(job: Row, world: World, data: st.DataObject) -> None:
    """Whatever the engine would do next with the job in its state."""
    state = job.state
    if state is State.DISCOVERED:
        job.apply(Move(job.id, Event.SETTLED))
    elif state in (State.QUEUED, State.RETRY_WAIT) or (
        state is State.UPLOADING and job.lease_owner is None
    ):
        reclaim = state is State.UPLOADING
        job.apply(outcomes.claimed(job, Lease("me", NOW + 60), reclaim))
        _try(job, world, data)
    elif state is State.UPLOADED:
        answer = data.draw(
            st.sampled_from(
                [Video("uploaded"), Video("uploading"), Video("failed", error="x"), None]
            )
        )
        job.apply(outcomes.after_poll(job, answer, POLICY, NOW, 0.5))
    elif state is State.FILING:
        job.apply(Move(job.id, Event.FILED))
    elif state in (State.FAILED, State.MISSING, State.SKIPPED):
        job.apply(outcomes.requeue(job))
    else:
        assert state is State.DONE


def _check(job: Row, world: World) -> None:
    assert 0 <= job.attempts <= POLICY.max_attempts
    world.unreconciled -= set(job.superseded)  # old content: retired, never adopted
    if world.unreconciled:  # the journal must remember to look before the next send
        assert job.outcome_unknown and job.upload_key in world.unreconciled, job
    if job.state in ACTIVE and job.state is not State.UPLOADING:
        assert job.lease_owner is None, "a lease outlived its upload"
    if job.state in (State.UPLOADED, State.FILING, State.DONE):
        assert job.video_id is not None
    if job.state is State.RETRY_WAIT:
        assert job.next_attempt_at >= NOW, "a retry with no time to run"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_no_sequence_of_outcomes_loses_a_job_or_sends_twice_unreconciled(
    data: st.DataObject,
) -> None:
    job = Row(state=State.DISCOVERED)
    world = World()
    for _ in range(data.draw(st.integers(1, 40))):
        _step(job, world, data)
        _check(job, world)


def test_new_bytes_at_a_path_never_inherit_an_unknown_send() -> None:
    for state in (State.DISCOVERED, State.MISSING):
        job = dataclasses.replace(
            Row(state=state), upload_key="k-old", outcome_unknown=True, attempts=2
        )
        move = outcomes.content_changed(job, FileStat(10, 2, 3, 4), NOW)
        job.apply(move)
        assert move.supersede == Superseded(None, "k-old")  # retired by marker, never adopted
        assert job.upload_key is None and not job.outcome_unknown
        assert not outcomes.must_reconcile(job)
