"""Process-level concerns: signals, sd_notify, who owns a lease, one service per journal.

Signal handlers only set flags.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

from reka_sync.errors import RekaSyncError


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


def on_reload_signal(reload: threading.Event, wake: threading.Event | None = None) -> None:
    """Given an event (and one that wakes the service loop), set them at SIGHUP: the loop
    reloads the configuration."""

    def handler(signum: int, frame: FrameType | None) -> None:
        reload.set()
        if wake is not None:
            wake.set()

    signal.signal(signal.SIGHUP, handler)


class Notifier:
    """sd_notify(3) without libsystemd: one datagram per message to $NOTIFY_SOCKET.

    With no NOTIFY_SOCKET (not started by systemd, or Type= is not notify) every
    method does nothing. A message that cannot be sent is dropped: systemd's own
    timeouts then say what went wrong.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", str(os.getpid()))
        mine = usec.isdigit() and pid == str(os.getpid())
        self.watchdog_seconds = int(usec) / 1e6 if mine else None

    def send(self, *lines: str) -> None:
        """Given KEY=VALUE lines, send them to systemd as one message."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), self._address)
        except OSError:
            pass

    def ready(self, status: str) -> None:
        """Given a status line, tell systemd we are up (again, after a reload)."""
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        """Given a status line, show it in `systemctl status`."""
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        """Tell systemd's watchdog we are alive (call only when we are); no-op without one."""
        if self.watchdog_seconds is not None:
            self.send("WATCHDOG=1")

    def reloading(self) -> None:
        """Tell systemd a configuration reload has begun; `ready` ends it."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={now_usec}", "STATUS=reloading the configuration")

    def stopping(self, status: str, extend_seconds: float) -> None:
        """Given a status line and seconds, say we are stopping and ask for that much time."""
        extend = f"EXTEND_TIMEOUT_USEC={int(extend_seconds * 1e6)}"
        self.send("STOPPING=1", f"STATUS={status}", extend)


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
    host, _, rest = owner.split("/", 1)[0].partition(":")  # a worker's name: process/claim
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    return _start_ticks(int(pid_text)) == started


class InstanceLock:
    """One `reka-sync run` per journal: an exclusive lock on a file beside it, with the PID.

    A backfill beside the service needs none (they share the journal by design).
    """

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self.path = journal.with_name(journal.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock. Raise RekaSyncError naming the PID of the service that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RekaSyncError(
                f"another `reka-sync run` (PID {holder}) already uses the journal "
                f"{self.journal}; stop it first (systemctl stop reka-sync), or give this "
                "one its own journal.path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (the process's exit does too)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
