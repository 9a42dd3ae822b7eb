"""Process-level concerns: signals (and, later, sd_notify). Handlers only set flags."""

from __future__ import annotations

import os
import signal
import socket
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


def _start_ticks(pid: int) -> str | None:
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 (one short read)
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_id() -> str:
    """Return this process's lease owner name: host, pid and process start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid()) or 0}"


def owner_alive(owner: str) -> bool | None:
    """Given a lease owner name, return whether that process lives (None: another host)."""
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    return _start_ticks(int(pid_text)) == started
