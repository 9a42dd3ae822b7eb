"""File names as the filesystem has them: bytes, which need not be valid UTF-8.

Paths travel through reka-sync as Python `str` decoded with ``surrogateescape``
(what `os.fsdecode` and `os.scandir` give), so any byte survives a round trip.
The journal stores a name that is valid UTF-8 as text and any other as
the bytes it is (`to_db`, `from_db`): one value per name, so lookups stay exact,
and the common case costs no decoding. What a person
reads gets them escaped the way ``ls -b`` does (`shown`); what goes to the API,
and what the group rules match, is valid UTF-8 with U+FFFD for undecodable bytes
(`text`). Pure: no I/O.
"""

from __future__ import annotations

import os

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def to_db(path: str) -> str | bytes:
    """Given a path, return how the journal stores it: the text if it is valid UTF-8,
    else its bytes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def from_db(value: bytes | str) -> str:
    """Given a stored path (text, or the bytes of a name that is not valid UTF-8), return it."""
    return value.decode("utf-8", "surrogateescape") if type(value) is bytes else str(value)


def text(name: str) -> str:
    """Given a name, return it as valid UTF-8 text: undecodable bytes become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def storable(value: str) -> str:
    """Given text that may carry undecodable bytes (an error message naming a file),
    return it with those bytes as \\xNN, so it can be stored as text."""
    if value.isascii() or not any("\udc80" <= c <= "\udcff" for c in value):
        return value
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in value)


def shown(name: str) -> str:
    """Given a name, return it printable on one line: undecodable bytes as \\xNN, control
    characters as \\n, \\t, \\r or \\xNN, a backslash doubled (like `ls -b`)."""
    if name.isprintable() and "\\" not in name:
        return name
    out = []
    for char in name:
        if "\udc80" <= char <= "\udcff":  # an undecodable byte, as surrogateescape keeps it
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif not char.isprintable():
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)
