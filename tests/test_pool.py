"""The worker pool's liveness: a step that stops showing signs of life is counted as stuck.

The steps are real threads; only the pool's clock is ours, so no test waits minutes.
"""

from __future__ import annotations

import threading

from reka_sync.config import ApiConfig
from reka_sync.pool import WorkerPool
from reka_sync.workers import QUIET_SLACK, quiet_limit
from tests.conftest import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_quiet_step_is_overdue_until_it_shows_a_sign_of_life() -> None:
    clock = Clock()
    pool = WorkerPool(2, "test", clock=clock)
    pool.quiet_limit = 10.0
    touch_now, touched, release = threading.Event(), threading.Event(), threading.Event()
    allowance: list[float | None] = [None]
    done = threading.Event()

    def step() -> None:
        while not release.is_set():
            if touch_now.wait(0.05):
                touch_now.clear()
                pool.touch(allowance[0])
                touched.set()

    def ask_for_touch(given: float | None) -> None:
        allowance[0] = given
        touched.clear()
        touch_now.set()
        assert touched.wait(10)

    pool.submit(step, done.set)
    wait_for(lambda: pool.running == 1, message="the step to start")
    assert pool.overdue() == 0
    clock.now += 10.5
    assert pool.overdue() == 1
    ask_for_touch(None)  # back to the pool's limit from now
    assert pool.overdue() == 0
    clock.now += 9.5
    assert pool.overdue() == 0
    ask_for_touch(500.0)  # e.g. all sent: the answer may take that long
    clock.now += 400
    assert pool.overdue() == 0
    clock.now += 101
    assert pool.overdue() == 1
    release.set()
    assert done.wait(10)
    assert pool.overdue() == 0  # a finished step is nobody's worry
    assert pool.shutdown(10)


def test_a_touch_from_a_thread_that_runs_no_step_changes_nothing() -> None:
    clock = Clock()
    pool = WorkerPool(1, "test", clock=clock)
    pool.quiet_limit = 5.0
    release, done = threading.Event(), threading.Event()
    pool.submit(lambda: release.wait(10) and None, done.set)
    wait_for(lambda: pool.running == 1, message="the step to start")
    clock.now += 6
    pool.touch()  # this test's thread is not the step's
    assert pool.overdue() == 1
    release.set()
    assert done.wait(10)
    assert pool.shutdown(10)


def test_the_quiet_limit_covers_the_longest_wait_the_timeouts_allow() -> None:
    api = ApiConfig(connect_timeout=10, read_timeout=60, stall_timeout=90)
    assert quiet_limit(api) == 10 + 90 + QUIET_SLACK
