"""Watching the roots: filesystem events become hints; hints become journal records.

How this works
--------------
* watchdog's handler runs on watchdog's thread. It does no I/O and cannot
  raise (an exception would kill that thread): it only notes "something
  happened to this path at this time" in a thread-safe map of hints.
* ``drain()`` (called by the engine's intake tick) takes the hints, stats each
  path once and returns what exists as ``SeenFile`` records whose quiet time
  starts at the last event. A folder that appears (created, or moved in from
  outside a root) is walked, because files moved in with it send no events.
  Settling (quiet for ``settle_seconds`` and two agreeing stats) is the
  engine's job; a close-after-write event never skips it.
* Each root gets inotify on local filesystems and polling on network ones
  (nfs, cifs/smb, sshfs and other fuse, 9p), read from the mount table, unless
  ``watch.observer`` forces one. If inotify runs out of watches, even for one
  folder deep down, the root is polled instead (from the next intake tick) and
  the log says which sysctl to raise. Ignored folders get no inotify watch and
  are not listed by polling (``watches.py``).
* Events are hints only: the startup scan and the periodic rescan (the engine)
  catch whatever events miss. When the kernel's queue overflows (``EventsLost``,
  in order with the other events), what the events said of a root's writers is
  forgotten (a close-write may be among the lost: an "open" file would wait an
  hour) and the engine rescans at once instead of at the next interval.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch

from reka_sync.config import WatchConfig
from reka_sync.journal import SeenFile
from reka_sync.mounts import mount_of, observer_kind, read_mounts
from reka_sync.patterns import IgnoreRules
from reka_sync.scanner import links_of, stat_file, walk
from reka_sync.stability import Writer
from reka_sync.watches import (
    OUT_OF_WATCHES,
    EventsLost,
    NativeObserver,
    Placement,
    polling_observer,
)

log = structlog.get_logger("reka_sync.watcher")
POLL_SECONDS = 5.0
# Not opened / closed-without-writing: our own scans open every folder, and on a big
# tree those events alone overflow the inotify queue (which makes watchdog re-walk the
# tree, which opens every folder again).
WANTED_EVENTS = (
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
    EventsLost,
)


# Seconds a writer's last word is trusted: a close-write is forgotten for a file nobody
# touches, and a write with no close-write this long ago (a lost event) no longer holds
# the file back.
FORGET_WRITER = 3600.0


@dataclass
class Hint:
    at: float
    is_directory: bool


class _Handler(FileSystemEventHandler):
    """Notes paths that something happened to; nothing else (no I/O, never raises)."""

    def __init__(
        self, note: Callable[[str, bool, Writer | None], None], lost: Callable[[str], None]
    ) -> None:
        self._note = note
        self._lost = lost

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if isinstance(event, EventsLost):
                self._lost(os.fsdecode(event.src_path))
            elif event.src_path:
                self._note(os.fsdecode(event.src_path), event.is_directory, _writer_after(event))
            if event.dest_path:  # renamed into place: that is a completion
                self._note(os.fsdecode(event.dest_path), event.is_directory, Writer.CLOSED)
        except Exception:  # noqa: BLE001, S110 (raising here would kill watchdog's thread)
            pass


def _writer_after(event: FileSystemEvent) -> Writer | None:
    """What an event says of a file's writers: a write opens, a close-write closes."""
    if event.is_directory:
        return None
    if isinstance(event, (FileClosedEvent, FileMovedEvent, FileDeletedEvent)):
        return Writer.CLOSED  # closed, or no longer under that name
    # A creation says nothing yet: a file moved in from outside the roots arrives as one.
    return Writer.OPEN if isinstance(event, FileModifiedEvent) else None


