"""The upload bandwidth cap: one token bucket shared by every worker of the process.

Each worker asks for the bytes of its next slice before it hands them to the socket.
The bucket books slices one after the other in the order they are asked for (a
virtual clock, as in GCRA), so workers share the rate fairly, and a worker waits for
its booking outside the lock. A short burst (BURST seconds of the rate) is allowed
after a quiet spell. A new rate (a reload, a schedule window) applies to the next
slice booked; what is already booked is at most one slice per worker.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from reka_sync.errors import Cancelled

BURST = 0.25  # seconds of the rate that may go at once after a quiet spell
SLICE_SECONDS = 0.05  # a slice is this long at the rate, so a change is felt within a slice
SLICE_MIN = 4 * 1024
SLICE_MAX = 1024 * 1024
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*(?:/s)?\s*$")


def parse_rate(value: int | float | str) -> int | None:
    """Given a rate ("20MiB", "500KB", "1.5G", or a number of bytes), return bytes per
    second (0: no cap); None if it is not a rate."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value) if value >= 0 else None
    found = _RATE.match(value.lower())
    if found is None or found.group(2) not in _UNITS:
        return None
    return int(float(found.group(1)) * _UNITS[found.group(2)])


class Throttle:
    """A token bucket of `rate` bytes per second (0: no cap); thread-safe."""

    def __init__(
        self,
        rate: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._rate = rate
        self._booked = 0.0  # when the bytes booked so far will all have gone

    @property
    def rate(self) -> int:
        return self._rate

    def set_rate(self, rate: int) -> None:
        """Given bytes per second (0: no cap), use it from the next slice on."""
        with self._lock:
            self._rate = rate

    def slice_size(self) -> int:
        """Return how many bytes a worker should send per booking at the current rate."""
        rate = self._rate
        if rate <= 0:
            return SLICE_MAX
        return max(SLICE_MIN, min(SLICE_MAX, int(rate * SLICE_SECONDS)))

    def book(self, count: int) -> float:
        """Given a slice's bytes, book them; return how many seconds to wait before sending."""
        with self._lock:
            rate = self._rate
            if rate <= 0:
                return 0.0
            now = self._clock()
            start = max(self._booked, now - BURST)
            self._booked = start + count / rate
            return max(0.0, start - now)

    def take(self, count: int, cancel: threading.Event) -> None:
        """Given a slice's bytes, wait until they may go. Raise Cancelled if `cancel` is set
        while waiting."""
        wait = self.book(count)
        if wait > 0 and cancel.wait(wait):
            raise Cancelled("upload cancelled", body_complete=False)
