"""What the journal hands out: plain, frozen values (no connections, no SQL)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from reka_sync.lifecycle import State
from reka_sync.stability import FileStat


@dataclass(frozen=True)
class Job:
    """One file's row, as plain values."""

    id: int
    path: str
    root: str
    rel_path: str
    size: int
    mtime_ns: int
    inode: int
    device: int
    quiet_since: float
    sample_hash: str | None
    digest: str | None
    state: State
    priority: int
    attempts: int
    next_attempt_at: float
    lease_owner: str | None
    lease_expires: float | None
    upload_key: str | None
    outcome_unknown: bool
    video_id: str | None
    accepted_at: float | None
    remote_status: str | None
    group_name: str | None
    group_id: str | None
    last_error: str | None
    created_at: float
    updated_at: float

    @property
    def stat(self) -> FileStat:
        return FileStat(self.size, self.mtime_ns, self.inode, self.device)


@dataclass(frozen=True)
class HistoryEntry:
    at: float
    event: str
    from_state: str | None
    to_state: str
    detail: dict[str, Any]


class SeenFile(NamedTuple):
    """A file a scan or the watcher saw: where it is and what stat said (a tuple: one per file
    of a scan)."""

    path: str
    root: str
    rel_path: str
    stat: FileStat
    quiet_since: float


@dataclass(frozen=True)
class Replaced:
    """A video of a file's earlier content (superseded), and what became of it."""

    id: int
    file_id: int
    video_id: str | None
    upload_key: str | None  # when the send's outcome was unknown: look it up by marker
    since: float
    outcome: str | None  # deleted, already gone, kept; None while pending
    done_at: float | None


class Skipped(NamedTuple):
    """A path a scan passed over, and why (a link not followed, a FIFO, a device)."""

    path: str
    root: str
    rel_path: str
    reason: str


@dataclass(frozen=True)
class Pause:
    kind: str
    until: float
    reason: str


@dataclass
class ScanSummary:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, why) not recorded


@dataclass(frozen=True)
class Scope:
    """The files a backfill covers: whole roots, or files and folders inside them."""

    roots: tuple[str, ...] = ()  # every file recorded under these roots
    paths: tuple[tuple[str, str], ...] = ()  # (root, path): that file, or all under it


@dataclass(frozen=True)
class Listed:
    """A file named in a summary: where it is, and why it ended as it did."""

    path: str
    reason: str | None


JOB_COLUMNS = tuple(f.name for f in fields(Job))
