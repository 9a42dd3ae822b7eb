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
