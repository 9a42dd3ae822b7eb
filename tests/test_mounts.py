"""The mount table and the "is this root really there" decision."""

from __future__ import annotations

import time
from pathlib import Path

from reka_sync.journal import Journal
from reka_sync.mounts import mount_of, observer_kind, present, probe

MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
nas:/export /srv/media nfs4 rw 0 0
//nas/tv /srv/media/tv\\040shows cifs rw 0 0
/dev/vdb /srv/media-local xfs rw 0 0
"""


def test_the_deepest_mount_holding_a_path_wins() -> None:
    assert mount_of(Path("/srv/media/films/a.mp4"), MOUNTS) == ("/srv/media", "nfs4")
    assert mount_of(Path("/srv/media"), MOUNTS) == ("/srv/media", "nfs4")
    assert mount_of(Path("/srv/media/tv shows/x"), MOUNTS) == ("/srv/media/tv shows", "cifs")
    assert mount_of(Path("/srv/media-local/x"), MOUNTS) == ("/srv/media-local", "xfs")
    assert mount_of(Path("/home/x"), MOUNTS) == ("/", "ext4")


def test_network_and_fuse_mounts_are_polled_unless_forced() -> None:
    assert observer_kind("nfs4", "auto") == "polling"
    assert observer_kind("fuse.sshfs", "auto") == "polling"
    assert observer_kind("ext4", "auto") == "native"
    assert observer_kind("nfs4", "native") == "native"
    assert observer_kind("ext4", "polling") == "polling"


def test_an_empty_folder_left_by_an_unmounted_share_is_not_the_root() -> None:
    assert present(False, "/", "/srv/media") is False  # the share went, its mount point stays
    assert present(True, "/", "/srv/media") is True  # something is in it: it is in use
    assert present(False, "/srv/media", "/srv/media") is True  # same mount, just empty
    assert present(False, "/srv/media", "/") is True  # mounted deeper: the share came back
    assert present(False, "/", None) is True  # never seen before: nothing to lose


def test_probe_reads_the_folder_and_the_mount_table(tmp_path: Path) -> None:
    assert probe(tmp_path / "absent", None)[0] is False
    (tmp_path / "file").write_text("x")
    assert probe(tmp_path / "file", None)[0] is False
    there, point = probe(tmp_path, None)
    assert there is True
    assert str(tmp_path).startswith(point)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert probe(empty, point) == (True, point)  # empty, but on the mount it was on
    assert probe(empty, str(empty) + "/share") == (False, point)  # its share is not mounted


def test_the_journal_remembers_where_a_root_was_mounted(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    now = time.time()
    assert journal.root_mounts() == {}
    assert journal.set_root_available("/srv/media", True, now, "/srv/media") is None
    assert journal.root_mounts() == {"/srv/media": "/srv/media"}
    assert journal.set_root_available("/srv/media", True, now + 1, "/srv/media") is True
    assert journal.set_root_available("/srv/media", False, now + 2, "/") is True
    assert journal.root_mounts() == {"/srv/media": "/srv/media"}  # kept while away
    assert journal.unavailable_roots() == {"/srv/media": now + 2}
    assert journal.set_root_available("/srv/media", True, now + 3, "/srv/media") is False
    assert journal.unavailable_roots() == {}
    journal.close()
