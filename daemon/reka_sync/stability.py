"""Is a file complete? The settle decision (pure: stats and times in, verdict out)."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class FileStat(NamedTuple):
    """What one `stat()` said about a file (a tuple: scans make one per file)."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    def same_content_as(self, other: FileStat) -> bool:
        """Given another stat, return True if size, mtime, inode and device all agree."""
        return tuple.__eq__(self, other) is True


class Verdict(StrEnum):
    STABLE = "stable"  # quiet long enough and two stats agree
    WAIT = "wait"  # not quiet long enough yet
    CHANGED = "changed"  # the stat moved: restart the quiet time
    VANISHED = "vanished"  # no longer there
    NO_INDEX_YET = "no_index_yet"  # an MP4/MOV, stable, but its moov box is not there yet
    NO_INDEX = "no_index"  # stable without a moov box for longer than we wait: cut short


def settle(
    recorded: FileStat,
    current: FileStat | None,
    quiet_since: float,
    now: float,
    settle_seconds: float,
) -> Verdict:
    """Given the recorded stat, a fresh one (None if gone) and the quiet time, return a verdict.

    `quiet_since` is when the last event or stat change was seen; a close-after-write
    event may move it earlier but never skips the two-stat comparison.
    """
    if current is None:
        return Verdict.VANISHED
    if not current.same_content_as(recorded):
        return Verdict.CHANGED
    if now - quiet_since < settle_seconds:
        return Verdict.WAIT
    return Verdict.STABLE


def await_index(has_index: bool, quiet_since: float, now: float, patience: float) -> Verdict:
    """Given whether a stable MP4/MOV has its moov box, and how long it has been quiet,
    return STABLE (upload it), NO_INDEX_YET (wait) or NO_INDEX (give up on it).
    """
    if has_index:
        return Verdict.STABLE
    return Verdict.NO_INDEX if now - quiet_since >= patience else Verdict.NO_INDEX_YET
