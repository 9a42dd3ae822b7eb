"""The typed changes a job's row can take, and a move: one event (or note) with them (pure).

`outcomes` builds moves; the journal applies them and nothing else, so every
column a step may write is named here, with its type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from reka_sync.lifecycle import Event
from reka_sync.stability import FileStat


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET


@dataclass(frozen=True)
class Lease:
    """Who may send a job, and until when (renewed while the holder lives)."""

    owner: str
    expires: float


@dataclass(frozen=True)
class Changes:
    """Row changes of one move; a field left UNSET is not written."""

    size: int | _Unset = UNSET
    mtime_ns: int | _Unset = UNSET
    inode: int | _Unset = UNSET
    device: int | _Unset = UNSET
    quiet_since: float | _Unset = UNSET
    sample_hash: str | _Unset | None = UNSET
    digest: str | _Unset | None = UNSET
    attempts: int | _Unset = UNSET
    next_attempt_at: float | _Unset = UNSET
    lease: Lease | _Unset | None = UNSET  # None: released
    upload_key: str | _Unset | None = UNSET
    outcome_unknown: bool | _Unset = UNSET
    video_id: str | _Unset | None = UNSET
    accepted_at: float | _Unset | None = UNSET
    remote_status: str | _Unset | None = UNSET
    group_name: str | _Unset | None = UNSET
    group_id: str | _Unset | None = UNSET
    last_error: str | _Unset | None = UNSET

    @classmethod
    def for_stat(cls, stat: FileStat, quiet_since: float) -> Changes:
        """Given what stat said of a file and since when it is quiet, return those columns."""
        return cls(
            size=stat.size,
            mtime_ns=stat.mtime_ns,
            inode=stat.inode,
            device=stat.device,
            quiet_since=quiet_since,
        )

    def columns(self) -> dict[str, Any]:
        """Return the columns to write, by name (the lease as its two columns)."""
        out = {
            name: value
            for name, value in vars(self).items()
            if value is not UNSET and name != "lease"
        }
        if isinstance(self.lease, Lease):
            out["lease_owner"], out["lease_expires"] = self.lease.owner, self.lease.expires
        elif self.lease is None:
            out["lease_owner"] = out["lease_expires"] = None
        return out


@dataclass(frozen=True)
class Superseded:
    """A video of a file's earlier content: by id, or (its send's outcome unknown) by key."""

    video_id: str | None
    upload_key: str | None


@dataclass(frozen=True)
class Move:
    """One job's move: a lifecycle event (or a note when event is None) and its changes."""

    job_id: int
    event: Event | None
    changes: Changes = field(default_factory=Changes)
    detail: dict[str, Any] | None = None
    note: str = ""
    supersede: Superseded | None = None  # a video of earlier content, to retire later
    expect: FileStat | None = None  # refused if the row's stat is no longer this one
