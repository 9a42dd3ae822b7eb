"""From a walk to the journal: the one path by which a rescan or a backfill records a tree.

A walk yields (path, relative path, stat) per file; each is compared with the
journal's stat keys for the root (a set of ints, read once), and only new or
changed files become records, written a batch at a time. An unchanged tree costs
the walk, one read and no write; nothing holds the tree's rows or names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from reka_sync.journal import Journal, SeenFile, Skipped
from reka_sync.stability import FileStat

BATCH = 500  # files recorded per journal write


@dataclass
class Recorded:
    """What recording a walk did: files seen, files new or changed (recorded)."""

    seen: int = 0
    recorded: int = 0


Refused = Callable[[str, str], None]  # (path, why) a file could not be recorded


def record_walk(
    journal: Journal,
    root: Path,
    walked: Iterable[tuple[str, str, os.stat_result]],
    skipped: list[Skipped],
    now: float,
    priority: int,
    refused: Refused,
    seen: set[int] | None = None,
) -> Recorded:
    """Given a root and its walk, record the files the journal does not have as they are,
    and what the walk skipped (`skipped` is emptied as it goes); return the counts. Given
    `seen`, add the stat key of every file walked to it."""
    known = journal.stat_keys_under(str(root))
    done = Recorded()
    batch: list[SeenFile] = []
    for path, rel, st in walked:
        done.seen += 1
        if len(batch) + len(skipped) >= BATCH:  # what the walk skipped counts too
            done.recorded += record(journal, batch, skipped, now, priority, refused)
        key = hash((path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev))
        if seen is not None:
            seen.add(key)
        if key in known:
            continue  # (the journal's stat_key, inlined: this runs for every file)
        stat = FileStat(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
        batch.append(SeenFile(path, str(root), rel, stat, st.st_mtime_ns / 1e9))
    done.recorded += record(journal, batch, skipped, now, priority, refused)
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
