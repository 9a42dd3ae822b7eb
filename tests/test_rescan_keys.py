"""The journal's cache of a root's stat keys: a rescan of an unchanged tree reads it, and
any change to the rows it stands for makes the next walk read the rows again."""

from __future__ import annotations

import os
import sqlite3
from array import array
from functools import partial
from pathlib import Path

from reka_sync.journal import Journal
from reka_sync.lifecycle import State
from reka_sync.patterns import IgnoreRules
from reka_sync.recording import Recorded, record_walk
from reka_sync.scanner import walk_folders

IGNORE = IgnoreRules((), ("mp4",))


def _rescan(journal: Journal, media: Path) -> Recorded:
    walker = partial(walk_folders, media, IGNORE, str(media))
    return record_walk(journal, media, walker, [], 1.0, 1, lambda path, why: None)


def _cached(journal: Journal, media: Path) -> bool:
    with sqlite3.connect(journal.path) as db:
        row = db.execute("SELECT keys FROM walk_keys WHERE root = ?", (str(media),)).fetchone()
    return row is not None and row[0] is not None


def _tree(tmp_path: Path) -> tuple[Journal, Path]:
    media = tmp_path / "media"
    (media / "a").mkdir(parents=True)
    for name in ("one", "two", "three"):
        (media / "a" / f"{name}.mp4").write_bytes(name.encode())
    odd = os.path.join(os.fsencode(media / "a"), b"caf\xe9.mp4")
    with open(odd, "wb") as handle:
        handle.write(b"odd")
    journal = Journal.open(tmp_path / "j.db")
    assert _rescan(journal, media).recorded == 4
    return journal, media


def test_an_unchanged_tree_is_compared_with_the_cached_keys(tmp_path: Path) -> None:
    journal, media = _tree(tmp_path)
    assert not _cached(journal, media)  # the first walk's own records made its read stale
    assert _rescan(journal, media) == Recorded(seen=4, recorded=0)  # read from the rows
    assert _cached(journal, media)
    keys = journal.stat_keys_under(str(media))
    assert _rescan(journal, media) == Recorded(seen=4, recorded=0)  # read from the cache
    assert len(keys) == 4 and _cached(journal, media)
    journal.close()
    reopened = Journal.open(tmp_path / "j.db")  # the keys are the same in a new process
    assert reopened.stat_keys_under(str(media)) == keys
    assert _rescan(reopened, media) == Recorded(seen=4, recorded=0)
    reopened.close()


def test_a_changed_new_or_byte_named_file_is_found_after_a_cached_rescan(
    tmp_path: Path,
) -> None:
    journal, media = _tree(tmp_path)
    _rescan(journal, media)
    assert _cached(journal, media)
    (media / "a" / "one.mp4").write_bytes(b"longer content")
    (media / "a" / "four.mp4").write_bytes(b"four")
    odd = os.path.join(os.fsencode(media / "a"), b"caf\xe9.mp4")
    os.utime(odd, ns=(1, 1))
    assert _rescan(journal, media).recorded == 3
    assert not _cached(journal, media)  # those records made the cache stale
    assert _rescan(journal, media) == Recorded(seen=5, recorded=0)
    journal.close()


def test_a_file_taken_for_gone_is_news_when_seen_again_as_it_was(tmp_path: Path) -> None:
    journal, media = _tree(tmp_path)
    _rescan(journal, media)
    assert _cached(journal, media)
    path = str(media / "a" / "two.mp4")
    journal._run(
        lambda conn: conn.execute(
            "UPDATE files SET state = ? WHERE path = ?", (State.MISSING.value, path)
        )
    )
    assert not _cached(journal, media)
    assert _rescan(journal, media).recorded == 1  # back, with the very stat it had
    job = journal.find(path)
    assert job is not None and job.state is not State.MISSING
    journal.close()


def test_keys_read_before_a_change_of_their_rows_are_not_cached(tmp_path: Path) -> None:
    journal, media = _tree(tmp_path)
    keys = journal.stat_keys_under(str(media))  # from the rows: kept for the cache
    path = str(media / "a" / "three.mp4")
    journal._run(lambda conn: conn.execute("UPDATE files SET size = 9 WHERE path = ?", (path,)))
    journal.keep_stat_keys()  # too late: the rows changed since they were read
    assert not _cached(journal, media)
    assert journal.stat_keys_under(str(media)) != keys
    journal.keep_stat_keys()
    assert _cached(journal, media)
    journal.close()


def test_keys_cached_by_another_way_of_computing_them_are_read_again(tmp_path: Path) -> None:
    journal, media = _tree(tmp_path)
    keys = journal.stat_keys_under(str(media))
    journal.keep_stat_keys()
    assert _cached(journal, media)
    foreign = array("q", [7, *(key ^ 1 for key in keys)]).tobytes()  # another Python's
    journal._run(
        lambda conn: conn.execute(
            "UPDATE walk_keys SET keys = ? WHERE root = ?", (foreign, str(media))
        )
    )
    assert journal.stat_keys_under(str(media)) == keys
    assert _rescan(journal, media) == Recorded(seen=4, recorded=0)
    journal.close()


NAMES = (
    "a.mp4",
    "b.MP4",
    "c.Mp4",
    ".hidden.mp4",
    ".mp4",
    "mp4",
    "d.mp4.part",
    "e.part",
    "f.mkv",
    "g.tmp",
    "h.mp4~",
    "Thumbs.db",
    "desktop.ini",
    "i.db",
    "j.crdownload",
    "k.download",
    "l.x.mp4",
    "m.",
    "n.txt",
)


def test_a_walk_wants_the_files_the_name_test_wants(tmp_path: Path) -> None:
    media = tmp_path / "media"
    for folder in ("top", "top/sub"):
        (media / folder).mkdir(parents=True)
        for name in NAMES:
            (media / folder / name).write_bytes(b"x")
    rule_sets = [
        IgnoreRules((), ("mp4",)),
        IgnoreRules(("**/.*", "**/*.part"), ("mp4", "MKV", "db", "tmp", "download", "mp4~")),
        IgnoreRules(("**/a.mp4",), ("mp4",)),  # a glob naming a file: the name test proper
        IgnoreRules(("top/sub/*.mp4",), ("mp4", "ini")),  # a glob on the path
    ]
    for ignore in rule_sets:
        found = {rel for batch in walk_folders(media, ignore, str(media)) for _, rel, _ in batch}
        wanted = {
            f"{folder}/{name}"
            for folder in ("top", "top/sub")
            for name in NAMES
            if not ignore.ignores_file(f"{folder}/{name}")
        }
        assert found == wanted


def test_names_alone_decide_only_when_no_glob_tests_names_or_paths() -> None:
    assert IgnoreRules(("**/.*", "**/@eaDir/**"), ("mp4", "MOV")).plain_extensions == {
        "mp4",
        "mov",
    }
    assert IgnoreRules((), ("mp4", "db", "tmp", "mkv~", "part")).plain_extensions == {"mp4"}
    assert IgnoreRules(("**/x*.mp4",), ("mp4",)).plain_extensions == frozenset()
    assert IgnoreRules(("a/*.mp4",), ("mp4",)).plain_extensions == frozenset()
