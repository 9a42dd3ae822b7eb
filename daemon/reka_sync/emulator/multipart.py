"""A streaming multipart/form-data reader: file parts go to a sink, memory stays flat.

The body is read in chunks; the only data held back between chunks is a tail
shorter than the delimiter, so a multi-GB part never sits in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import BinaryIO, Protocol

CHUNK = 1024 * 1024
MAX_FIELD_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


class BodyEnded(MultipartError):
    """The connection ended before Content-Length bytes arrived."""


class Reader(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


class FileSink(Protocol):
    def write(self, data: memoryview, /) -> object: ...


@dataclass
class FilePart:
    name: str
    filename: str
    content_type: str
    size: int = 0


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, FilePart] = field(default_factory=dict)


def boundary_of(content_type: str) -> bytes:
    """Given a Content-Type header, return its multipart boundary. Raise MultipartError if none."""
    message = Message()
    message["content-type"] = content_type
    if message.get_content_type() != "multipart/form-data":
        raise MultipartError("Content-Type must be multipart/form-data")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 200:
        raise MultipartError("multipart/form-data needs a boundary parameter")
    return boundary.encode("latin-1")


def parse(
    reader: Reader,
    length: int,
    boundary: bytes,
    open_sink: Callable[[FilePart], BinaryIO | FileSink],
) -> Form:
    """Given a body reader of `length` bytes, stream it into a Form.

    File parts are written to the sink `open_sink` returns for them. Raise MultipartError
    if the body is malformed or ends early.
    """
    stream = _Stream(reader, length)
    form = Form()
    delimiter = b"\r\n--" + boundary
    first = stream.read_until(b"--" + boundary, MAX_HEADER_BYTES)
    if first != b"":
        raise MultipartError("body does not start with the boundary")
    while True:
        after = stream.read_exact(2)
        if after == b"--":
            return form
        if after != b"\r\n":
            raise MultipartError("malformed boundary line")
        name, filename, content_type = _part_headers(
            stream.read_until(b"\r\n\r\n", MAX_HEADER_BYTES)
        )
        if filename is None:
            value = stream.read_until(delimiter, MAX_FIELD_BYTES)
            form.fields[name] = value.decode("utf-8", errors="replace")
            continue
        part = FilePart(name, filename, content_type)
        sink = open_sink(part)
        part.size = stream.copy_until(delimiter, sink.write)
        form.files[name] = part


def _part_headers(raw: bytes) -> tuple[str, str | None, str]:
    message = Message()
    for line in raw.decode("utf-8", errors="replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            message[key.strip()] = value.strip()
    disposition = message.get("content-disposition", "")
    if not disposition.lower().startswith("form-data"):
        raise MultipartError("each part needs Content-Disposition: form-data")
    probe = Message()
    probe["content-type"] = "x/x; " + disposition.partition(";")[2]
    name = probe.get_param("name")
    filename = probe.get_param("filename")
    if not isinstance(name, str):
        raise MultipartError("a part has no name")
    return (
        name,
        filename if isinstance(filename, str) else None,
        message.get("content-type", "application/octet-stream"),
    )


class _Stream:
    """The body as a stream over one reused buffer: no allocation per chunk."""

    def __init__(self, reader: Reader, length: int) -> None:
        self._reader = reader
        self._left = length
        self._buffer = bytearray(CHUNK + MAX_HEADER_BYTES + MAX_FIELD_BYTES)
        self._view = memoryview(self._buffer)
        self._start = 0  # unread data is _buffer[_start:_end]
        self._end = 0

    def _fill(self) -> bool:
        if self._left <= 0:
            return False
        if self._start:
            pending = self._end - self._start
            self._buffer[:pending] = self._view[self._start : self._end]
            self._start, self._end = 0, pending
        room = min(len(self._buffer) - self._end, self._left)
        if room <= 0:
            raise MultipartError("a part header or field is too long")
        got = self._reader.readinto(self._view[self._end : self._end + room])
        if not got:
            raise BodyEnded("body ended before Content-Length bytes arrived")
        self._left -= got
        self._end += got
        return True

    def _find(self, marker: bytes) -> int:
        index = self._buffer.find(marker, self._start, self._end)
        return index

    def read_exact(self, size: int) -> bytes:
        while self._end - self._start < size:
            if not self._fill():
                raise MultipartError("body ended in the middle of a part")
        out = bytes(self._view[self._start : self._start + size])
        self._start += size
        return out

    def read_until(self, marker: bytes, limit: int) -> bytes:
        while (index := self._find(marker)) < 0:
            if self._end - self._start > limit + len(marker):
                raise MultipartError(f"a part header or field is longer than {limit} bytes")
            if not self._fill():
                raise MultipartError("body ended in the middle of a part")
        out = bytes(self._view[self._start : index])
        self._start = index + len(marker)
        return out

    def copy_until(self, marker: bytes, write: Callable[[memoryview], object]) -> int:
        copied = 0
        keep = len(marker) - 1
        while (index := self._find(marker)) < 0:
            cut = self._end - keep
            if cut > self._start:
                write(self._view[self._start : cut])
                copied += cut - self._start
                self._start = cut
            if not self._fill():
                raise MultipartError("body ended in the middle of a file part")
        write(self._view[self._start : index])
        copied += index - self._start
        self._start = index + len(marker)
        return copied
