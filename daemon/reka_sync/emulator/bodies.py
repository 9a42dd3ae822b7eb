"""Upload bodies on the emulator's side: the blob sink, and the readers that fake a bad link."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import BinaryIO

from xxhash import xxh3_128

from reka_sync.emulator import multipart

SINK_BUFFERS = 4  # per upload: at most this many chunks wait for the disk


class Drop(Exception):
    """Close the connection now, answering nothing."""


class Sink:
    """Hashes a file part (XXH3-128) on the caller's thread and writes it to its blob on another.

    Writing overlaps with receiving; a few reused buffers keep memory flat.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hash = xxh3_128()
        self._handle: BinaryIO = path.open("wb")
        self._full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._buffers = 0
        self._error: OSError | None = None
        self._writer = threading.Thread(target=self._write_loop, name="emulator-sink", daemon=True)
        self._writer.start()

    def write(self, data: memoryview) -> None:
        """Given a piece of the part, hash it now and queue it for the blob."""
        self.hash.update(data)
        if self._free.empty() and self._buffers < SINK_BUFFERS:
            self._buffers += 1
            self._free.put(bytearray(len(data)))
        buffer = self._free.get()
        if len(buffer) < len(data):
            buffer = bytearray(len(data))
        memoryview(buffer)[: len(data)] = data
        self._full.put((buffer, len(data)))

    def _write_loop(self) -> None:
        while (item := self._full.get()) is not None:
            buffer, size = item
            try:
                if self._error is None:
                    self._handle.write(memoryview(buffer)[:size])
            except OSError as exc:
                self._error = exc
            self._free.put(buffer)

    def close(self) -> None:
        """Flush what is queued and close the blob. Raise OSError if a write failed."""
        if self._handle.closed:
            return
        self._full.put(None)
        self._writer.join()
        self._handle.close()
        if self._error is not None:
            raise self._error


class HalfReader:
    """A body reader that fails half way through, like a connection cut mid-body."""

    def __init__(self, reader: multipart.Reader, length: int) -> None:
        self._reader = reader
        self._left = length // 2

    def readinto(self, buffer: memoryview, /) -> int | None:
        """Given a buffer, fill some of it; return how much. Raise Drop at half way."""
        if self._left <= 0:
            raise Drop
        got = self._reader.readinto(buffer[: self._left])
        self._left -= got or 0
        return got


class SlowReader:
    """A body reader capped at a rate, like a slow link (the waits are the fault itself)."""

    def __init__(self, reader: multipart.Reader, bytes_per_second: float) -> None:
        self._reader = reader
        self._rate = max(1.0, bytes_per_second)
        self._start = time.monotonic()
        self._read = 0

    def readinto(self, buffer: memoryview, /) -> int | None:
        """Given a buffer, fill a twentieth of a second's worth; return how much."""
        piece = max(1, int(self._rate / 20))  # twenty reads a second
        got = self._reader.readinto(buffer[:piece])
        self._read += got or 0
        ahead = self._read / self._rate - (time.monotonic() - self._start)
        if ahead > 0:
            time.sleep(ahead)
        return got
