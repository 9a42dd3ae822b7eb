"""After upload: files moved into an archive folder or deleted, killed at random points.
Backfill runs as a subprocess against the emulator over loopback."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import pytest

from reka_sync.config import load_config
from reka_sync.errors import ConfigError
from reka_sync.journal import Journal
from reka_sync.lifecycle import State
from tests.conftest import (
    digest_of,
    emulator_records,
    engine_config,
    make_tree,
    run_backfill,
    set_faults,
    with_settings,
    write_config,
)
from tests.test_engine import kill_backfills


def archive_config(tmp_path: Path, media: Path, url: str, archive: Path) -> Path:
    rules = [
        {
            "match": "cameras/{camera}/**",
            "group": "Camera {camera}",
            "after_upload": f"move:{archive}",
        },
        {
            "match": "projects/{p}/**",
            "group": "Project {p}",
            "after_upload": "delete",
            "after_upload_confirm": True,
        },
    ]
    return with_settings(engine_config(tmp_path, media, url), "groups", rules=rules)


def test_moves_and_deletes_killed_at_random_points_keep_every_file_once(
    tmp_path: Path, media: Path, emu
) -> None:
    expected = make_tree(media, 24, size=256 * 1024)
    digests = {path: digest_of(Path(path)) for path in expected}
    archive = tmp_path / "archive"
    config = archive_config(tmp_path, media, emu.url, archive)
    # A video is stored 1 s after its upload, so the first backfill outlasts the first
    # kill however fast the machine is, and later ones are cut while they file and move.
    set_faults(emu.url, [], processing_delay=1.0)
    killed = kill_backfills(config, 10, random.Random(17), 0.3, 1.5)
    final = run_backfill(config, "--json")
    assert final.returncode == 0, final.stdout + final.stderr
    assert killed > 0
    assert json.loads(final.stdout)["outcomes"] == {"archived": 18, "done": 6}
    stored = [r["digest"] for r in emulator_records(emu.url)]
    assert sorted(stored) == sorted(digests.values()), "each content uploaded exactly once"
    for path, group in expected.items():
        rel = Path(path).relative_to(media)
        moved = archive / rel
        if group.startswith("Camera"):
            assert not Path(path).exists() and digest_of(moved) == digests[path], path
        elif group.startswith("Project"):
            assert not Path(path).exists() and not moved.exists(), path  # deleted, video kept
        else:
            assert digest_of(Path(path)) == digests[path] and not moved.exists(), path
    assert not list(archive.rglob("*.reka-sync-tmp"))
    journal = Journal.open(tmp_path / "journal.db", readonly=True)
    try:
        assert journal.counts()[State.ARCHIVED] == 18
    finally:
        journal.close()


def test_a_move_across_filesystems_copies_verifies_then_unlinks(
    tmp_path: Path, media: Path, emu
) -> None:
    if not Path("/dev/shm").is_dir():
        pytest.skip("needs /dev/shm, a filesystem apart")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        archive = Path(other) / "archive"
        archive.mkdir()
        if archive.stat().st_dev == media.stat().st_dev:
            pytest.skip("/dev/shm is on the same filesystem here")
        (path,) = make_tree(media, 1, size=512 * 1024)
        digest = digest_of(Path(path))
        config = archive_config(tmp_path, media, emu.url, archive)
        assert run_backfill(config).returncode == 0
        moved = archive / Path(path).relative_to(media)
        assert not Path(path).exists() and digest_of(moved) == digest
        assert not list(archive.rglob("*.reka-sync-tmp"))


def test_an_archive_inside_a_root_is_never_picked_up_again(
    tmp_path: Path, media: Path, emu
) -> None:
    make_tree(media, 4, size=4 * 1024)
    archive = media / "archive"
    config = archive_config(tmp_path, media, emu.url, archive)
    assert run_backfill(config).returncode == 0
    assert len(list(archive.rglob("*.mp4"))) == 2  # the two camera clips
    again = run_backfill(config, "--json")
    assert again.returncode == 0, again.stderr
    assert len(emulator_records(emu.url)) == 4
    assert json.loads(again.stdout)["files"] == 4  # nothing recorded under archive/


def test_delete_needs_its_confirmation_beside_it(tmp_path: Path, media: Path) -> None:
    rules = [{"match": "a/**", "group": "A", "after_upload": "delete"}]
    config = write_config(
        tmp_path / "c.toml",
        {
            "watch": {"roots": [str(media)]},
            "groups": {"rules": rules},
            "upload": {"after_upload": "nowhere"},
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.problems == [
        'upload.after_upload: \'nowhere\': use "keep", "move:DIR" or "delete"',
        'groups.rules[0].after_upload: "delete" deletes each file once its video is stored;'
        " set after_upload_confirm = true beside it to mean it",
    ]


def test_a_new_file_at_an_archived_path_is_moved_beside_the_first(
    tmp_path: Path, media: Path, emu
) -> None:
    (path,) = make_tree(media, 1, size=8 * 1024)  # a camera clip: moved
    archive = tmp_path / "archive"
    config = archive_config(tmp_path, media, emu.url, archive)
    assert run_backfill(config).returncode == 0
    first = archive / Path(path).relative_to(media)
    Path(path).write_bytes(b"another recording, same name" * 300)  # the camera reuses it
    assert run_backfill(config).returncode == 0
    second = first.with_name(f"{first.stem} (2){first.suffix}")
    assert not Path(path).exists() and first.exists() and second.exists()
    assert digest_of(second) != digest_of(first)
    assert len(emulator_records(emu.url)) == 2
