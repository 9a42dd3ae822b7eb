"""The indexing decisions (pure): what is triggered, when, and how a run ends."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from reka_sync import features
from reka_sync.features import (
    DAILY_CAP,
    DAY,
    DOCUMENTED_DEPENDENCIES,
    REQUESTED,
    Feature,
    Look,
    Outcome,
    Policy,
    Run,
    decide,
    required,
)
from reka_sync.retry import Backoff

CATALOG = DOCUMENTED_DEPENDENCIES
POLICY = Policy(max_attempts=3, max_per_day=0, backoff=Backoff(2.0, 60.0), poll_interval=5.0)
NOW = 1_000_000.0


def run_with(needs_plan: bool = False, started: float | None = NOW, **statuses: str) -> Run:
    return Run(
        7,
        "video-7",
        {name: Feature(name, status) for name, status in statuses.items()},
        needs_plan=needs_plan,
        started_at=started,
    )


def test_required_puts_dependencies_first_and_names_the_unknown() -> None:
    assert required(["embeddings"], CATALOG) == (["transcript", "captions", "embeddings"], [])
    assert required(["objects", "captions"], CATALOG) == (["transcript", "objects", "captions"], [])
    assert required(["speech"], CATALOG) == ([], ["speech"])


def test_the_first_look_triggers_only_what_the_plan_calls_actionable() -> None:
    look = Look({"transcript": "none"}, frozenset({"transcript"}), ("transcript", "captions"))
    move = decide(Run(7, "video-7"), ["captions"], look, CATALOG, POLICY, 0, NOW, 0.5)
    assert move.trigger == (("transcript", False),)
    assert move.starts and move.run.started_at == NOW
    assert move.run.features["transcript"].status == REQUESTED
    assert move.run.features["captions"].status == "none"
    assert not move.run.needs_plan


def test_a_plan_that_lists_nothing_actionable_triggers_nothing() -> None:
    look = Look({"transcript": "none"}, frozenset(), ("transcript",))
    move = decide(Run(7, "video-7"), ["transcript"], look, CATALOG, POLICY, 0, NOW, 0.5)
    assert move.trigger == () and move.outcome is None


def test_following_the_listing_triggers_a_feature_once_its_dependencies_are_ready() -> None:
    run = run_with(transcript="processing", captions="none", embeddings="none")
    look = Look({"transcript": "processing"})
    assert decide(run, ["embeddings"], look, CATALOG, POLICY, 0, NOW, 0.5).trigger == ()
    look = Look({"transcript": "ready"})
    move = decide(run, ["embeddings"], look, CATALOG, POLICY, 0, NOW, 0.5)
    assert move.trigger == (("captions", False),)
    assert not move.starts  # the run started with its first trigger


STATUSES = ["none", "pending", "processing", "ready", "failed", "blocked", REQUESTED]


@given(
    st.dictionaries(st.sampled_from(list(CATALOG)), st.sampled_from(STATUSES)),
    st.dictionaries(st.sampled_from(list(CATALOG)), st.sampled_from(STATUSES[:-1])),
    st.lists(st.sampled_from(list(CATALOG)), min_size=1, max_size=4),
    st.booleans(),
)
def test_nothing_is_triggered_before_its_dependencies_nor_while_running_or_ready(
    recorded: dict[str, str], seen: dict[str, str], desired: list[str], planned: bool
) -> None:
    """Whatever the journal recorded and the API says now (a plan or a listing)."""
    actionable = frozenset(seen) if planned else None
    look = Look(seen, actionable, tuple(seen) if planned else None)
    move = decide(run_with(**recorded), desired, look, CATALOG, POLICY, 0, NOW + 3600, 0.5)
    for name, force in move.trigger:
        assert all(seen.get(dep) == "ready" for dep in CATALOG[name])
        assert seen.get(name, "none") in ("none", "failed")
        was_failed = seen.get(name) == "failed" or (
            recorded.get(name) == "failed" and seen.get(name, "none") == "none"
        )
        assert force == was_failed  # only a failure is run again, and only with force
        if not planned:  # a listing never overrides a trigger in doubt or a dropped status
            assert recorded.get(name, "none") in ("none", "failed", "blocked")
            assert not any(
                recorded.get(f) == REQUESTED
                or (recorded.get(f) in ("pending", "processing", "ready") and f not in seen)
                for f in required(desired, CATALOG)[0]
            )


def test_each_trigger_spends_an_attempt_and_a_failure_runs_again_with_force_later() -> None:
    look = Look({}, frozenset({"transcript"}), ("transcript",))
    first = decide(Run(7, "video-7"), ["transcript"], look, CATALOG, POLICY, 0, NOW, 0.5)
    assert first.run.features["transcript"].attempts == 1  # spent as the trigger is recorded
    running = dataclasses.replace(
        first.run, features={"transcript": Feature("transcript", "processing", attempts=1)}
    )
    failed = decide(
        running, ["transcript"], Look({"transcript": "failed"}), CATALOG, POLICY, 0, NOW, 0.5
    )
    feature = failed.run.features["transcript"]
    assert feature.attempts == 1 and feature.retry_at == NOW + 1.0  # U(0, 2) at 0.5
    assert failed.trigger == () and failed.next_at == NOW + 1.0
    again = decide(
        failed.run, ["transcript"], Look({"transcript": "failed"}), CATALOG, POLICY, 0, NOW + 1, 0.5
    )
    assert again.trigger == (("transcript", True),)
    assert again.run.features["transcript"].attempts == 2


def test_past_its_attempts_the_run_fails_with_the_reason() -> None:
    spent = Feature("transcript", "processing", attempts=POLICY.max_attempts)
    run = dataclasses.replace(run_with(), features={"transcript": spent})
    move = decide(run, ["transcript"], Look({"transcript": "failed"}), CATALOG, POLICY, 0, NOW, 0.5)
    assert move.outcome is Outcome.FAILED
    assert move.reason is not None and "transcript failed 3 times" in move.reason
    assert "retry" in move.reason and move.trigger == ()


def test_a_trigger_the_api_refuses_counts_until_the_video_fails_not_forever() -> None:
    """A 4xx on a trigger runs nothing: the plan then says none, and the feature stays
    failed (with the API's reason) until its attempts are spent."""
    run, now = Run(7, "video-7"), NOW
    plan = Look({"transcript": "none"}, frozenset({"transcript"}), ("transcript",))
    for attempt in range(1, POLICY.max_attempts + 1):
        move = decide(run, ["transcript"], plan, CATALOG, POLICY, 0, now, 0.5)
        assert move.trigger == (("transcript", attempt > 1),), attempt
        feature = move.run.features["transcript"]
        refused = features.refused(feature, "422 chunking_config is odd", POLICY, now, 0.5)
        run = dataclasses.replace(move.run, features={"transcript": refused}, needs_plan=True)
        now = refused.retry_at
    final = decide(run, ["transcript"], plan, CATALOG, POLICY, 0, now, 0.5)
    assert final.outcome is Outcome.FAILED
    assert "failed 3 times (422 chunking_config is odd)" in (final.reason or "")


def test_what_a_plan_withholds_is_not_triggered_from_the_next_listing() -> None:
    withheld = Look({"transcript": "none"}, frozenset(), ("transcript",))
    move = decide(Run(7, "video-7"), ["transcript"], withheld, CATALOG, POLICY, 0, NOW, 0.5)
    assert move.trigger == () and move.run.needs_plan  # the next look is a plan again
    waiting = Look(
        {"transcript": "ready", "captions": "none"}, frozenset(), ("transcript", "captions")
    )
    move = decide(Run(7, "video-7"), ["captions"], waiting, CATALOG, POLICY, 0, NOW, 0.5)
    assert move.trigger == () and move.run.needs_plan
    blocked = Look({"transcript": "processing"}, frozenset(), ("transcript", "captions"))
    move = decide(
        run_with(transcript="processing"), ["captions"], blocked, CATALOG, POLICY, 0, NOW, 0.5
    )
    assert not move.run.needs_plan  # captions waits for transcript: the listing may follow


def test_a_listing_that_forgets_a_feature_it_showed_is_planned_not_triggered() -> None:
    run = run_with(transcript="ready", captions="processing")
    move = decide(run, ["captions"], Look({}), CATALOG, POLICY, 0, NOW, 0.5)  # features: null
    assert move.trigger == () and move.run.needs_plan
    assert move.run.features["transcript"].status == "ready"


def test_a_trigger_whose_answer_was_lost_is_planned_never_sent_blindly() -> None:
    run = run_with(transcript=REQUESTED)
    move = decide(run, ["transcript"], Look({}), CATALOG, POLICY, 0, NOW, 0.5)
    assert move.trigger == () and move.run.needs_plan
    planned = Look({"transcript": "none"}, frozenset({"transcript"}), ("transcript",))
    move = decide(move.run, ["transcript"], planned, CATALOG, POLICY, 0, NOW, 0.5)
    assert move.trigger == (("transcript", False),)  # the plan says it never arrived
    planned = Look({"transcript": "processing"}, frozenset(), ("transcript",))
    move = decide(run, ["transcript"], planned, CATALOG, POLICY, 0, NOW, 0.5)
    assert move.trigger == ()  # it did arrive


def test_everything_ready_or_nothing_wanted_ends_the_run_indexed() -> None:
    run = run_with(transcript="ready", captions="processing")
    look = Look({"transcript": "ready", "captions": "ready"})
    assert decide(run, ["captions"], look, CATALOG, POLICY, 0, NOW, 0.5).outcome is Outcome.INDEXED
    nothing = decide(run_with(), [], Look({}), {}, POLICY, 0, NOW, 0.5)
    assert nothing.outcome is Outcome.INDEXED and nothing.trigger == ()


def test_a_feature_the_catalog_lacks_fails_the_run_with_that_reason() -> None:
    move = decide(run_with(), ["objects"], Look({}), {"transcript": ()}, POLICY, 0, NOW, 0.5)
    assert move.outcome is Outcome.FAILED and "'objects'" in (move.reason or "")


def test_the_daily_cap_holds_a_new_run_until_the_next_utc_day() -> None:
    capped = dataclasses.replace(POLICY, max_per_day=5)
    look = Look({}, frozenset({"transcript"}), ("transcript",))
    fresh = Run(7, "video-7")
    assert decide(fresh, ["transcript"], look, CATALOG, capped, 4, NOW, 0.5).starts
    held = decide(fresh, ["transcript"], look, CATALOG, capped, 5, NOW, 0.5)
    assert held.trigger == () and held.run.held == DAILY_CAP
    assert held.next_at == (NOW // DAY + 1) * DAY
    started = run_with(transcript="ready", captions="none")
    go = decide(started, ["captions"], Look({"transcript": "ready"}), CATALOG, capped, 5, NOW, 0.5)
    assert go.trigger == (("captions", False),)  # a started run is not held again


def test_a_look_that_failed_plans_next_after_a_backoff_spending_no_attempt() -> None:
    run = run_with(transcript="processing")
    move = features.look_failed(run, None, POLICY, NOW, 0.5)
    assert not move.run.needs_plan and move.run.streak == 1  # the listing failed: list again
    assert features.look_failed(run, None, POLICY, NOW, 0.5, plan=True).run.needs_plan
    assert move.next_at >= NOW + POLICY.poll_interval
    assert move.run.features["transcript"].attempts == 0
    assert features.look_failed(run, 30.0, POLICY, NOW, 0.5).next_at == NOW + 30.0


def test_counting_the_videos_a_reload_would_index_for_more() -> None:
    done = [(1, "cams/a.mp4", frozenset()), (2, "cams/b.mp4", frozenset({"transcript"}))]
    done.append((3, "misc/c.mp4", frozenset()))

    def wants(rel: str) -> tuple[str, ...]:
        return ("transcript",) if rel.startswith("cams/") else ()

    assert features.needing_more(done, wants) == (1, {"transcript": 1})
    moves = features.reindex_moves(done, wants, NOW)
    assert [m.job_id for m in moves] == [1]
