"""The API's reachability (pure): when failures become an outage, how probes back off."""

from __future__ import annotations

from reka_sync.health import PROBE_CAP, PROBE_FIRST, REMIND, Reachability, Said


def test_only_failures_for_the_whole_grace_make_an_outage() -> None:
    reach = Reachability(grace=120)
    assert reach.failed(0, "refused") is Said.NOTHING
    assert reach.failed(119, "refused") is Said.NOTHING and not reach.outage
    assert reach.answered(119.5) is Said.NOTHING  # an answer: the run of failures is over
    assert reach.failed(200, "refused") is Said.NOTHING  # a new run starts here
    assert reach.failed(320, "refused") is Said.STARTED and reach.outage
    assert reach.next_probe == 320 + PROBE_FIRST


def test_probe_rounds_back_off_once_per_round_and_say_so_rarely() -> None:
    reach = Reachability(grace=0)
    assert reach.failed(0, "timeout") is Said.STARTED
    for _ in range(50):  # many workers failing in the same round count once
        assert reach.failed(1, "timeout") is Said.NOTHING
    assert reach.next_probe == PROBE_FIRST
    waits = []
    now = 0.0
    for _ in range(8):
        now = reach.next_probe
        reach.failed(now, "timeout")
        waits.append(reach.next_probe - now)
    assert waits[:3] == [2 * PROBE_FIRST, 4 * PROBE_FIRST, 8 * PROBE_FIRST]
    assert waits[-1] == PROBE_CAP
    assert reach.failed(REMIND + 1, "timeout") is Said.LASTS  # a reminder, ten minutes on
    assert reach.failed(REMIND + 2, "timeout") is Said.NOTHING
    assert reach.answered(REMIND + 3) is Said.ENDED and not reach.outage
    assert reach.answered(REMIND + 4) is Said.NOTHING
