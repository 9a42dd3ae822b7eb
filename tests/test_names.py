"""File names as bytes: undecodable names, newlines, long names, Unicode normalisation twins."""

from __future__ import annotations

import json
import os
import sqlite3
import unicodedata
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reka_sync.config import Rule
from reka_sync.journal import Journal, SeenFile, stat_key
from reka_sync.names import from_db, shown, storable, text, to_db
from reka_sync.rules import GroupRules
from reka_sync.stability import FileStat
from tests.conftest import (
    ServiceProcess,
    digest_of,
    emulator_records,
    engine_config,
    run_backfill,
    set_faults,
    wait_for,
)

NAME_BYTES = st.binary(min_size=1, max_size=200).filter(
    lambda b: b"/" not in b and b"\0" not in b and not b.startswith(b".")
)


@given(NAME_BYTES)
def test_a_name_survives_the_journal_and_reads_on_one_line(raw: bytes) -> None:
    name = os.fsdecode(raw)
    assert from_db(to_db(name)) == name
    assert "\n" not in shown(name) and shown(name).isprintable()
    assert text(name).encode("utf-8")  # valid UTF-8 for the API
    assert storable(f"{name} vanished").encode("utf-8")


def test_shown_escapes_like_ls_b() -> None:
    assert shown(os.fsdecode(b"caf\xe9 \\ 1\n2\t.mp4")) == "caf\\xe9 \\\\ 1\\n2\\t.mp4"
    assert shown("plain name.mp4") == "plain name.mp4"
    assert text(os.fsdecode(b"caf\xe9.mp4")) == "caf\ufffd.mp4"


def test_rules_match_names_with_newlines_and_bad_bytes() -> None:
    rules = GroupRules((Rule("cameras/{camera}/**", "Camera {camera}"),), default="")
    decided = rules.decide(os.fsdecode(b"cameras/fr\xffont\nside/a\nb.mp4"))
    assert decided.group == "Camera fr\ufffdont\nside"


def test_names_are_stored_as_text_when_they_can_be_and_as_bytes_when_not(
    tmp_path: Path,
) -> None:
    journal = Journal.open(tmp_path / "j.db")
    plain = SeenFile("/m/café.mp4", "/m", "café.mp4", FileStat(1, 1, 1, 1), 0.0)
    raw = os.fsdecode(b"/m/caf\xe9.mp4")
    odd = SeenFile(raw, "/m", raw[3:], FileStat(2, 2, 2, 2), 0.0)
    assert journal.record_scan([plain, odd], 1.0).new == 2
    assert journal.find("/m/café.mp4") is not None and journal.find(raw) is not None
    assert journal.find("/m/caf\ufffd.mp4") is None  # no two names share one record
    assert journal.stat_keys_under("/m") == {  # what a walk's (path, stat) is compared with
        stat_key("/m/café.mp4", 1, 1, 1, 1),
        stat_key(raw, 2, 2, 2, 2),
    }
    journal.close()
    with sqlite3.connect(tmp_path / "j.db") as db:  # valid names stay text, as before
        kinds = dict(db.execute("SELECT size, typeof(path) FROM files").fetchall())
    assert kinds == {1: "text", 2: "blob"}


def _names_tree(media: Path, names: list[bytes]) -> dict[str, bytes]:
    files = {}
    for index, raw in enumerate(names):
        path = os.path.join(os.fsencode(media), raw + b".mp4")
        with open(path, "wb") as handle:
            handle.write(index.to_bytes(4, "little") + os.urandom(3000))
        files[os.fsdecode(path)] = raw
    return files


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(NAME_BYTES.map(lambda b: b[:200]), min_size=1, max_size=6, unique=True))
def test_backfill_uploads_each_byte_name_exactly_once(
    tmp_path_factory: Any, names: list[bytes]
) -> None:
    from reka_sync import emulator

    base = tmp_path_factory.mktemp("names")
    media = base / "media"
    media.mkdir()
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    names = [*names, nfc.encode(), nfd.encode(), b"line\nbreak", b"x" * 240]
    files = _names_tree(media, list(dict.fromkeys(names)))
    running = emulator.start(settings=emulator.Settings(processing_delay=0.05))
    try:
        set_faults(running.url, [])
        done = run_backfill(engine_config(base, media, running.url), "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        summary = json.loads(done.stdout)
        assert summary["outcomes"] == {"done": len(files)}
        records = emulator_records(running.url)
        assert sorted(r["digest"] for r in records) == sorted(digest_of(Path(p)) for p in files)
        again = run_backfill(engine_config(base, media, running.url), "--json")
        assert again.returncode == 0 and len(emulator_records(running.url)) == len(files)
    finally:
        running.stop()


def test_run_uploads_a_latin1_named_file(tmp_path: Path, media: Path, emu: Any) -> None:
    service = ServiceProcess(engine_config(tmp_path, media, emu.url, settle_seconds=1))
    try:
        latin1 = os.path.join(os.fsencode(media), "Séance d'été.mp4".encode("latin-1"))
        with open(latin1, "wb") as handle:
            handle.write(os.urandom(40_000))
        (media / "plain.mp4").write_bytes(os.urandom(30_000))
        wait_for(lambda: len(emulator_records(emu.url)) == 2, timeout=30, message="both files")
    finally:
        assert service.stop() == 0
    names = sorted(r["video_name"] for r in emulator_records(emu.url))
    assert names == ["S\ufffdance d'\ufffdt\ufffd.mp4", "plain.mp4"]
    logged = json.dumps([line for line in service.lines if "path" in line])
    assert "S\\\\xe9ance" in logged, "the name is not shown escaped in the log"
    assert "\\udce9" not in logged
