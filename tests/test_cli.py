"""The command line as a user runs it: a subprocess against a real journal."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from reka_sync.cli import build_parser
from reka_sync.journal import Journal
from reka_sync.lifecycle import Event, State
from reka_sync.moves import Changes, Move
from tests.conftest import PYTHON, cli_env, journal_of_two_files

COMMANDS = [
    "run",
    "backfill",
    "status",
    "show",
    "retry",
    "rules",
    "reconcile",
    "journal",
    "resume-deletes",
    "pause",
    "resume",
    "add-url",
    "check-config",
    "doctor",
    "emulator",
    "demo",
]


def reka(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "reka_sync", *args],
        capture_output=True,
        text=True,
        env=cli_env(**env),
        check=False,
        timeout=60,
    )


def test_every_contract_command_exists_with_help() -> None:
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert sorted(choices) == sorted(COMMANDS)
    for command in ("status", "backfill", "emulator"):
        done = reka(command, "--help")
        assert done.returncode == 0 and "--config" in done.stdout


def test_version_and_usage_errors() -> None:
    assert reka("--version").stdout.startswith("reka-sync ")
    assert reka().returncode == 2
    assert reka("frobnicate").returncode == 2
    assert reka("retry", "--config", "/dev/null").returncode == 2


@pytest.fixture
def journal_with_files(config_file: Path) -> Journal:
    journal, root = journal_of_two_files(config_file)
    job = journal.find(str(root / "b.mp4"))
    assert job is not None
    journal.apply(Move(job.id, Event.SETTLED), 2.0)
    journal.apply(Move(job.id, Event.CLAIM), 3.0)
    journal.apply(Move(job.id, Event.FAIL, Changes(last_error="HTTP 400: video too long")), 4.0)
    return journal


def test_status_reports_counts_and_failures(config_file: Path, journal_with_files: Journal) -> None:
    done = reka("status", "--config", str(config_file), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"]["discovered"] == 1 and report["counts"]["failed"] == 1
    assert report["recent_failures"][0]["error"] == "HTTP 400: video too long"
    text = reka("status", "--config", str(config_file)).stdout
    assert "discovered=1" in text and "video too long" in text


def test_show_tells_a_files_history(
    config_file: Path, media: Path, journal_with_files: Journal
) -> None:
    done = reka("show", str(media / "b.mp4"), "--config", str(config_file), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [h["event"] for h in report["history"]] == ["seen", "settled", "claim", "fail"]
    assert report["last_error"] == "HTTP 400: video too long"
    missing = reka("show", str(media / "nope.mp4"), "--config", str(config_file))
    assert missing.returncode == 1 and "not in the journal" in missing.stderr


def test_retry_requeues_failed_files(
    config_file: Path, media: Path, journal_with_files: Journal
) -> None:
    done = reka("retry", "--all-failed", "--config", str(config_file))
    assert done.returncode == 0, done.stderr
    assert "requeued 1" in done.stdout
    job = journal_with_files.find(str(media / "b.mp4"))
    assert job is not None and job.state is State.DISCOVERED and job.attempts == 0


def test_rules_explains_each_decision(config_file: Path, media: Path) -> None:
    done = reka(
        "rules",
        str(media / "cameras/front/x.mp4"),
        str(media / "y.mp4"),
        "/elsewhere.mp4",
        "--config",
        str(config_file),
    )
    lines = done.stdout.splitlines()
    assert "group 'Camera front' (groups.rules[0]" in lines[0]
    assert "no group" in lines[1]
    assert "not under any watch.roots" in lines[2]
    assert done.returncode == 1


def test_status_without_a_journal_says_what_to_do(config_file: Path) -> None:
    done = reka("status", "--config", str(config_file))
    assert done.returncode == 1
    assert "no journal at" in done.stderr and "Traceback" not in done.stderr


def test_demo_runs_the_pipeline_and_leaves_nothing_behind() -> None:
    done = reka("demo")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the API holds 9 videos" in done.stdout  # 6 samples by backfill, 3 by watch mode
    assert "Camera front:" in done.stdout and "Project alpha:" in done.stdout
    assert "(1 skipped as duplicates" in done.stdout
    for arrival in (
        "+ cameras/garage/2026-11-03 delivery.mp4 -> Camera garage",
        "+ projects/beta/rough cut.mov -> Project beta",
        "+ holiday/sunset.mp4 -> Inbox",
    ):
        assert arrival in done.stdout
    folder = done.stdout.split("sample tree: ")[1].split()[0]
    assert not Path(folder).exists()
    url = done.stdout.split("emulator: ")[1].split()[0]
    host, port = url.removeprefix("http://").split(":")
    with pytest.raises(ConnectionRefusedError):  # the emulator is gone with the demo
        socket.create_connection((host, int(port)), timeout=5).close()
