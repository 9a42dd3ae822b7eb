"""From a walk to the journal: the one path by which a rescan or a backfill records a tree.

The walk compares each file's stat with the journal's stat keys for the root (a set
of ints, read once: from the journal's cache of them if no row of the root changed since
the last walk) as it goes, and yields a folder's new or changed files; only
those become records, written a batch at a time. An unchanged tree costs the walk,
one read and no write; nothing holds the tree's rows or names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reka_sync.journal import Journal, SeenFile, Skipped
from reka_sync.scanner import Found, Known
from reka_sync.stability import FileStat

BATCH = 500  # files recorded per journal write


@dataclass
class Recorded:
    """What recording a walk did: files seen, files new or changed (recorded), and how many
    of the files the journal had as present the walk did not see as they were (`unseen`:
    gone or changed; counted only when the caller collects the keys seen)."""

    seen: int = 0
    recorded: int = 0
    unseen: int = 0


Refused = Callable[[str, str], None]  # (path, why) a file could not be recorded


class Walker(Protocol):
    """`walk_folders` with all but `known` given (a partial)."""

    def __call__(self, *, known: Known) -> Iterable[list[Found]]: ...


def record_walk(
    journal: Journal,
    root: Path,
    walker: Walker,
    skipped: list[Skipped],
    now: float,
    priority: int,
    refused: Refused,
    seen: set[int] | None = None,
) -> Recorded:
    """Given a root and its walk (`walk_folders` but for what it compares with), record the
    files the journal does not have as they are, and what the walk skipped (`skipped` is
    emptied as it goes); return the counts. Given `seen`, add the stat key of every file
    walked to it."""
    known = Known(journal.stat_keys_under(str(root)), seen)
    done = Recorded()
    batch: list[SeenFile] = []
    for found in walker(known=known):  # a folder's new or changed files
        for path, rel, st in found:
            if len(batch) >= BATCH:
                done.recorded += record(journal, batch, skipped, now, priority, refused)
            stat = FileStat(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
            batch.append(SeenFile(path, str(root), rel, stat, st.st_mtime_ns / 1e9))
        if len(batch) + len(skipped) >= BATCH:  # what the walk skipped counts too
            done.recorded += record(journal, batch, skipped, now, priority, refused)
    done.recorded += record(journal, batch, skipped, now, priority, refused)
    journal.keep_stat_keys()  # if read from the rows: the next walk reads them at once
    done.seen = known.walked
    if seen is not None:
        done.unseen = len(known.keys - seen)
    return done


def record(
    journal: Journal,
    batch: list[SeenFile],
    skipped: list[Skipped],
    now: float,
    priority: int,
    refused: Refused,
) -> int:
    """Given seen files and skipped ones, record both and empty the lists; return how many
    seen files were new or changed."""
    summary = journal.record_scan(batch, now, priority)
    for path, why in summary.refused:
        refused(path, why)
    journal.record_skipped(skipped, now)
    batch.clear()
    skipped.clear()
    return summary.new + summary.changed
