"""Malformed replies: a proxy or a broken server in front of a store that works.

Backfill runs as a subprocess against the emulator; each fault stores the upload and
then answers with something that is not the documented 202 (or 502s from a gateway).
The body went out whole, so the outcome is unknown: reconcile must find each video
by its marker, and nothing may be stored twice or lost.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    assert_uploaded_exactly_once,
    emulator_records,
    emulator_requests,
    engine_config,
    make_tree,
    run_backfill,
    set_faults,
    write_config,
)

AFTER_STORE = [
    "html_after_store",
    "truncated_after_store",
    "no_id_after_store",
    "gateway_after_store",
]


@pytest.mark.parametrize("kind", AFTER_STORE)
def test_a_bad_answer_after_the_store_uploads_nothing_twice(
    tmp_path: Path, media: Path, emu: Any, kind: str
) -> None:
    expected = make_tree(media, 20)
    set_faults(emu.url, [{"kind": kind, "rate": 1.0}])
    done = run_backfill(engine_config(tmp_path, media, emu.url), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["outcomes"] == {"done": 20}
    set_faults(emu.url, [])
    assert_uploaded_exactly_once(emu.url, expected)
    assert "Traceback" not in done.stderr
    assert "<html" not in done.stderr.lower(), "a proxy's page pasted into the log"
    uploads = [r for r in emulator_requests(emu.url) if r["path"] == "/v2/videos"]
    assert sum(r["method"] == "POST" for r in uploads) == 20, "an upload was sent again"


def test_garbled_status_polls_back_off_and_say_so_once(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    make_tree(media, 8)
    config = engine_config(tmp_path, media, emu.url)
    settings = tomllib.loads(config.read_text())
    settings["groups"] = {}  # no group requests: the status polls are the only reads
    write_config(config, settings)
    # On the status polls (by ids), not on the startup adoption's full listing.
    set_faults(emu.url, [{"kind": "garbled_reply", "rate": 1.0, "count": 6, "param": "ids"}])
    done = run_backfill(config, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["outcomes"] == {"done": 8}
    set_faults(emu.url, [])
    assert len(emulator_records(emu.url)) == 8
    assert "Traceback" not in done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    warned = [line for line in lines if line["event"] == "status poll failed; backing off"]
    assert 1 <= len(warned) <= 2, f"{len(warned)} warnings for one stretch of bad polls"
    polls = [
        r for r in emulator_requests(emu.url) if (r["method"], r["path"]) == ("GET", "/v2/videos")
    ]
    assert len(polls) < 60, f"{len(polls)} polls: the poll did not back off"
