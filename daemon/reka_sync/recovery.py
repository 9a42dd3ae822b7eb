"""Reconcile's plan: the journal, the files under the roots and the key's videos, compared
(pure: no I/O, no clock).

Every video of the key falls in one class:

* known: the journal holds it (by video id, or by the upload key of a send in flight);
* adopted: ours (our instance in its marker), unknown to the journal, and its file is
  there: same path under a root, same size and mtime. It is recorded, not uploaded again;
* duplicate: one more video of a content (same digest) that has one already, and that the
  journal does not hold; the journal's is kept, else the first stored in listing order;
* orphan: ours, unknown to the journal, and its file is gone (or changed);
* foreign: no marker, another instance's, or an older marker whose key the journal
  does not know. Never touched.

And a file the journal says is done whose video the listing lacks is *missing
remotely*.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from reka_sync.markers import Marker
from reka_sync.stability import FileStat


@dataclass(frozen=True)
class Remote:
    """One of the key's videos, as reconcile needs it."""

    video_id: str
    status: str | None
    group_id: str | None
    marker: Marker | None


@dataclass(frozen=True)
class Found:
    """A file under a root a marker names: its root, absolute path and stat."""

    root: str
    path: str
    stat: FileStat


@dataclass(frozen=True)
class Adopt:
    """A video to record for a file the journal does not tie it to."""

    remote: Remote
    file: Found


@dataclass(frozen=True)
class Done:
    """A file the journal says is stored: its job, path and video."""

    job_id: int
    path: str
    video_id: str


@dataclass
class Plan:
    """What reconcile found, by class."""

    known: int = 0
    adopted: list[Adopt] = field(default_factory=list)
    duplicates: list[tuple[Remote, list[Remote]]] = field(default_factory=list)  # keep, extras
    orphans: list[Remote] = field(default_factory=list)
    missing: list[Done] = field(default_factory=list)
    foreign: int = 0


def plan(
    remotes: Iterable[Remote],
    instance: str,
    known_videos: set[str],
    known_keys: set[str],
    done: Iterable[Done],
    find: Callable[[Marker], Found | None],
) -> Plan:
    """Given the key's videos, this host's instance id, the video ids and upload keys the
    journal holds, the files it says are stored, and a lookup of the file a marker names
    (None: not there as it was sent), return the plan."""
    result = Plan()
    ours: list[Remote] = []
    seen: set[str] = set()

    def known(remote: Remote) -> bool:
        marker = remote.marker
        return remote.video_id in known_videos or (marker is not None and marker.key in known_keys)

    for remote in remotes:
        seen.add(remote.video_id)
        marker = remote.marker
        if known(remote) or (marker and marker.instance == instance and marker.complete):
            ours.append(remote)
        else:
            result.foreign += 1
    kept = _without_duplicates(ours, known, result)
    claimed: set[str] = set()  # a file adopts one video only
    for remote in kept:
        if known(remote):
            result.known += 1
            continue
        assert remote.marker is not None
        found = find(remote.marker)
        if found is None or found.path in claimed:
            result.orphans.append(remote)
        else:
            claimed.add(found.path)
            result.adopted.append(Adopt(remote, found))
    result.missing = [d for d in done if d.video_id not in seen]
    return result


def _without_duplicates(
    ours: list[Remote], known: Callable[[Remote], bool], result: Plan
) -> list[Remote]:
    """Put the extra videos of one content in `result.duplicates`; return the others. A
    video the journal holds is never an extra; without one, the first stored in listing
    order is kept (the API tells no upload time)."""
    first: dict[str, Remote] = {}  # one video per content: no list for the common case
    more: dict[str, list[Remote]] = {}
    unique: list[Remote] = []
    for remote in ours:
        digest = remote.marker.digest if remote.marker is not None else None
        if not digest:
            unique.append(remote)
        elif digest not in first:
            first[digest] = remote
        else:
            more.setdefault(digest, [first[digest]]).append(remote)
    unique.extend(r for d, r in first.items() if d not in more)
    for group in more.values():
        held = [r for r in group if known(r)]
        keep = held[0] if held else next((r for r in group if r.status == "uploaded"), group[0])
        extras = [r for r in group if r is not keep and not known(r)]
        if extras:
            result.duplicates.append((keep, extras))
        unique.extend(r for r in group if r not in extras)
    return unique
