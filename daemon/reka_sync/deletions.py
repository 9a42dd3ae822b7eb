"""What happens to a video once its file or the video itself goes (pure: no I/O, no clock).

* The API no longer has a stored file's video (deleted in Reka, or expired after 30
  days on a Developer key): the file is marked ``removed``, and uploaded again only
  with ``upload.reupload_removed`` (the user may have deleted it on purpose).
* A stored file is deleted locally: it is marked ``deleted`` and its video stays
  (``watch.on_delete = "keep"``), or is deleted once the file has been gone for
  ``delete_grace`` with its root there (``"delete"``).
* Every deletion reka-sync decides on its own (a deleted file's video, a replaced
  content's) counts against ``max_deletes_per_hour``; at the cap deletions stop until
  the operator runs ``reka-sync resume-deletes``. Deletions asked for by hand
  (``reconcile --apply``) are not counted.
"""

from __future__ import annotations

from reka_sync.lifecycle import Event
from reka_sync.moves import Changes, Move

HOUR = 3600.0
REMOVED_REASON = (
    "the API no longer has its video (deleted in Reka, or expired on a Developer key);"
    " set upload.reupload_removed = true or run `reka-sync reconcile --apply"
    " --reupload-missing` to upload it again"
)


def removed(job_id: int, video_id: str, reupload: bool) -> Move:
    """Given a stored job whose video the API no longer has, and whether such videos are
    uploaded again, return its move: removed, or back to be uploaded."""
    if reupload:
        return Move(job_id, Event.LOST, fresh_chain(), {"video_id": video_id})
    changes = Changes(remote_status="removed", last_error=REMOVED_REASON)
    return Move(job_id, Event.REMOVED, changes, {"video_id": video_id})


def fresh_chain() -> Changes:
    """The columns of a file whose video is gone: a new upload chain from nothing."""
    return Changes(
        video_id=None,
        digest=None,
        upload_key=None,
        accepted_at=None,
        remote_status=None,
        outcome_unknown=False,
        attempts=0,
        last_error="the API no longer has its video; uploaded again",
    )


def gone(job_id: int, video_id: str | None, now: float, grace: float) -> Move:
    """Given a stored job whose file was deleted locally, the time and the grace, return
    its move: deleted, its video's fate decided once the grace is over."""
    changes = Changes(next_attempt_at=now + grace, last_error="the file was deleted locally")
    return Move(job_id, Event.GONE, changes, {"video_id": video_id})


def video_deleted(job_id: int, video_id: str) -> Move:
    """Given a deleted file's job whose video reka-sync deleted, return its note."""
    changes = Changes(
        video_id=None,
        upload_key=None,
        remote_status="deleted",
        last_error="the file was deleted locally; its video was deleted (watch.on_delete)",
    )
    return Move(job_id, None, changes, {"video_id": video_id}, note="video deleted")


def video_kept(job_id: int, reason: str, retry_at: float) -> Move:
    """Given a deleted file's job whose video must stay for now, and why, return its note."""
    return Move(job_id, None, Changes(next_attempt_at=retry_at), {"reason": reason}, note="kept")


def may_delete(deleted: int, cap: int) -> bool:
    """Given how many videos reka-sync deleted in the last hour (since a resume) and the
    cap (0: none), return True if one more may go."""
    return cap == 0 or deleted < cap


def count_since(now: float, resumed_at: float | None) -> float:
    """Given the time and the operator's last resume, return where the hourly count starts."""
    start = now - HOUR
    return max(start, resumed_at) if resumed_at is not None else start
