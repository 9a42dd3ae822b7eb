"""The mount table: which filesystem holds a root, and whether a root is really there.

An unmounted share leaves its mount point behind as an empty folder on the
filesystem below, so "the folder exists" is not "the root is there". A root
counts as there when it is a folder and either it sits on the same mount as
when it was last there (or a deeper one: the share came back), or it has
something in it. The decision is pure (`present`); `probe` does the I/O.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

MOUNTS_FILE = Path("/proc/self/mounts")
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs"}
)
_OCTAL = re.compile(r"\\([0-7]{3})")


class Mount(NamedTuple):
    point: str
    fstype: str


def observer_kind(fstype: str, forced: str) -> str:
    """Given a root's filesystem type and watch.observer, return "native" or "polling"."""
    if forced in ("native", "polling"):
        return forced
    network = fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse")
    return "polling" if network else "native"


def mount_of(path: Path, mounts_text: str) -> Mount:
    """Given a path and /proc/self/mounts text, return the mount holding it (the deepest)."""
    best = Mount("", "unknown")
    target = str(path)
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), parts[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best.point):
            best = Mount(point, parts[2])
    return best


def present(has_entries: bool, point: str, last_point: str | None) -> bool:
    """Given a readable root folder now and its mount when last there, return if it is there."""
    if has_entries or last_point is None or point == last_point:
        return True
    return point.startswith(last_point.rstrip("/") + "/")  # mounted deeper than before


def read_mounts() -> str:
    """Return the mount table's text ("" if it cannot be read)."""
    try:
        return MOUNTS_FILE.read_text()
    except OSError:
        return ""


def probe(root: Path, last_point: str | None) -> tuple[bool, str]:
    """Given a root and its mount point when last there, return (there now, mount point now)."""
    point = mount_of(root, read_mounts()).point
    try:
        with os.scandir(root) as entries:
            has_entries = next(entries, None) is not None
    except OSError:  # gone, not a folder, or not readable: nothing in it can be judged
        return False, point
    return present(has_entries, point, last_point), point


def is_there(root: str, last_mounts: Mapping[str, str]) -> bool:
    """Given a root and where roots were mounted when last there, return if it is there now."""
    return probe(Path(root), last_mounts.get(root))[0]
