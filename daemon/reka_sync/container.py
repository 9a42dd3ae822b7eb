"""Has an MP4/MOV got its index yet? A walk over the top-level box headers, no payload reads.

A camera or an encoder that writes an MP4 the ordinary way puts the `moov` box (the
index a player needs) at the end, after the media data. A file that has been
quiet for a while but has no `moov` yet is still being written, or was cut short.
"""

from __future__ import annotations

import struct
from enum import StrEnum

EXTENSIONS = frozenset({"mp4", "mov", "m4v"})
# Boxes that may open an ISO-BMFF / QuickTime file; anything else is not ours to judge.
OPENING_BOXES = frozenset({b"ftyp", b"wide", b"free", b"skip", b"mdat", b"moov", b"pnot"})
MAX_BOXES = 10_000  # a real file has a handful of top-level boxes


class Index(StrEnum):
    PRESENT = "present"  # a complete moov box is there
    MISSING = "missing"  # an MP4/MOV without its moov box (yet), or cut short
    NOT_CHECKED = "not_checked"  # not an MP4/MOV, or unreadable: nothing to say


def wants_check(path: str) -> bool:
    """Given a path, return True if its extension says MP4, MOV or M4V."""
    return path.rsplit(".", 1)[-1].lower() in EXTENSIONS


def mp4_index(path: str) -> Index:
    """Given a file's path, return whether its top-level boxes include a whole moov box."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            offset, first = 0, True
            for _ in range(MAX_BOXES):
                if offset + 8 > size:
                    return Index.MISSING
                handle.seek(offset)
                header = handle.read(16)
                length, kind = struct.unpack(">I4s", header[:8])
                if first and kind not in OPENING_BOXES:
                    return Index.NOT_CHECKED
                first = False
                if length == 1 and len(header) == 16:
                    length = struct.unpack(">Q", header[8:16])[0]
                elif length == 0:
                    length = size - offset  # this box runs to the end of the file
                if length < 8 or offset + length > size:
                    return Index.MISSING  # cut short, or a size not written yet
                if kind == b"moov":
                    return Index.PRESENT
                offset += length
    except OSError:
        return Index.NOT_CHECKED
    return Index.MISSING