class Watcher:
    """The observers over every root, and the hints they collect."""

    def __init__(self, config: WatchConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._ignore = IgnoreRules(config.ignore, config.extensions)
        self._links = links_of(config)
        self._lock = threading.Lock()
        self._hints: dict[str, Hint] = {}
        self._writers: dict[str, tuple[Writer, float]] = {}  # path -> last word, when
        self._lost: set[str] = set()  # roots whose events overflowed the kernel's queue
        self._observers: dict[str, BaseObserver] = {}
        self._watches: dict[Path, ObservedWatch] = {}
        self._placing = threading.RLock()  # watch/unwatch (rescan) vs fallback (intake)
        self._placement = Placement(config.roots, self._ignore)
        self.kinds: dict[Path, str] = {}

    def note(self, path: str, is_directory: bool, writer: Writer | None = None) -> None:
        """Given a path an event touched (and what it says of its writers), remember it
        (called on watchdog's thread)."""
        with self._lock:
            now = self._clock()
            self._hints[path] = Hint(now, is_directory)
            if writer is not None:
                self._writers[path] = (writer, now)

    def lost(self, root: str) -> None:
        """Given a root the kernel dropped events of, forget what the events said of its
        files' writers and keep it for `take_lost` (called on watchdog's thread)."""
        with self._lock:
            below = root + os.sep
            for path in [p for p in self._writers if p.startswith(below)]:
                del self._writers[path]
            self._lost.add(root)

    def take_lost(self) -> set[str]:
        """Return the roots that lost events since the last call: each needs a rescan."""
        with self._lock:
            taken, self._lost = self._lost, set()
        return taken

    def writer(self, path: str) -> Writer:
        """Given a file's path, return what the events said of its writers: OPEN (a write
        and no close-write since), CLOSED, or UNSEEN (no events for it, or a polled root,
        where no close-write is ever reported)."""
        root = self._root_of(path)
        if root is None or self.kinds.get(root) != "native":
            return Writer.UNSEEN
        with self._lock:
            seen = self._writers.get(path)
        if seen is None or self._clock() - seen[1] > FORGET_WRITER:
            return Writer.UNSEEN
        return seen[0]

    def start(self) -> None:
        """Place the watches on every root that exists now."""
        for root in self._config.roots:
            if root.is_dir():
                self.watch(root)
        self._poll_exhausted_roots()

    def watch(self, root: Path) -> None:
        """Given a root that is there (again), place its watch unless it has one."""
        with self._placing:
            if root in self._watches:
                return
            fstype = mount_of(root, read_mounts()).fstype
            self._schedule(root, observer_kind(fstype, self._config.observer))

    def unwatch(self, root: Path) -> None:
        """Given a root that went away (unmounted), drop its watch; `watch` places it again."""
        with self._placing:
            watch = self._watches.pop(root, None)
            kind = self.kinds.pop(root, None)
            if watch is not None and kind is not None:
                self._observers[kind].unschedule(watch)

    def _schedule(self, root: Path, kind: str) -> None:
        try:
            observer = self._observer(kind)  # inotify_init can fail too (max_user_instances)
            watch = observer.schedule(
                _Handler(self.note, self.lost),
                str(root),
                recursive=True,
                event_filter=list(WANTED_EVENTS),
            )
        except OSError as exc:
            if kind == "native" and exc.errno in OUT_OF_WATCHES:
                self._placement.take_exhausted()
                self._warn_out_of_watches(root, exc.errno)
                self._schedule(root, "polling")
            else:  # gone again, or unreadable: the rescan and `doctor` say more
                log.error(
                    "cannot watch root; only rescans will see it", root=str(root), error=str(exc)
                )
            return
        self.kinds[root] = kind
        self._watches[root] = watch

    def _poll_exhausted_roots(self) -> None:
        """Move every root that ran out of inotify watches to polling, and look it over."""
        for name in self._placement.take_exhausted():
            root = Path(name)
            with self._placing:
                if self.kinds.get(root) != "native":
                    continue
                self._warn_out_of_watches(root)
                self._observers["native"].unschedule(self._watches.pop(root))
                self._schedule(root, "polling")
            self.note(name, is_directory=True)

    def _warn_out_of_watches(self, root: Path, error: int = errno.ENOSPC) -> None:
        limit = "instance" if error == errno.EMFILE else "watch"
        setting = "max_user_instances=512" if limit == "instance" else "max_user_watches=1048576"
        log.warning(
            f"inotify {limit} limit reached; polling this root instead. Raise it with "
            f"`sysctl fs.inotify.{setting}` (systemd/60-reka-sync.conf is a "
            "drop-in for /etc/sysctl.d)",
            root=str(root),
        )

    def _observer(self, kind: str) -> BaseObserver:
        if kind not in self._observers:
            observer = (
                polling_observer(self._placement, POLL_SECONDS)
                if kind == "polling"
                else NativeObserver(self._placement)
            )
            observer.daemon = True
            observer.start()
            self._observers[kind] = observer
        return self._observers[kind]

    def alive(self) -> bool:
        """Return True if every observer thread is running."""
        return all(o.is_alive() for o in self._observers.values())

    def stop(self) -> None:
        """Stop the observers and wait for their threads."""
        for observer in self._observers.values():
            observer.stop()
        for observer in self._observers.values():
            observer.join(timeout=10)

    def drain(self) -> list[SeenFile]:
        """Take the hints collected so far; return the wanted files they point at."""
        self._poll_exhausted_roots()
        with self._lock:
            hints, self._hints = self._hints, {}
            self._forget_old_writers(self._clock())
        seen: list[SeenFile] = []
        for path, hint in hints.items():
            root = self._root_of(path)
            if root is None:
                continue
            if hint.is_directory or os.path.isdir(path):
                seen.extend(self._walk_new_folder(root, Path(path), hint.at))
                continue
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            stat = None if self._ignore.ignores_file(rel) else stat_file(path, self._links)
            if stat is not None:
                seen.append(SeenFile(path, str(root), rel, stat, hint.at))
        return seen

    def _forget_old_writers(self, now: float) -> None:
        """Drop writers' words nobody has touched for long (call with the lock held)."""
        old = [p for p, (_, at) in self._writers.items() if now - at > FORGET_WRITER]
        for path in old:
            del self._writers[path]

    def _walk_new_folder(self, root: Path, folder: Path, at: float) -> list[SeenFile]:
        rel = os.path.relpath(folder, root).replace(os.sep, "/")
        if rel != "." and self._ignore.ignores_dir(rel):
            return []
        found = list(walk(root, self._ignore, folder, links=self._links)) if folder.is_dir() else []
        return [SeenFile(f.path, f.root, f.rel_path, f.stat, max(f.quiet_since, at)) for f in found]

    def _root_of(self, path: str) -> Path | None:
        for root in self._config.roots:
            if path == str(root) or path.startswith(str(root) + os.sep):
                return root
        return None
