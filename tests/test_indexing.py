"""Indexing after upload, end to end: the daemon against the emulator over loopback, its
feature runs failing at random, killed in the middle, capped per day."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from reka_sync.features import DOCUMENTED_DEPENDENCIES, required
from reka_sync.journal import Journal
from reka_sync.lifecycle import State
from tests.conftest import (
    API_KEY,
    ServiceProcess,
    assert_uploaded_exactly_once,
    emulator_records,
    emulator_requests,
    engine_config,
    make_tree,
    reka_ok,
    report_json,
    run_backfill,
    set_faults,
    wait_for,
    with_settings,
)

# cameras/**: embeddings; projects/**: transcript; misc (no rule): nothing.
WANTS = {"Camera": ["embeddings"], "Project": ["transcript"], "Inbox": []}


def indexing_config(tmp_path: Path, media: Path, url: str, **index: Any) -> Path:
    config = with_settings(engine_config(tmp_path, media, url), "groups", rules=_rules())
    settings = {"poll_interval": 0.2, "max_attempts": 10, "scene_detection": True, **index}
    return with_settings(config, "index", **settings)


def _rules() -> list[dict[str, Any]]:
    return [
        {"match": "cameras/{camera}/**", "group": "Camera {camera}", "features": ["embeddings"]},
        {
            "match": "projects/{project}/**",
            "group": "Project {project}",
            "features": ["transcript"],
        },
    ]


def wanted_of(group: str) -> list[str]:
    return WANTS[group.split(maxsplit=1)[0]]


def assert_indexed_as_the_rules_say(url: str, expected: dict[str, str]) -> None:
    """Every video has exactly its rule's features (and their dependencies) ready, each run
    once more than it failed; videos without features got no feature request at all."""
    records = assert_uploaded_exactly_once(url, expected)
    by_name = {r["video_name"]: r for r in records}
    requests = emulator_requests(url)
    featured = [r for r in requests if "/features" in r["path"]]
    for path, group in expected.items():
        record = by_name[Path(path).name]
        needed, _ = required(wanted_of(group), DOCUMENTED_DEPENDENCIES)
        ready = {name for name, status in record["features"].items() if status == "ready"}
        assert ready == set(needed) == set(record["features"]), f"{path}: {record['features']}"
        if not needed:
            assert not [r for r in featured if record["video_id"] in r["path"]], path
        else:  # index.scene_detection = true goes out as the transcript's chunking config
            assert record["chunking_config"] == {"use_scene_detection": True}, path
    triggers = [r for r in featured if r["path"].rsplit("/", 1)[-1] in DOCUMENTED_DEPENDENCIES]
    assert triggers, "no feature was triggered"
    early = [r for r in triggers if 400 <= r["status"] < 500 and r["status"] != 429]
    assert not early, f"triggers the API refused (a dependency not ready?): {early[:3]}"
    again = [r for r in triggers if r.get("was") in ("pending", "processing", "ready")]
    assert not again, f"a feature triggered again while running or ready: {again[:3]}"


def test_three_rules_with_failing_feature_runs_get_exactly_their_features(
    tmp_path: Path, media: Path, emu
) -> None:
    expected = make_tree(media, 24, size=8 * 1024)
    set_faults(emu.url, [{"kind": "feature_failure", "rate": 0.3}], seed=5, feature_delay=0.3)
    config = indexing_config(tmp_path, media, emu.url)
    done = run_backfill(config, "--json", timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["outcomes"] == {"done": 24}
    failed_runs = [r for r in emulator_requests(emu.url) if r.get("was") == "failed"]
    assert failed_runs, "no feature run failed: the fault did not bite"
    assert_indexed_as_the_rules_say(emu.url, expected)
    front = next(p for p, g in expected.items() if g == "Camera front")
    shown = report_json("show", config, front)
    assert shown is not None
    assert [(f["name"], f["status"]) for f in shown["features"]] == [
        ("transcript", "ready"),
        ("captions", "ready"),
        ("embeddings", "ready"),
    ]
    status = report_json("status", config)
    assert status is not None
    assert status["indexing"]["features"]["embeddings"] == {"ready": 12}
    assert status["indexing"]["features"]["transcript"] == {"ready": 18}


def test_429s_5xx_and_garbled_trigger_answers_never_lead_to_a_second_trigger(
    tmp_path: Path, media: Path, emu
) -> None:
    expected = make_tree(media, 8, size=8 * 1024)
    config = indexing_config(tmp_path, media, emu.url)
    assert run_backfill(config, "--no-wait-index").returncode == 0  # uploads without faults
    faults = [
        {"kind": "feature_failure", "rate": 0.3},
        {"kind": "rate_limit", "rate": 0.15, "seconds": 0.3, "scope": "all"},
        {"kind": "server_error", "rate": 0.15, "scope": "all"},
        {"kind": "garbled_after_trigger", "rate": 0.2},  # it took effect: never again blindly
    ]
    set_faults(emu.url, faults, seed=12, feature_delay=0.3)
    done = run_backfill(config, "--json", timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["outcomes"] == {"done": 8}
    hit = [r["status"] for r in emulator_requests(emu.url) if "/features" in r["path"]]
    assert 429 in hit and 500 in hit, "the faults did not hit the feature endpoints"
    fired = {
        f["kind"]: f["fired"] for f in httpx.get(f"{emu.url}/_emulator/faults").json()["faults"]
    }
    assert fired["garbled_after_trigger"] > 0, "no trigger answer was garbled"
    set_faults(emu.url, [])
    assert_indexed_as_the_rules_say(emu.url, expected)


def test_ten_sigkills_of_run_during_indexing_trigger_nothing_twice(
    tmp_path: Path, media: Path, emu
) -> None:
    expected = make_tree(media, 24, size=8 * 1024)
    set_faults(emu.url, [{"kind": "feature_failure", "rate": 0.3}], seed=9, feature_delay=2.0)
    config = indexing_config(tmp_path, media, emu.url)
    journal = Journal.open(tmp_path / "journal.db")
    service = ServiceProcess(config)

    def stored() -> bool:
        counts = journal.counts()
        return counts[State.DONE] + counts[State.INDEXING] == 24

    wait_for(stored, timeout=60, message="every file stored")
    rng, killed = random.Random(4), 0
    while killed < 10 and journal.counts()[State.INDEXING]:
        with pytest.raises(subprocess.TimeoutExpired):  # it runs until it is killed
            service.proc.wait(timeout=rng.uniform(0.3, 1.2))
        service.proc.send_signal(signal.SIGKILL)
        service.proc.wait(timeout=30)
        killed += 1
        service = ServiceProcess(config)
    assert killed == 10, f"indexing ended after {killed} kills: too short to test"
    wait_for(lambda: journal.counts()[State.DONE] == 24, timeout=120, message="all indexed")
    assert service.stop() == 0
    journal.close()
    assert_indexed_as_the_rules_say(emu.url, expected)


def test_the_daily_cap_starts_five_a_day(tmp_path: Path, media: Path, emu) -> None:
    from reka_sync.config import load_config
    from reka_sync.credentials import Secret
    from reka_sync.indexer import reindex
    from reka_sync.scheduler import Engine

    make_tree(media, 12, size=4 * 1024)
    plain = engine_config(tmp_path, media, emu.url)
    assert run_backfill(plain).returncode == 0  # stored and filed, nothing to index yet
    config = load_config(
        with_settings(
            with_settings(plain, "groups", default="", rules=[]),
            "index",
            features=["transcript"],
            max_per_day=5,
            poll_interval=0.2,
        )
    )
    day = 20_000 * 86400.0  # midnight UTC, a day number we choose
    clock = [day + 3600.0]
    journal = Journal.open(config.journal.path)
    assert reindex(journal, config.rules(), clock[0]) == 12
    engine = Engine(config, journal, Secret(API_KEY), clock=lambda: clock[0])
    started = []
    try:
        for _ in range(3):
            settle(engine, journal, clock)
            started.append(journal.started_on(clock[0]))
            clock[0] = (clock[0] // 86400 + 1) * 86400 + 60  # a minute into the next day
        assert started == [5, 5, 2]
        assert journal.counts()[State.DONE] == 12 and journal.index_held() == 0
    finally:
        engine.stop()
        journal.close()


def settle(engine: Any, journal: Journal, clock: list[float]) -> None:
    """Drive the engine's poll tick, with the clock moving a little each look, until
    nothing indexing is due before tomorrow."""
    tomorrow = (clock[0] // 86400 + 1) * 86400

    def quiet() -> bool:
        clock[0] += 0.5
        engine.poll(clock[0])
        engine.wait_idle(10)
        due = journal.jobs([State.INDEXING], due_before=tomorrow - 1, limit=1)
        return not due

    wait_for(quiet, timeout=60, message="the day's indexing to settle")


def test_backfill_defers_what_the_cap_holds_and_no_wait_index_leaves_it_to_the_service(
    tmp_path: Path, media: Path, emu
) -> None:
    make_tree(media, 8, size=4 * 1024)  # 6 want features (cameras, projects), 2 do not
    config = indexing_config(tmp_path, media, emu.url, max_per_day=2)
    done = run_backfill(config, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["outcomes"] == {"done": 4, "indexing": 4}
    assert len(summary["index_deferred"]) == 4
    text = run_backfill(config)
    assert text.returncode == 0, text.stderr
    assert "indexing deferred to the service (daily cap): 4 files" in text.stdout
    status = report_json("status", config)
    assert status is not None and status["indexing"]["waiting_for_daily_cap"] == 4

    set_faults(emu.url, [], feature_delay=120.0)  # what starts now cannot finish meanwhile
    (new,) = make_tree(media / "cameras" / "side", 1, size=4 * 1024)
    quick = run_backfill(with_settings(config, "index", max_per_day=0), "--no-wait-index")
    assert quick.returncode == 0, quick.stderr
    assert "indexing left to the service: " in quick.stdout
    shown = report_json("show", config, new)
    assert shown is not None and shown["state"] == "indexing" and shown["video_id"]
    assert len(emulator_records(emu.url)) == 9


def test_a_copy_of_a_video_being_indexed_is_a_duplicate_not_a_second_upload(
    tmp_path: Path, media: Path, emu
) -> None:
    set_faults(emu.url, [], feature_delay=120.0)
    (original,) = make_tree(media, 1, size=8 * 1024)  # cameras/front: wants embeddings
    config = indexing_config(tmp_path, media, emu.url)
    assert run_backfill(config, "--no-wait-index").returncode == 0
    copy = media / "misc" / "copy.mp4"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(Path(original).read_bytes())
    done = run_backfill(config, "--no-wait-index", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["duplicates"] == 1
    assert len(emulator_records(emu.url)) == 1


def test_a_video_deleted_remotely_while_indexed_fails_and_retry_uploads_it_again(
    tmp_path: Path, media: Path, emu
) -> None:
    set_faults(emu.url, [], feature_delay=120.0)
    (path,) = make_tree(media, 1, size=8 * 1024)
    config = indexing_config(tmp_path, media, emu.url)
    assert run_backfill(config, "--no-wait-index").returncode == 0
    (video,) = emulator_records(emu.url)
    gone = httpx.delete(f"{emu.url}/v2/videos/{video['video_id']}", headers={"X-Api-Key": API_KEY})
    assert gone.status_code == 200
    failed = run_backfill(config, "--json")
    assert failed.returncode == 1
    (failure,) = json.loads(failed.stdout)["failures"]
    assert "no longer has the video" in failure["error"]
    assert "requeued 1" in reka_ok(config, "retry", path)
    set_faults(emu.url, [], feature_delay=0.1)
    again = run_backfill(config, "--json")
    assert again.returncode == 0, again.stderr
    assert_indexed_as_the_rules_say(emu.url, {path: "Camera front"})


def test_retry_indexes_a_failed_video_again_without_uploading(
    tmp_path: Path, media: Path, emu
) -> None:
    expected = make_tree(media, 4, size=4 * 1024)  # 3 want features, 1 does not
    set_faults(emu.url, [{"kind": "feature_failure", "rate": 1.0}], feature_delay=0.1)
    config = indexing_config(tmp_path, media, emu.url, max_attempts=2)
    done = run_backfill(config, "--json")
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert summary["outcomes"] == {"done": 1, "failed": 3}
    for failure in summary["failures"]:
        assert "transcript failed 2 times" in failure["error"] and "retry" in failure["error"]
    set_faults(emu.url, [], feature_delay=0.1)
    retried = reka_ok(config, "retry", "--all-failed")
    assert retried.count("indexing again (its video stays)") == 3
    again = run_backfill(config, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["outcomes"] == {"done": 4}
    assert len(emulator_records(emu.url)) == 4  # nothing uploaded again
    assert_indexed_as_the_rules_say(emu.url, expected)


def test_a_reload_asking_for_more_features_indexes_the_videos_already_uploaded(
    tmp_path: Path, media: Path, emu
) -> None:
    expected = make_tree(media, 8, size=4 * 1024)
    set_faults(emu.url, [], feature_delay=0.1)
    config = engine_config(tmp_path, media, emu.url)
    service = ServiceProcess(config)
    journal = Journal.open(tmp_path / "journal.db")
    wait_for(lambda: journal.counts()[State.DONE] == 8, timeout=60, message="all uploaded")
    assert not [r for r in emulator_requests(emu.url) if "/features" in r["path"]]
    indexing_config(tmp_path, media, emu.url)
    counted = reka_ok(config, "rules", "--features")
    assert "6 videos already uploaded would be indexed for more features" in counted
    assert "(lacking: transcript 2, embeddings 4)" in counted
    dry = run_backfill(config, "--dry-run")
    assert "6 videos already uploaded would be indexed for more features" in dry.stdout
    service.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: any(
            line.get("event", "").startswith("videos already uploaded need more features")
            and line.get("videos") == 6
            for line in list(service.lines)
        ),
        message="the reload to say how many videos it indexes",
    )
    wait_for(
        lambda: (
            journal.counts()[State.DONE] == 8
            and journal.feature_counts().get("embeddings") == {"ready": 4}
            and journal.feature_counts().get("transcript") == {"ready": 6}
        ),
        timeout=60,
        message="the reload's indexing to finish",
    )
    assert service.stop() == 0
    journal.close()
    assert_indexed_as_the_rules_say(emu.url, expected)
