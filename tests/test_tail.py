"""The end of a backfill: the last file is confirmed soon after the API stores it.

A poll runs when it comes due (the engine wakes its poll tick then), not at the tick's
next interval; the first poll comes `outcomes.FIRST_POLL` after acceptance and waits
double after that. Checked against the real emulator over loopback, as ratios of the
engine's own intervals, never as absolute wall times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reka_sync import outcomes
from reka_sync.backfill import files_of, targets
from reka_sync.config import load_config
from reka_sync.credentials import Secret
from reka_sync.journal import Journal
from reka_sync.lifecycle import Event, State
from reka_sync.moves import Changes, Move
from reka_sync.outcomes import Failure, Kind, Policy, Stored
from reka_sync.retry import Backoff
from reka_sync.scheduler import POLL_EVERY, Engine
from tests.conftest import (
    API_KEY,
    emulator_requests,
    engine_config,
    make_tree,
    run_backfill,
    set_faults,
    wait_for,
)

FILES = 12
POLICY = Policy(5, Backoff(1.0, 60.0), poll_interval=5.0)


class Row:
    """The ledger columns `outcomes` reads."""

    id = 1
    attempts = 0
    outcome_unknown = True
    upload_key: str | None = "key"


def confirmation_lags(journal: Journal) -> list[tuple[float, float]]:
    """Given a finished backfill's journal, return for each file (acceptance first) when
    its 202 was recorded and how long after that it was confirmed (done)."""
    lags: list[tuple[float, float]] = []
    for job in journal.jobs([State.DONE]):
        history = journal.history(job.id)
        accepted = next(e.at for e in history if e.event == Event.ACCEPTED.value)
        done = next(e.at for e in history if e.to_state == State.DONE.value)
        lags.append((accepted, done - accepted))
    return sorted(lags)


@pytest.mark.parametrize("store_delay", [0.0, 0.6])
def test_last_file_is_confirmed_soon_after_the_api_stores_it(
    emu: Any, tmp_path: Path, media: Path, store_delay: float
) -> None:
    """Whatever the file count, and with a poll_interval far longer than the tick's, the
    last file of a backfill is confirmed within half a poll tick of when its poll is due:
    FIRST_POLL after acceptance if the API stored it by then, else about as long again as
    the API took (the back-off doubles); polls stay batched (fewer requests than files)."""
    set_faults(emu.url, [], processing_delay=store_delay)
    make_tree(media, FILES)
    config = engine_config(tmp_path, media, emu.url, poll_interval=5.0)
    done = run_backfill(config)
    assert done.returncode == 0, done.stdout + done.stderr
    journal = Journal.open(load_config(config).journal.path)
    try:
        lags = confirmation_lags(journal)
    finally:
        journal.close()
    assert len(lags) == FILES
    due = max(outcomes.FIRST_POLL, 2 * store_delay)  # the poll that finds it stored
    _, last = lags[-1]
    assert last <= due + POLL_EVERY / 2, f"the last file confirmed {last:.2f}s after its 202"
    polls = [
        r for r in emulator_requests(emu.url) if (r["method"], r["path"]) == ("GET", "/v2/videos")
    ]
    assert len(polls) < FILES, f"{len(polls)} poll requests for {FILES} files"


def test_a_move_says_when_its_job_comes_due_for_the_control_pool() -> None:
    """An accepted upload is due for its first poll FIRST_POLL later; a poll that finds the
    video stored, or a failure sent back to the upload queue, leaves nothing to wake."""
    now = 1000.0
    stored = Stored("video-1", "digest", "sample", "uploading")
    accepted = outcomes.after_upload(Row(), True, stored, POLICY, now, 0.5)
    assert accepted is not None
    assert outcomes.control_due(accepted) == now + outcomes.FIRST_POLL
    failed = outcomes.after_upload(Row(), True, Failure(Kind.RETRYABLE, "502"), POLICY, now, 0.5)
    assert failed is not None and outcomes.control_due(failed) is None
    filed = Move(1, Event.STORED_FILED, Changes(remote_status="uploaded", next_attempt_at=now))
    assert outcomes.control_due(filed) is None
    polled = Move(1, None, Changes(next_attempt_at=now + 0.4), note="polled")
    assert outcomes.control_due(polled) == now + 0.4


def test_the_first_poll_never_waits_past_the_poll_interval() -> None:
    """A poll_interval shorter than FIRST_POLL bounds the first poll too."""
    policy = Policy(5, Backoff(1.0, 60.0), poll_interval=outcomes.FIRST_POLL / 2)
    stored = Stored("video-1", "digest", "sample", "uploading")
    accepted = outcomes.after_upload(Row(), True, stored, policy, 10.0, 0.5)
    assert accepted is not None
    assert outcomes.control_due(accepted) == 10.0 + policy.poll_interval


def test_the_engine_says_when_a_step_ended(emu: Any, tmp_path: Path, media: Path) -> None:
    """`wait_change` returns as soon as a worker step has committed its outcome (a one-shot
    run looks at the journal then, not at its next look), and times out while idle."""
    set_faults(emu.url, [], processing_delay=0.0)
    make_tree(media, 3)
    config = load_config(engine_config(tmp_path, media, emu.url, poll_interval=5.0))
    journal = Journal.open(config.journal.path)
    journal.record_scan(list(files_of(config, targets(config, [], {}), [], [])), 0.0)
    engine = Engine(config, journal, Secret(API_KEY), one_shot=True)
    try:
        engine.start()
        assert engine.wait_change(30.0), "no step ended"
        wait_for(lambda: len(journal.jobs([State.DONE])) == 3, message="all files done")
        assert engine.wait_idle(30.0)
        engine.wait_change(0.0)  # what ended before
        assert not engine.wait_change(POLL_EVERY * 2), "a step ended with nothing to do"
    finally:
        engine.stop()
        journal.close()
