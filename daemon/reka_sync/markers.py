"""The marker reka-sync writes into each video's description, and reading it back.

The API has no idempotency key and no metadata map on videos, so the description
carries what recognises a file without the journal:

    cameras/front/a.mp4 [reka-sync:KEY i=INSTANCE s=SIZE m=MTIME_NS d=DIGEST p=REL_PATH]

``KEY`` is the upload key (one per attempt chain, committed before the send),
``INSTANCE`` the host that sent it (``journal.instance``: two hosts sharing one key
never touch each other's videos), then the file's size, mtime (ns), content digest
(computed while the bytes stream out: the description is the part after the file)
and its path relative to its root, its bytes percent-encoded (a name that is not
valid UTF-8 comes back exactly). Markers written before these
fields existed are ``[reka-sync:KEY]``; they still parse, with the key alone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from reka_sync.names import text

_MARKER = re.compile(r"\[reka-sync:([0-9A-Za-z]+)((?: [a-z]=[^\s\]]*)*)\]")
_INSTANCE_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Marker:
    """What a video's description says of the file it came from (None: an older marker)."""

    key: str
    instance: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    digest: str | None = None
    rel_path: str | None = None

    @property
    def complete(self) -> bool:
        """True when it names a file: instance, size, mtime, digest and path."""
        return None not in (self.instance, self.size, self.mtime_ns, self.digest, self.rel_path)


def render(marker: Marker) -> str:
    """Given a marker, return the description that carries it (the path in words first)."""
    if not marker.complete:
        return f"[reka-sync:{marker.key}]"
    rel = text(marker.rel_path or "")
    fields = (
        f"i={marker.instance} s={marker.size} m={marker.mtime_ns} d={marker.digest}"
        f" p={quote(os.fsencode(marker.rel_path or ''), safe='/')}"
    )
    return f"{rel} [reka-sync:{marker.key} {fields}]"


def parse(description: str | None) -> Marker | None:
    """Given a video's description, return its reka-sync marker, or None if it has none.
    The marker is the last one: the file's path in words before it may look like one."""
    found = None
    for found in _MARKER.finditer(description or ""):  # noqa: B007 - the last one counts
        pass
    if found is None:
        return None
    fields = dict(item.split("=", 1) for item in found.group(2).split())
    try:
        size = int(fields["s"]) if "s" in fields else None
        mtime = int(fields["m"]) if "m" in fields else None
    except ValueError:
        return Marker(found.group(1))
    rel = os.fsdecode(unquote_to_bytes(fields["p"])) if "p" in fields else None
    return Marker(found.group(1), fields.get("i"), size, mtime, fields.get("d"), rel)


def carries(description: str | None, key: str) -> bool:
    """Given a description and an upload key, return True if its marker has that key."""
    marker = parse(description)
    return marker is not None and marker.key == key


def default_instance(hostname: str | None = None) -> str:
    """Given a host name (default: this host's), return the instance id derived from it."""
    name = hostname if hostname is not None else os.uname().nodename  # gethostname(2)
    return _INSTANCE_SAFE.sub("-", name).strip("-") or "reka-sync"


def valid_instance(value: str) -> bool:
    """Given a configured instance id, return True if a marker can carry it."""
    return bool(value) and _INSTANCE_SAFE.search(value) is None
