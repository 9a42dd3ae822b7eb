"""URL lists: videos the API fetches itself, through the same journal, retries, marker and
exactly-once protocol as files. Backfill and add-url run as subprocesses against the
emulator, with 5xx and dropped answers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from reka_sync.markers import parse
from tests.conftest import (
    API_KEY,
    PYTHON,
    cli_env,
    emulator_records,
    engine_config,
    reka_ok,
    report_json,
    run_backfill,
    set_faults,
)


def test_fifty_urls_under_5xx_and_dropped_answers_are_each_uploaded_once(
    tmp_path: Path, media: Path, emu
) -> None:
    urls = [f"https://media.example.com/talks/talk-{i:02d}.mp4" for i in range(50)]
    lines = [f"{url}\tTalk {i}\tTalks" if i % 2 else url for i, url in enumerate(urls)]
    listing = tmp_path / "urls.txt"
    listing.write_text("# talks to index\n" + "\n".join(lines) + "\n\n")
    config = engine_config(tmp_path, media, emu.url)
    faults = [
        {"kind": "server_error", "rate": 0.2, "scope": "upload"},
        {"kind": "drop_after_store", "rate": 0.2},
        {"kind": "gateway_after_store", "rate": 0.1},
    ]
    set_faults(emu.url, faults, seed=8)
    done = run_backfill(config, "--urls", str(listing), "--json", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["outcomes"] == {"done": 50}
    fired = {
        f["kind"]: f["fired"] for f in httpx.get(f"{emu.url}/_emulator/faults").json()["faults"]
    }
    assert all(fired[f["kind"]] > 0 for f in faults), fired  # each kind of fault bit
    set_faults(emu.url, [])
    records = emulator_records(emu.url)
    sent = sorted(m.rel_path for m in (parse(r["description"]) for r in records) if m)
    assert sent == sorted(urls), "each URL exactly once"
    named = {r["video_name"] for r in records}
    assert "Talk 1" in named and "talk-00.mp4" in named
    again = run_backfill(config, "--urls", str(listing))
    assert again.returncode == 0 and len(emulator_records(emu.url)) == 50
    shown = report_json("show", config, urls[1])
    assert shown is not None and shown["state"] == "done" and shown["group_name"] == "Talks"


def test_add_url_queues_once_and_a_bad_list_names_its_lines(
    tmp_path: Path, media: Path, emu
) -> None:
    config = engine_config(tmp_path, media, emu.url)
    url = "https://media.example.com/keynote.mp4"
    assert "queued" in reka_ok(config, "add-url", url, "--group", "Keynotes")
    assert "in the journal already (queued)" in reka_ok(config, "add-url", url)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{url}\nftp://nope/x.mp4\nnot a url\n")
    done = subprocess.run(
        [PYTHON, "-m", "reka_sync", "backfill", "--urls", str(bad), "--config", str(config)],
        capture_output=True,
        text=True,
        env=cli_env(REKA_API_KEY=API_KEY),
        check=False,
    )
    assert done.returncode == 2
    assert "line 2: 'ftp://nope/x.mp4'" in done.stderr and "line 3" in done.stderr
    assert run_backfill(config, "--urls", str(tmp_path / "none.txt")).returncode == 2
    listing = tmp_path / "one.txt"
    listing.write_text(url + "\n")
    assert run_backfill(config, "--urls", str(listing)).returncode == 0
    (record,) = emulator_records(emu.url)
    group = report_json("show", config, url)
    assert group is not None and group["group_name"] == "Keynotes" and record["video_id"]


def test_a_lost_journal_uploads_no_url_again(tmp_path: Path, media: Path, emu) -> None:
    urls = [f"https://media.example.com/clip-{i}.mp4" for i in range(5)]
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    config = engine_config(tmp_path, media, emu.url)
    assert run_backfill(config, "--urls", str(listing)).returncode == 0
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"journal.db{suffix}").unlink(missing_ok=True)
    again = run_backfill(config, "--urls", str(listing), "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["outcomes"] == {"done": 5}
    assert len(emulator_records(emu.url)) == 5  # adopted by their markers, not sent again
