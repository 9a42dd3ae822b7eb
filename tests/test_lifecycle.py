"""The job state machine and the retry policy: table-driven and property-tested."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reka_sync.errors import (
    AuthError,
    Cancelled,
    FileChanged,
    IllegalTransition,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    ValidationFailed,
)
from reka_sync.lifecycle import FINISHED, TRANSITIONS, Event, State, allowed_events, next_state
from reka_sync.retry import Action, Backoff, decide, server_wait


def test_happy_path() -> None:
    state = State.DISCOVERED
    for event in (Event.SETTLED, Event.CLAIM, Event.ACCEPTED, Event.STORED, Event.FILED):
        state = next_state(state, event)
    assert state is State.DONE


def test_illegal_move_raises_a_named_error() -> None:
    with pytest.raises(IllegalTransition) as caught:
        next_state(State.DONE, Event.ACCEPTED)
    assert caught.value.state == "done" and caught.value.event == "accepted"


def test_every_state_is_reachable_and_every_target_is_a_state() -> None:
    reached = {State.DISCOVERED}
    frontier = [State.DISCOVERED]
    while frontier:
        state = frontier.pop()
        for event in allowed_events(state):
            target = next_state(state, event)
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(State)
    assert all(isinstance(t, State) for t in TRANSITIONS.values())


def test_nothing_leaves_done_except_a_new_version_or_regroup() -> None:
    assert allowed_events(State.DONE) == {Event.SEEN, Event.CHANGED, Event.REGROUP}


@given(st.lists(st.sampled_from(list(Event)), max_size=60))
def test_random_event_sequences_never_reach_an_illegal_state(events: list[Event]) -> None:
    state = State.DISCOVERED
    for event in events:
        if event in allowed_events(state):
            state = next_state(state, event)
            assert state in State
        else:
            with pytest.raises(IllegalTransition):
                next_state(state, event)


RETRYABLE = [
    ServerError(500, "boom"),
    NotSent("refused"),
    OutcomeUnknown("dropped"),
    Cancelled("stalled", body_complete=True),
]


@given(
    st.integers(min_value=1, max_value=20),
    st.lists(
        st.tuples(st.sampled_from(range(len(RETRYABLE))), st.floats(0, 0.999999)), max_size=50
    ),
)
def test_attempts_never_exceed_the_limit(
    max_attempts: int, failures: list[tuple[int, float]]
) -> None:
    failed = False
    for attempts, (index, rand) in enumerate(failures, start=1):
        if failed:
            break
        decision = decide(RETRYABLE[index], attempts, max_attempts, Backoff(), rand)
        assert decision.action in (Action.RETRY, Action.FAIL)
        failed = decision.action is Action.FAIL
        assert attempts <= max_attempts
    assert failed == (len(failures) >= max_attempts)
    assert not failed or attempts >= max_attempts


@given(st.integers(min_value=1, max_value=80), st.floats(0, 0.999999))
def test_backoff_is_full_jitter_under_the_cap(attempt: int, rand: float) -> None:
    backoff = Backoff(base=2.0, cap=900.0)
    ceiling = min(900.0, 2.0 * 2 ** (attempt - 1))
    assert 0 <= backoff.delay(attempt, rand) <= ceiling
    assert backoff.delay(attempt, 0.0) == 0.0


def test_retry_after_wins_over_backoff() -> None:
    limited = RateLimited(429, "slow down", retry_after=30.0, reset_after=3600.0)
    decision = decide(limited, 1, 10, Backoff(base=1000, cap=5000), 0.99)
    assert (decision.action, decision.delay) == (Action.PAUSE_KIND, 30.0)
    reset_only = RateLimited(429, "slow down", reset_after=120.0)
    assert decide(reset_only, 1, 10, Backoff(), 0.5).delay == 120.0
    assert server_wait(0.0, None) is None
    unavailable = ServerError(503, "busy", retry_after=40.0)
    assert decide(unavailable, 1, 10, Backoff(base=1, cap=2), 0.5).delay == 40.0


def test_classification() -> None:
    assert decide(AuthError(401, "no"), 1, 10, Backoff(), 0.1).action is Action.PAUSE_ALL
    assert decide(ValidationFailed(400, "bad"), 1, 10, Backoff(), 0.1).action is Action.FAIL
    assert decide(FileChanged("grew"), 1, 10, Backoff(), 0.1).action is Action.SETTLE
    assert decide(Cancelled("shutdown"), 1, 10, Backoff(), 0.1).action is Action.RELEASE
    unknown = decide(OutcomeUnknown("dropped"), 1, 10, Backoff(), 0.1)
    assert unknown.action is Action.RETRY and unknown.outcome_unknown
    assert not decide(NotSent("refused"), 1, 10, Backoff(), 0.1).outcome_unknown
    assert {State.DONE, State.FAILED, State.SKIPPED, State.MISSING} == FINISHED
