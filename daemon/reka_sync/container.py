"""What a video file's container says about whether it ended: headers only, no payload reads.

The one place that reads container bytes for the settle decision (`stability`):

* MP4/MOV (ISO-BMFF, QuickTime): a walk over the top-level box headers. The ordinary
  way puts the `moov` box (the index a player needs) last; a fragmented MP4 (live
  recorders: `-movflags frag_keyframe+empty_moov`, OBS) has an empty `moov` first
  and grows by `moof`+`mdat` fragments, and ffmpeg closes it with an `mfra` box.
* Matroska/WebM: the EBML header, then the Segment's size. Muxers write "unknown
  size" (all ones) while recording and the real size when they close.
* MPEG-TS: 188-byte packets that each start with the sync byte 0x47 (``.ts`` is
  also TypeScript: without the sync bytes it is not a video).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO

MP4_EXTENSIONS = frozenset({"mp4", "mov", "m4v", "3gp"})
MKV_EXTENSIONS = frozenset({"mkv", "webm"})
TS_EXTENSIONS = frozenset({"ts", "mts", "m2ts"})
PS_EXTENSIONS = frozenset({"mpg", "mpeg"})  # MPEG program streams: DVRs write them live too
# Boxes that may open an ISO-BMFF / QuickTime file; anything else is not ours to judge.
OPENING_BOXES = frozenset({b"ftyp", b"wide", b"free", b"skip", b"mdat", b"moov", b"pnot"})
MAX_BOXES = 100_000  # an hour of 2-second fragments is 3,600 boxes
EBML_ID = b"\x1a\x45\xdf\xa3"
SEGMENT_ID = b"\x18\x53\x80\x67"
TS_PACKET = 188
TS_SYNC = 0x47


class Kind(StrEnum):
    EMPTY = "empty"
    MP4 = "mp4"
    MKV = "mkv"
    STREAM = "stream"  # MPEG-TS or MPEG-PS: written as it goes, nothing marks its end
    OTHER = "other"  # a container we do not judge (AVI, FLV, WMV, ...), or not parsable


@dataclass(frozen=True)
class Container:
    """What the headers say."""

    kind: Kind
    has_index: bool = True  # MP4/MOV: a whole moov box is there
    fragmented: bool = False  # MP4: moof fragments follow
    closed_marker: bool = False  # MP4: an mfra box, written when a fragmented file is closed
    finalised: bool = True  # Matroska: the Segment's size is written
    not_video: bool = False  # a .ts without MPEG-TS sync bytes (TypeScript, say)


def extension(path: str) -> str:
    """Given a path, return its extension, lower case, without the dot."""
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def inspect(path: str) -> Container | None:
    """Given a file's path, return what its container headers say (None: unreadable)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            if size == 0:
                return Container(Kind.EMPTY)
            ext = extension(path)
            if ext in MP4_EXTENSIONS:
                return _mp4(handle, size)
            if ext in MKV_EXTENSIONS:
                return _matroska(handle)
            if ext in TS_EXTENSIONS:
                return _transport_stream(handle, size)
            if ext in PS_EXTENSIONS:
                return Container(Kind.STREAM)
            return Container(Kind.OTHER)
    except (OSError, struct.error, ValueError):  # gone, or cut while we read it
        return None


def _mp4(handle: BinaryIO, size: int) -> Container:
    offset, has_index, fragmented, closed = 0, False, False, False
    for count in range(MAX_BOXES):
        if offset + 8 > size:
            break
        handle.seek(offset)
        header = handle.read(16)
        length, kind = struct.unpack(">I4s", header[:8])
        if count == 0 and kind not in OPENING_BOXES:
            return Container(Kind.OTHER)
        if length == 1 and len(header) == 16:
            length = struct.unpack(">Q", header[8:16])[0]
        elif length == 0:
            length = size - offset  # this box runs to the end of the file
        if length < 8 or offset + length > size:
            break  # cut short, or a size not written yet
        has_index = has_index or kind == b"moov"
        fragmented = fragmented or kind == b"moof"
        closed = closed or kind == b"mfra"
        offset += length
    return Container(Kind.MP4, has_index=has_index, fragmented=fragmented, closed_marker=closed)


def _matroska(handle: BinaryIO) -> Container:
    handle.seek(0)
    head = handle.read(64)
    if not head.startswith(EBML_ID):
        return Container(Kind.OTHER)
    header_size, used = _vint(head, len(EBML_ID))
    if header_size is None:
        return Container(Kind.MKV, finalised=False)
    start = len(EBML_ID) + used + header_size
    handle.seek(start)
    segment = handle.read(12)
    if not segment.startswith(SEGMENT_ID):
        return Container(Kind.MKV, finalised=False)  # the header is not all written yet
    segment_size, _ = _vint(segment, len(SEGMENT_ID))
    return Container(Kind.MKV, finalised=segment_size is not None)


def _vint(data: bytes, at: int) -> tuple[int | None, int]:
    """Given bytes and an offset, read an EBML variable-size integer: return (value, length);
    value None for "unknown" (every value bit set) or a cut-short number."""
    if at >= len(data) or data[at] == 0:
        return None, 1
    first = data[at]
    length = 8 - first.bit_length() + 1
    if at + length > len(data):
        return None, length
    value = first & ((1 << (8 - length)) - 1)
    for byte in data[at + 1 : at + length]:
        value = (value << 8) | byte
    unknown = (1 << (7 * length)) - 1
    return (None if value == unknown else value), length


def _transport_stream(handle: BinaryIO, size: int) -> Container:
    packets = min(3, size // TS_PACKET) or 1
    handle.seek(0)
    data = handle.read(TS_PACKET * packets)
    synced = all(
        data[i * TS_PACKET] == TS_SYNC for i in range(packets) if i * TS_PACKET < len(data)
    )
    return Container(Kind.STREAM, not_video=not synced)
