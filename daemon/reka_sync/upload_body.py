"""A multipart upload body streamed from disk: flat memory, exact length, cancellable.

The file is read in pieces, each handed to the transport as it is: READ_SIZE bytes
without a bandwidth cap, a slice of the shared token bucket's size with one (each
slice waits for its booking). A cancel from another thread is seen between pieces and
while a slice waits. The digest and sample hash of the file (reka_sync.fingerprint) are
computed on the way out, so an upload reads each byte once. Fields after the file part
may carry that digest (`DIGEST_SLOT`): the form's part order is free, and a digest has a
fixed length, so the body's length is known before the first byte.

The bytes path, per piece: one read() into a fresh bytes object (the kernel's copy out
of the page cache; the GIL is released), the digest over it (XXH3 releases the GIL too),
then the transport's send (the copy into the socket). Nothing else copies a piece: it is
never sliced (a throttled upload reads slice-sized pieces), and it is a fresh bytes
object, which any transport may keep (a test's MockTransport joins them at the end) and
which h11 passes on uncopied (a memoryview or a bytearray it copies), so reading into a
reused buffer would save a malloc, not a copy. Pieces of 1 MiB keep the Python run per
MiB small; smaller ones cost more of it than the cache saves, and larger ones save
little of it but no longer fit a core's L2 while the digest and the send read them back.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import BinaryIO

from xxhash import xxh3_128

from reka_sync.errors import (
    Cancelled,
    FileChanged,
    FileOutside,
    FileUnreadable,
    FileVanished,
)
from reka_sync.fingerprint import DIGEST_PREFIX, Sampler, sample_ranges
from reka_sync.names import text
from reka_sync.stability import FileStat
from reka_sync.throttle import Throttle

READ_SIZE = 1024 * 1024  # bytes per piece without a bandwidth cap (see the module's notes)
# A file up to this size goes out with its fields as one piece: one write to the socket
# instead of three, and one segment for the server to read (the copy costs less).
WHOLE_MOST = 64 * 1024
UNCAPPED = Throttle()  # stands in when no throttle is given: never capped
DIGEST_SLOT = "{digest}"  # in a trailing field: replaced by the digest of the bytes sent
_DIGEST_LENGTH = len(DIGEST_PREFIX) + 32  # XXH3-128 in hex


class UploadBody:
    """`multipart/form-data` with text fields and one file part, of a known length."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        size: int,
        fields: dict[str, str],
        *,
        trailing: dict[str, str] | None = None,
        filename: str,
        content_type: str,
        cancel: threading.Event | None = None,
        on_progress: Callable[[int], None] | None = None,
        expected: FileStat | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.path = path
        self.throttle = throttle
        self.size = size
        self.expected = expected
        self.cancel = cancel or threading.Event()
        self.on_progress = on_progress
        self.bytes_sent = 0
        self.finished = False
        self._hash = xxh3_128()
        self._sampler = Sampler(size)
        self._sampled = sample_ranges(size)  # the sample's byte ranges, in order
        self._sampled_at = 0  # the first of them not yet wholly read
        self._handle: BinaryIO | None = None
        boundary = f"reka-sync-{secrets.token_hex(16)}"
        self.content_type = f"multipart/form-data; boundary={boundary}"
        parts = [_field(boundary, name, value) for name, value in fields.items()]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_quote(text(filename))}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
        )
        self._preamble = b"".join(parts)
        self._boundary = boundary
        self._trailing = trailing or {}
        self.length = len(self._preamble) + size + len(self._epilogue("0" * _DIGEST_LENGTH))

    @property
    def digest(self) -> str | None:
        """Return the digest of the file bytes sent, once the whole body went out."""
        return DIGEST_PREFIX + self._hash.hexdigest() if self.finished else None

    @property
    def sample_hash(self) -> str | None:
        """Return the sample hash of the file bytes sent, once the whole body went out."""
        return self._sampler.hexdigest() if self.finished else None

    def __enter__(self) -> UploadBody:
        """Open the file without following a link (and without blocking on a FIFO); check it
        is the very file that settled. Raise FileVanished, FileChanged or FileUnreadable."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FileVanished(f"{self.path} vanished before its upload") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise FileChanged(f"{self.path} became a symbolic link since it settled") from None
            raise FileUnreadable(f"{self.path} cannot be read: {exc.strerror}") from None
        st = os.fstat(fd)
        opened = FileStat(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
        if not stat.S_ISREG(st.st_mode) or (
            self.expected is not None and not opened.same_content_as(self.expected)
        ):
            os.close(fd)
            raise FileChanged(f"{self.path} is not the file that settled (swapped or rewritten)")
        self._refuse_folder_links(fd)
        self._handle = os.fdopen(fd, "rb", buffering=0)
        if hasattr(os, "posix_fadvise") and self.size > WHOLE_MOST:  # read in one go otherwise
            os.posix_fadvise(self._handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        return self

    def _refuse_folder_links(self, fd: int) -> None:
        """Given the opened file, raise FileOutside (closing it) if the path it was opened
        by leads elsewhere: O_NOFOLLOW guards its last part only, and a folder on the way
        may have been swapped for a link. The kernel's name for the open file says it in
        one call, with no window between the check and the read."""
        meant = os.path.abspath(self.path)
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc: ask the folders one by one
            real = os.path.join(os.path.realpath(os.path.dirname(meant)), os.path.basename(meant))
        if real == meant:
            return
        os.close(fd)
        if real.endswith(" (deleted)"):
            raise FileVanished(f"{self.path} vanished before its upload")
        raise FileOutside(
            f"{self.path}: a folder on its path is a symbolic link (to "
            f"{os.path.dirname(real)}); not followed, nothing sent"
        )

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.close()

    def chunks(self) -> Iterator[bytes]:
        """Yield the body: fields, the file in pieces, the closing boundary (a small file
        without a bandwidth cap: all of it as one piece, one write to the socket).

        Raise Cancelled when `cancel` is set, FileChanged if the file ends early.
        """
        if self._handle is None:
            raise RuntimeError("use UploadBody as a context manager")
        if self.size <= WHOLE_MOST and not (self.throttle and self.throttle.rate > 0):
            yield from self._whole()
            return
        yield self._preamble
        # This loop runs once per piece of every upload: what it uses is bound once.
        cancelled, progress = self.cancel.is_set, self.on_progress
        throttle = self.throttle or UNCAPPED
        size, done = self.size, 0
        while done < size:
            capped = throttle.rate > 0  # read afresh: a new cap applies from the next piece
            data = self._piece(
                done, min(throttle.slice_size() if capped else READ_SIZE, size - done)
            )
            if capped:
                throttle.take(len(data), self.cancel)
            if cancelled():
                raise Cancelled("upload cancelled", body_complete=False)
            yield data
            done += len(data)
            self.bytes_sent = done
            if progress is not None:
                progress(done)
        yield self._epilogue(DIGEST_PREFIX + self._hash.hexdigest())
        self.finished = True

    def _whole(self) -> Iterator[bytes]:
        """Yield the whole body of a small file as one piece."""
        pieces, done = [self._preamble], 0
        while done < self.size:
            data = self._piece(done, self.size - done)
            pieces.append(data)
            done += len(data)
        if self.cancel.is_set():
            raise Cancelled("upload cancelled", body_complete=False)
        pieces.append(self._epilogue(DIGEST_PREFIX + self._hash.hexdigest()))
        yield b"".join(pieces)
        self.bytes_sent = done
        if self.on_progress is not None:
            self.on_progress(done)
        self.finished = True

    def _piece(self, done: int, want: int) -> bytes:
        """Given how much of the file was read and how much to read now, read it, digest
        and sample it on the way. Raise FileVanished, FileUnreadable, or FileChanged if
        the file ends early."""
        try:
            data = self._handle.read(want)  # type: ignore[union-attr]
        except FileNotFoundError:
            raise FileVanished(f"{self.path} vanished during its upload") from None
        except OSError as exc:
            raise FileUnreadable(
                f"{self.path} cannot be read at byte {done}: {exc.strerror or exc}"
            ) from None
        if not data:
            raise FileChanged(
                f"{self.path} shrank during upload ({done} of {self.size} bytes read)"
            )
        self._hash.update(data)
        end = done + len(data)
        sampled, at = self._sampled, self._sampled_at
        if at < len(sampled) and sampled[at][0] < end:  # the sample wants some of these
            self._sampler.feed(done, data)
            while at < len(sampled) and sampled[at][1] <= end:
                at += 1
            self._sampled_at = at
        return data

    def _epilogue(self, digest: str) -> bytes:
        """Given the file's digest, return what follows its bytes: the trailing fields
        (their digest slots filled) and the closing boundary."""
        fields = b"".join(
            _field(self._boundary, name, value.replace(DIGEST_SLOT, digest))
            for name, value in self._trailing.items()
        )
        return b"\r\n" + fields + f"--{self._boundary}--\r\n".encode()


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _field(boundary: str, name: str, value: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n{value}\r\n'
    ).encode()
