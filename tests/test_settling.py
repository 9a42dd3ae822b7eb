"""The settle tick over a real journal and real files: one file's trouble never stops it."""

from __future__ import annotations

import os
from pathlib import Path

from reka_sync.config import WatchConfig
from reka_sync.journal import Journal, SeenFile
from reka_sync.lifecycle import Event, State
from reka_sync.moves import Move
from reka_sync.scanner import stat_file
from reka_sync.settling import Settler
from reka_sync.stability import Writer


def test_a_file_another_process_moves_meanwhile_does_not_stop_the_tick(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    paths = []
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        path = tmp_path / name
        path.write_bytes(os.urandom(5000))
        stat = stat_file(path)
        assert stat is not None
        journal.record_scan([SeenFile(str(path), str(tmp_path), name, stat, 0.0)], 1.0)
        paths.append(str(path))
    first = journal.find(paths[0])
    assert first is not None

    def writer_of(path: str) -> Writer:
        if path == paths[0] and journal.get(first.id).state is State.DISCOVERED:
            journal.apply(Move(first.id, Event.SETTLED), 2.0)  # another process got there
        return Writer.CLOSED

    settler = Settler(journal, writer_of)
    config = WatchConfig(roots=(tmp_path,), settle_seconds=0)
    assert settler.tick(config, 10.0) == 2  # b and c, though a's move was refused
    assert [journal.find(p).state for p in paths] == [State.QUEUED] * 3  # type: ignore[union-attr]


def test_a_file_that_changes_while_its_page_is_decided_is_not_settled(tmp_path: Path) -> None:
    """A page's moves are committed together after its files were looked at; one whose
    recorded stat changed meanwhile (the watcher saw it grow) is refused, not queued."""
    journal = Journal.open(tmp_path / "j.db")
    path = tmp_path / "a.mp4"
    path.write_bytes(os.urandom(5000))
    stat = stat_file(path)
    assert stat is not None
    journal.record_scan([SeenFile(str(path), str(tmp_path), "a.mp4", stat, 0.0)], 1.0)

    def writer_of(seen: str) -> Writer:  # asked while the page is decided: the file grows
        with path.open("ab") as handle:
            handle.write(b"more")
        grown = stat_file(path)
        assert grown is not None
        journal.record_scan([SeenFile(seen, str(tmp_path), "a.mp4", grown, 9.0)], 9.0)
        return Writer.CLOSED

    settler = Settler(journal, writer_of)
    assert settler.tick(WatchConfig(roots=(tmp_path,), settle_seconds=0), 10.0) == 0
    job = journal.find(str(path))
    assert job is not None and job.state is State.DISCOVERED and job.size == 5004
    journal.close()
