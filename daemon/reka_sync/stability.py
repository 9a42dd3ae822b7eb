"""Is a file complete? The settle decision (pure: stats, times and headers in, verdict out).

A file is complete when no event has arrived for ``settle_seconds``, two stats
agree, no local writer holds it open (a write seen with no close-write since),
and its container says it ended:

* MP4/MOV: its index (``moov``) is there; a fragmented one (``moof`` fragments)
  must also have been quiet for ``settle_seconds`` after its writer closed it, or
  for ``live_quiet_seconds`` where no close-write can be seen, unless it carries the
  ``mfra`` box a muxer writes on closing.
* Matroska/WebM: its Segment size is written (muxers rewrite "unknown" when they
  close). One that keeps it unknown, with no writer, quiet for
  ``live_quiet_seconds``, is complete but unfinalised (uploaded, and `show` says so).
* MPEG-TS/PS streams: no writer, and quiet time only (``live_quiet_seconds`` where
  no close-write can be seen). Other containers (AVI, FLV, WMV, or bytes that do
  not parse): no writer and ``settle_seconds`` of quiet.
* An empty file is never complete.

A one-shot backfill never waits long on one file: what still looks written to is
left for the service, and an MP4 without its index that nobody writes is cut short.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from reka_sync.container import Container, Kind


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
    STABLE = "stable"  # complete: upload it
    UNFINALISED = "unfinalised"  # complete, but its container was never finalised: upload it
    WAIT = "wait"  # not yet (the reason says why)
    CHANGED = "changed"  # the stat moved: restart the quiet time
    VANISHED = "vanished"  # no longer there
    EMPTY = "empty"  # no bytes yet
    LEFT = "left"  # one-shot only: still being written, left for the service
    CUT_SHORT = "cut_short"  # an MP4/MOV that will never get its index: fail it
    NOT_VIDEO = "not_video"  # the extension says video, the bytes do not (a TypeScript .ts)


class Writer(StrEnum):
    """What the filesystem events say about writers of a file."""

    OPEN = "open"  # a write was seen and no close-write since
    CLOSED = "closed"  # the last writer closed it (or it was renamed into place)
    UNSEEN = "unseen"  # no events for it (a polled share, a backfill, nothing since start)


@dataclass(frozen=True)
class Limits:
    settle_seconds: float
    live_quiet_seconds: float
    mp4_index_wait: float  # run: how long a quiet MP4/MOV without its index may wait
    one_shot: bool = False  # backfill: never wait long on one file


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""


def settle(
    recorded: FileStat,
    current: FileStat | None,
    quiet_since: float,
    now: float,
    settle_seconds: float,
) -> Verdict:
    """Given the recorded stat, a fresh one (None if gone) and the quiet time, return
    STABLE, WAIT, CHANGED or VANISHED from the stats alone (the first gate)."""
    if current is None:
        return Verdict.VANISHED
    if not current.same_content_as(recorded):
        return Verdict.CHANGED
    if now - quiet_since < settle_seconds:
        return Verdict.WAIT
    return Verdict.STABLE


def complete(
    size: int, quiet_for: float, writer: Writer, container: Container | None, limits: Limits
) -> Decision:
    """Given a file whose stats agree and that has been quiet for `quiet_for` seconds, what
    the events say of its writers and what its headers say, return whether it is complete
    (and if not, why)."""
    if size == 0 or (container is not None and container.kind is Kind.EMPTY):
        return Decision(Verdict.EMPTY, "empty: waiting for content")
    if writer is Writer.OPEN:
        return _not_yet(limits, "a local process still has it open for writing")
    if quiet_for < limits.settle_seconds:  # short: a backfill waits for it too
        return Decision(Verdict.WAIT, f"waiting for {limits.settle_seconds:g}s of quiet")
    # Growing containers need quiet after a close-write, or a longer quiet without one.
    needed = limits.settle_seconds if writer is Writer.CLOSED else limits.live_quiet_seconds
    if container is None or container.kind is Kind.OTHER:
        return Decision(Verdict.STABLE)  # nothing to judge: the quiet time decided
    if container.kind is Kind.STREAM:
        if container.not_video:
            return Decision(Verdict.NOT_VIDEO, "no MPEG-TS sync bytes: not a video")
        if quiet_for < needed:
            return _not_yet(
                limits, f"a stream {_growing(writer)}: waiting for {needed:g}s of quiet"
            )
        return Decision(Verdict.STABLE)
    if container.kind is Kind.MKV:
        return _matroska(container, quiet_for, limits)
    return _mp4(container, quiet_for, needed, writer, limits)


def _mp4(
    container: Container, quiet_for: float, needed: float, writer: Writer, limits: Limits
) -> Decision:
    if not container.has_index and (limits.one_shot or limits.mp4_index_wait > 0):
        if limits.one_shot or quiet_for >= limits.mp4_index_wait:
            return Decision(
                Verdict.CUT_SHORT,
                f"an MP4/MOV without its index (moov box) after {quiet_for:.0f}s of quiet "
                "with no writer: cut short? Re-export or repair it; a changed file is "
                "picked up again",
            )
        return Decision(
            Verdict.WAIT, "waiting for the MP4/MOV index (moov box): still being written?"
        )
    if container.fragmented and not container.closed_marker and quiet_for < needed:
        return _not_yet(
            limits,
            f"a fragmented MP4 {_growing(writer)}: waiting for {needed:g}s of quiet",
        )
    return Decision(Verdict.STABLE)


def _matroska(container: Container, quiet_for: float, limits: Limits) -> Decision:
    if container.finalised:
        return Decision(Verdict.STABLE)
    if quiet_for >= limits.live_quiet_seconds:
        return Decision(
            Verdict.UNFINALISED,
            f"Matroska segment size never written (quiet {quiet_for:.0f}s, no writer): "
            "uploaded as it is",
        )
    return _not_yet(limits, "Matroska segment size not written yet: still recording?")


def _growing(writer: Writer) -> str:
    return "closed by its writer" if writer is Writer.CLOSED else "with no close-write seen"


def _not_yet(limits: Limits, reason: str) -> Decision:
    if limits.one_shot:
        return Decision(Verdict.LEFT, f"still being written ({reason}); left for the service")
    return Decision(Verdict.WAIT, reason)
