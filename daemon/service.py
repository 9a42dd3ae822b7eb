"""Process-level concerns: signals (and, later, sd_notify). Handlers only set flags."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


def on_stop_signals(stop: Callable[[], None]) -> threading.Event:
    """Given a stop callback, call it (once, on a helper thread) at SIGTERM or SIGINT.

    Return the event that is set when a stop signal arrived.
    """
    stopping = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=stop, name="reka-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stopping
