"""Content fingerprints: a cheap sample of a file's bytes, and its full digest.

The sample (size plus 4 KiB at the start, middle and end) finds dedupe
candidates without reading a file; the digest (XXH3-128 over every byte)
decides. During an upload both are computed from the bytes on their way
out, so a file that is not a duplicate is read once.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from xxhash import xxh3_128

from reka_sync.errors import FileVanished

SAMPLE = 4096
DIGEST_PREFIX = "xxh3-128:"
READ_SIZE = 1024 * 1024


def sample_ranges(size: int) -> list[tuple[int, int]]:
    """Given a file size, return the (start, end) byte ranges the sample covers, merged."""
    middle = size // 2
    wanted = [(0, SAMPLE), (middle - SAMPLE // 2, middle + SAMPLE // 2), (size - SAMPLE, size)]
    merged: list[tuple[int, int]] = []
    for start, end in sorted((max(0, s), min(size, e)) for s, e in wanted):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


class Sampler:
    """Collects the sample ranges from a stream of (offset, bytes) pieces."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ranges = sample_ranges(size)
        self._pieces: dict[int, bytes] = {}

    def feed(self, offset: int, data: bytes) -> None:
        """Given a piece of the file at `offset`, keep the parts the sample needs."""
        end = offset + len(data)
        for start, stop in self._ranges:
            lo, hi = max(start, offset), min(stop, end)
            if lo < hi:
                self._pieces[lo] = data[lo - offset : hi - offset]

    def hexdigest(self) -> str:
        """Return the sample hash of what was fed."""
        return _sample_hash(self._size, b"".join(v for _, v in sorted(self._pieces.items())))


def sample_file(path: str | os.PathLike[str], size: int) -> str:
    """Given a file and its size, return its sample hash. Raise FileVanished if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise FileVanished(f"{path} cannot be read: {exc.strerror}") from None
    try:
        data = b"".join(os.pread(fd, end - start, start) for start, end in sample_ranges(size))
    finally:
        os.close(fd)
    return _sample_hash(size, data)


def digest_file(path: str | os.PathLike[str], on_read: Callable[[], None] | None = None) -> str:
    """Given a file, return the digest of all its bytes. Raise FileVanished if unreadable.

    `on_read` (if given) is called after each piece read: a sign of life on a long file.
    """
    digest = xxh3_128()
    try:
        with open(path, "rb", buffering=0) as handle:
            while data := handle.read(READ_SIZE):
                digest.update(data)
                if on_read is not None:
                    on_read()
    except OSError as exc:
        raise FileVanished(f"{path} cannot be read: {exc.strerror}") from None
    return DIGEST_PREFIX + digest.hexdigest()


def _sample_hash(size: int, data: bytes) -> str:
    return xxh3_128(size.to_bytes(8, "little") + data).hexdigest()
