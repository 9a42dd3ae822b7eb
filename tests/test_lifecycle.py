"""The job state machine and the backoff: table-driven and property-tested."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reka_sync.errors import IllegalTransition
from reka_sync.lifecycle import FINISHED, TRANSITIONS, Event, State, allowed_events, next_state
from reka_sync.retry import Backoff, server_wait


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


def test_what_leaves_done() -> None:
    # a new version, a regroup; INDEX: a reload whose rules ask for features a done video
    # lacks; LOST: reconcile --reupload-missing; REMOVED: the API lost the video; GONE: the
    # file was deleted locally.
    allowed = {Event.SEEN, Event.CHANGED, Event.REGROUP, Event.INDEX, Event.LOST}
    assert allowed_events(State.DONE) == allowed | {Event.REMOVED, Event.GONE}


def test_a_deleted_file_comes_back_and_a_removed_video_is_sent_again_only_when_asked() -> None:
    assert next_state(State.DONE, Event.GONE) is State.DELETED
    assert next_state(State.DELETED, Event.SEEN) is State.DONE
    assert next_state(State.DELETED, Event.CHANGED) is State.DISCOVERED
    assert next_state(State.DONE, Event.REMOVED) is State.REMOVED
    assert next_state(State.REMOVED, Event.SEEN) is State.REMOVED  # a rescan uploads nothing
    assert next_state(State.REMOVED, Event.LOST) is State.DISCOVERED


def test_indexing_ends_done_or_failed_and_a_failed_one_can_be_indexed_again() -> None:
    for via in (State.UPLOADED, State.FILING):
        assert next_state(via, Event.INDEX) is State.INDEXING
    assert next_state(State.INDEXING, Event.INDEXED) is State.DONE
    assert next_state(State.INDEXING, Event.FAIL) is State.FAILED
    assert next_state(State.FAILED, Event.INDEX) is State.INDEXING
    assert next_state(State.INDEXING, Event.CHANGED) is State.DISCOVERED
    with pytest.raises(IllegalTransition):
        next_state(State.INDEXING, Event.ACCEPTED)


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


@given(st.integers(min_value=1, max_value=80), st.floats(0, 0.999999))
def test_backoff_is_full_jitter_under_the_cap(attempt: int, rand: float) -> None:
    backoff = Backoff(base=2.0, cap=900.0)
    ceiling = min(900.0, 2.0 * 2 ** (attempt - 1))
    assert 0 <= backoff.delay(attempt, rand) <= ceiling
    assert backoff.delay(attempt, 0.0) == 0.0


def test_server_wait_takes_the_first_positive_value() -> None:
    assert server_wait(30.0, 3600.0) == 30.0
    assert server_wait(None, 120.0) == 120.0
    assert server_wait(0.0, None) is None


def test_the_finished_states() -> None:
    finished = {State.DONE, State.FAILED, State.SKIPPED, State.MISSING}
    assert finished | {State.REMOVED, State.DELETED, State.ARCHIVED} == FINISHED


def test_a_file_moved_or_deleted_after_upload_is_archived_and_its_video_stays() -> None:
    for via in (State.UPLOADED, State.FILING, State.INDEXING):
        assert next_state(via, Event.ARCHIVE) is State.ARCHIVING
    assert next_state(State.ARCHIVING, Event.ARCHIVED) is State.ARCHIVED
    assert next_state(State.ARCHIVING, Event.CHANGED) is State.DISCOVERED  # changed first
    with pytest.raises(IllegalTransition):
        next_state(State.ARCHIVED, Event.GONE)  # archived is not deleted: nothing to delete
