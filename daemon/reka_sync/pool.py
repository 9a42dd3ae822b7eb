"""The worker pools: bounded threads that run steps, and notice a step that stopped moving."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

log = structlog.get_logger("reka_sync.pool")
DEFAULT_QUIET_LIMIT = 300.0  # until the engine sets one from the API timeouts


class WorkerPool:
    """A bounded pool of threads; `free` says how many more steps it can take now.

    Each running step has a deadline for its next sign of life (`touch`): a step quiet
    for longer than it may be is wedged outside every timeout (a DNS lookup, a read
    from a hung network mount), and `overdue` counts it.
    """

    def __init__(
        self,
        size: int,
        name: str,
        most: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.quiet_limit = DEFAULT_QUIET_LIMIT  # seconds a step may go without a sign of life
        # Threads start on demand, up to `most`; `size` caps how many steps run at once.
        self._executor = ThreadPoolExecutor(max_workers=most or size, thread_name_prefix=name)
        self._lock = threading.Condition()
        self._running = 0
        self._finishing = 0  # steps done whose `on_done` still runs
        self._clock = clock
        self._quiet_until: dict[int, float] = {}  # worker thread -> next sign of life due

    @property
    def free(self) -> int:
        with self._lock:
            return max(0, self.size - self._running)

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def resize(self, size: int) -> None:
        """Given a new size, let that many steps run at once (running ones carry on)."""
        with self._lock:
            self.size = size

    def touch(self, allowance: float | None = None) -> None:
        """Note a sign of life from the step on this thread (none: a no-op).

        Given an allowance, the step may then be quiet that long (else `quiet_limit`).
        """
        ident = threading.get_ident()
        with self._lock:
            if ident in self._quiet_until:
                quiet = self.quiet_limit if allowance is None else allowance
                self._quiet_until[ident] = self._clock() + quiet

    def overdue(self) -> int:
        """Return how many running steps are past the deadline for a sign of life."""
        now = self._clock()
        with self._lock:
            return sum(1 for due in self._quiet_until.values() if due < now)

    def submit(self, step: Callable[[], None], on_done: Callable[[], None]) -> None:
        """Given a step, run it on a worker thread, then call `on_done`."""
        with self._lock:
            self._running += 1

        def run() -> None:
            ident = threading.get_ident()
            with self._lock:
                self._quiet_until[ident] = self._clock() + self.quiet_limit
            try:
                step()
            except Exception:
                log.exception("worker step crashed")
            finally:
                with self._lock:
                    self._quiet_until.pop(ident, None)
                    self._running -= 1  # free now, so `on_done` can hand this slot on
                    self._finishing += 1
                try:
                    on_done()
                finally:
                    with self._lock:
                        self._finishing -= 1
                        self._lock.notify_all()

        future: Future[None] = self._executor.submit(run)
        del future

    def wait_idle(self, timeout: float) -> bool:
        """Given a timeout, wait until no step (nor what runs after one) runs; return True
        if none does."""
        with self._lock:
            return self._lock.wait_for(lambda: self._running + self._finishing == 0, timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Wait (at most `timeout` seconds) for running steps to end; return True if they did.

        A step still running after that is left to finish or die with the process.
        """
        with self._lock:
            ended = self._lock.wait_for(lambda: self._running == 0, timeout)
        self._executor.shutdown(wait=ended, cancel_futures=True)
        return ended
