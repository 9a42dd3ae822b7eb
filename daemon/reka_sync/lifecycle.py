"""The job state machine as a plain transition table (pure, no I/O).

    discovered ─settled─▶ queued ─claim─▶ uploading ─accepted/adopted─▶ uploaded
        ▲                   ▲  ▲              │  │                           │ stored
        └──────changed──────┘  └─retry_due─ retry_wait ◀─retry─┘            ▼
                                                                 filing ─filed─▶ done

              (stored and filed, its rule wants features) ─index─▶ indexing ─indexed─▶ done

A video whose rule names features goes from stored and filed to indexing, and is done
once they are ready; a reload that asks for more brings done videos back to indexing.
A file whose rule says `after_upload` (move or delete) goes, once stored, filed and
indexed, to archiving, and is archived once moved or deleted (its video stays).

Side exits: failed (permanent, with a reason), skipped (ignored or a
duplicate of content already uploaded), missing (vanished before upload).
After upload: removed (the API no longer has the video: deleted in Reka, or
expired), deleted (the file was deleted locally; its video stays, or is deleted
with watch.on_delete = "delete").
`retry` on failed/missing/skipped puts a file back in the queue by hand. Reconcile
adopts a file's video found by its marker (a lost journal) and sends a file whose
video the API lost back to be uploaded again.
"""

from __future__ import annotations

from enum import StrEnum

from reka_sync.errors import IllegalTransition


class State(StrEnum):
    DISCOVERED = "discovered"
    QUEUED = "queued"
    UPLOADING = "uploading"
    RETRY_WAIT = "retry_wait"
    UPLOADED = "uploaded"
    FILING = "filing"
    INDEXING = "indexing"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    MISSING = "missing"
    REMOVED = "removed"  # stored once; the API no longer has the video
    DELETED = "deleted"  # stored once; the file was deleted locally
    ARCHIVING = "archiving"  # stored; the file is being moved or deleted (after_upload)
    ARCHIVED = "archived"  # stored; the file was moved or deleted on purpose


class Event(StrEnum):
    SEEN = "seen"  # the watcher or a scan saw the file (again)
    SETTLED = "settled"  # two agreeing stats after the quiet time
    CHANGED = "changed"  # the file changed: settle again
    CLAIM = "claim"  # a worker took the job with a lease
    RECLAIM = "reclaim"  # a worker took over a job whose lease expired
    ACCEPTED = "accepted"  # the API answered 202 with a video id
    ADOPTED = "adopted"  # reconcile found our upload by its marker (a send, or a lost journal)
    RETRY = "retry"  # a retryable failure: wait, then try again
    RETRY_DUE = "retry_due"  # the wait is over
    STORED = "stored"  # the API reports the video stored; not yet in its group
    STORED_FILED = "stored_filed"  # stored, and already in its group
    FILED = "filed"  # moved into its group
    FAIL = "fail"  # permanent failure
    DUPLICATE = "duplicate"  # same content already uploaded
    IGNORE = "ignore"  # not wanted after all
    VANISHED = "vanished"  # the file is gone before upload
    REQUEUE = "requeue"  # the operator asked for another try
    REGROUP = "regroup"  # a finished file should be in another group
    INDEX = "index"  # stored and filed, and its rule wants features it lacks
    INDEXED = "indexed"  # every feature it wants is ready
    LOST = "lost"  # the API no longer has its video: upload it again (reconcile --reupload-missing)
    REMOVED = "removed"  # the API no longer has its video: note it, upload nothing
    GONE = "gone"  # the file was deleted locally (its root there)
    ARCHIVE = "archive"  # stored, filed, indexed: its rule moves or deletes the file now
    ARCHIVED = "archived"  # the file was moved or deleted (after_upload)


ACTIVE = frozenset(
    {
        State.DISCOVERED,
        State.QUEUED,
        State.UPLOADING,
        State.RETRY_WAIT,
        State.UPLOADED,
        State.FILING,
        State.INDEXING,
        State.ARCHIVING,
    }
)
FINISHED = frozenset(
    {
        *(State.DONE, State.FAILED, State.SKIPPED, State.MISSING),
        *(State.REMOVED, State.DELETED, State.ARCHIVED),
    }
)
_PRE_UPLOAD = (State.DISCOVERED, State.QUEUED, State.RETRY_WAIT, State.UPLOADING)
# A file found changed right after its upload: the video is deleted, the file settles again.
_CHANGEABLE = (*_PRE_UPLOAD, State.UPLOADED, State.FILING)

_TABLE: dict[tuple[State, Event], State] = {
    (State.DISCOVERED, Event.SEEN): State.DISCOVERED,
    (State.DISCOVERED, Event.SETTLED): State.QUEUED,
    (State.QUEUED, Event.SEEN): State.QUEUED,
    (State.QUEUED, Event.CLAIM): State.UPLOADING,
    (State.RETRY_WAIT, Event.SEEN): State.RETRY_WAIT,
    (State.RETRY_WAIT, Event.CLAIM): State.UPLOADING,
    (State.RETRY_WAIT, Event.RETRY_DUE): State.QUEUED,
    (State.UPLOADING, Event.SEEN): State.UPLOADING,
    (State.UPLOADING, Event.RECLAIM): State.UPLOADING,
    (State.UPLOADING, Event.ACCEPTED): State.UPLOADED,
    (State.UPLOADING, Event.ADOPTED): State.UPLOADED,
    (State.UPLOADING, Event.RETRY): State.RETRY_WAIT,
    (State.UPLOADING, Event.DUPLICATE): State.SKIPPED,
    (State.UPLOADED, Event.SEEN): State.UPLOADED,
    (State.UPLOADED, Event.STORED): State.FILING,
    (State.UPLOADED, Event.STORED_FILED): State.DONE,
    (State.UPLOADED, Event.RETRY): State.RETRY_WAIT,
    (State.FILING, Event.SEEN): State.FILING,
    (State.FILING, Event.FILED): State.DONE,
    (State.DONE, Event.SEEN): State.DONE,
    (State.DONE, Event.REGROUP): State.FILING,
    (State.UPLOADED, Event.INDEX): State.INDEXING,
    (State.FILING, Event.INDEX): State.INDEXING,
    (State.DONE, Event.INDEX): State.INDEXING,
    (State.FAILED, Event.INDEX): State.INDEXING,  # `retry` of a video whose indexing failed
    (State.INDEXING, Event.SEEN): State.INDEXING,
    (State.INDEXING, Event.INDEXED): State.DONE,
    (State.INDEXING, Event.FAIL): State.FAILED,
    (State.DONE, Event.LOST): State.DISCOVERED,
    (State.INDEXING, Event.LOST): State.DISCOVERED,
    (State.REMOVED, Event.LOST): State.DISCOVERED,
    (State.DONE, Event.REMOVED): State.REMOVED,
    (State.INDEXING, Event.REMOVED): State.REMOVED,
    (State.REMOVED, Event.SEEN): State.REMOVED,
    (State.DONE, Event.GONE): State.DELETED,
    (State.INDEXING, Event.GONE): State.DELETED,
    (State.REMOVED, Event.GONE): State.DELETED,
    (State.DELETED, Event.SEEN): State.DONE,  # back as it was, its video still there
    (State.UPLOADED, Event.ARCHIVE): State.ARCHIVING,
    (State.FILING, Event.ARCHIVE): State.ARCHIVING,
    (State.INDEXING, Event.ARCHIVE): State.ARCHIVING,
    (State.ARCHIVING, Event.SEEN): State.ARCHIVING,
    (State.ARCHIVING, Event.ARCHIVED): State.ARCHIVED,
    (State.ARCHIVING, Event.FILED): State.DONE,  # the rule keeps the file after all
    (State.ARCHIVING, Event.GONE): State.DELETED,  # it vanished before it could be moved
    (State.ARCHIVED, Event.SEEN): State.ARCHIVED,
    (State.SKIPPED, Event.SEEN): State.SKIPPED,
    (State.FAILED, Event.SEEN): State.FAILED,
    (State.MISSING, Event.SEEN): State.DISCOVERED,
}
for _state in _CHANGEABLE:
    _TABLE[(_state, Event.CHANGED)] = State.DISCOVERED
for _state in _PRE_UPLOAD:
    _TABLE[(_state, Event.VANISHED)] = State.MISSING
    _TABLE[(_state, Event.IGNORE)] = State.SKIPPED
for _state in (*_PRE_UPLOAD, State.UPLOADED, State.FILING):
    _TABLE[(_state, Event.FAIL)] = State.FAILED
for _state in (State.FAILED, State.MISSING, State.SKIPPED, State.REMOVED, State.DELETED):
    _TABLE[(_state, Event.REQUEUE)] = State.DISCOVERED
# A file the journal did not tie to its video (a lost or restored journal): reconcile
# records the video, and the status poll confirms it stored and filed.
for _state in (State.DISCOVERED, State.QUEUED, State.RETRY_WAIT):
    _TABLE[(_state, Event.ADOPTED)] = State.UPLOADED
# A finished file whose content changed in place is a new version to upload.
for _state in (
    State.DONE,
    State.INDEXING,
    State.ARCHIVING,
    State.ARCHIVED,
    State.SKIPPED,
    State.FAILED,
    State.REMOVED,
    State.DELETED,
):
    _TABLE[(_state, Event.CHANGED)] = State.DISCOVERED

TRANSITIONS: dict[tuple[State, Event], State] = dict(_TABLE)


def next_state(state: State, event: Event) -> State:
    """Given a state and an event, return the next state. Raise IllegalTransition if forbidden."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state.value, event.value) from None


def allowed_events(state: State) -> frozenset[Event]:
    """Given a state, return the events it accepts."""
    return frozenset(event for (s, event) in TRANSITIONS if s == state)
