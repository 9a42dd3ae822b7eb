"""Where watches go: observers that skip ignored folders and report running out of watches.

watchdog's recursive inotify watch puts a watch on every folder below a root and
silently skips any folder it cannot watch, including when the kernel's watch
limit is reached. Here ignored folders get no watch at all, and a folder that
cannot be watched for lack of watches marks its root as exhausted; the Watcher
then moves that root to polling and says so in the log. The polling observer
lists folders through the same rules, so it never enters ignored trees either.

When the kernel's event queue overflows, watchdog drops the events it still held and
tells no handler. Here the overflow becomes an ``EventsLost`` event for the root, queued
behind every event read before the overflow and ahead of every event read after it, so
the Watcher knows exactly which of its hints (a write with no close-write yet) may have
lost their sequel.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import EVENT_TYPE_MODIFIED, FileSystemEvent
from watchdog.observers.api import DEFAULT_OBSERVER_TIMEOUT, BaseObserver
from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup
from watchdog.observers.inotify_c import (
    InotifyConstants,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchDescriptor,
)
from watchdog.observers.inotify_move_event_grouper import GroupedInotifyEvent, PathedInotifyEvent
from watchdog.observers.polling import PollingObserverVFS

from reka_sync.patterns import IgnoreRules

OUT_OF_WATCHES = (errno.ENOSPC, errno.EMFILE)
# What the kernel says when its queue overflowed: the marker put in the queue in its place.
_OVERFLOW = InotifyEvent(WatchDescriptor(-1), Mask(InotifyConstants.IN_Q_OVERFLOW), 0, b"")


class EventsLost(FileSystemEvent):
    """The kernel dropped events below `src_path` (a watched root): what was seen before
    may have had a sequel nobody saw (a close-write after a write, say)."""

    event_type = EVENT_TYPE_MODIFIED  # watchdog dispatches by type; this one's handler is a no-op
    is_directory = True


class Placement:
    """The roots and ignore rules that decide which folders are watched (thread-safe)."""

    def __init__(self, roots: Iterable[Path], ignore: IgnoreRules) -> None:
        self._roots = sorted((str(r) for r in roots), key=len, reverse=True)
        self._ignore = ignore
        self._lock = threading.Lock()
        self._exhausted: set[str] = set()

    def root_of(self, path: str) -> str | None:
        """Given a path, return the (innermost) configured root holding it, or None."""
        for root in self._roots:
            if path == root or path.startswith(root + os.sep):
                return root
        return None

    def skips_folder(self, path: str) -> bool:
        """Given a folder path, return True if it must get no watch (ignored, or outside)."""
        root = self.root_of(path)
        if root is None:
            return True
        return path != root and self._ignore.ignores_dir(_relative(path, root))

    def out_of_watches(self, path: str) -> None:
        """Given a folder the kernel refused a watch for lack of watches, mark its root."""
        root = self.root_of(path)
        if root is not None:
            with self._lock:
                self._exhausted.add(root)

    def take_exhausted(self) -> set[str]:
        """Return the roots marked as out of watches since the last call."""
        with self._lock:
            taken, self._exhausted = self._exhausted, set()
        return taken

    def listdir(self, path: str | None) -> Iterator[os.DirEntry[str]]:
        """Given a folder, yield its entries that are wanted (for the polling observer)."""
        folder = os.fsdecode(path or ".")
        root = self.root_of(folder)
        if root is None:
            return
        prefix = "" if folder == root else _relative(folder, root) + "/"
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if not self._ignore.ignores_dir(rel):
                        yield entry
                elif not self._ignore.ignores_file(rel, folders_checked=True):
                    yield entry


def _relative(path: str, root: str) -> str:
    return path[len(root) + 1 :].replace(os.sep, "/")


@dataclass
class _PrunedWatchGroup(InotifyWatchGroup):
    """watchdog's watch group, minus ignored folders, loud about running out of watches."""

    placement: Placement | None = None

    def _add_all_callbacks(self, path: bytes) -> None:
        if path != self.path and self._skips(path):
            return
        self._add_callback(path)
        if not self.is_recursive or not os.path.isdir(path):
            return
        for folder, subfolders, _ in os.walk(path):
            subfolders[:] = [
                name
                for name in subfolders
                if not os.path.islink(os.path.join(folder, name))
                and not self._skips(os.path.join(folder, name))
            ]
            for name in subfolders:
                self._add_callback(os.path.join(folder, name))

    def _add_callback(self, path: bytes) -> None:
        if path != self.path and self._skips(path):
            return
        try:
            wd = self._inotify_fd.add_callback(path, self.event_mask, self._callback, self._id)
        except OSError as exc:
            if exc.errno in OUT_OF_WATCHES and self.placement is not None:
                self.placement.out_of_watches(os.fsdecode(path))
            if path == self.path:
                raise
            return  # a folder that vanished or is unreadable: the rescan covers it
        self._active_callbacks_by_path[path] = wd
        self._active_callbacks_by_watch[wd] = path

    def _skips(self, path: bytes) -> bool:
        return self.placement is not None and self.placement.skips_folder(os.fsdecode(path))

    def on_queue_overflow(self) -> None:
        super().on_queue_overflow()
        with self._lock:  # in the queue behind what was read before, ahead of what comes
            if self.is_active:
                self._move_event_grouper.put_event(PathedInotifyEvent(_OVERFLOW, self.path))


class _PrunedEmitter(InotifyEmitter):
    def __init__(self, *args: Any, placement: Placement, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._placement = placement

    def on_thread_start(self) -> None:
        self._inotify = _PrunedWatchGroup(
            self._inotify_fd,
            os.fsencode(self.watch.path),
            is_recursive=self.watch.is_recursive,
            event_mask=self.get_event_mask_from_filter(),
            follow_symlink=self.watch.follow_symlink,
            placement=self._placement,
        )

    def build_and_queue_event(
        self, event: GroupedInotifyEvent, *, full_events: bool = False
    ) -> None:
        if isinstance(event, PathedInotifyEvent) and event.ev is _OVERFLOW:
            self.queue_event(EventsLost(self.watch.path))
            return
        super().build_and_queue_event(event, full_events=full_events)


class NativeObserver(InotifyObserver):
    """An inotify observer whose watches follow a Placement."""

    def __init__(self, placement: Placement) -> None:
        self._inotify_fd = InotifyFD()
        self._inotify_fd.start()
        BaseObserver.__init__(
            self,
            _PrunedEmitter,
            timeout=DEFAULT_OBSERVER_TIMEOUT,
            inotify_fd=self._inotify_fd,
            placement=placement,
        )


def polling_observer(placement: Placement, interval: float) -> BaseObserver:
    """Given a Placement and a poll interval, return a polling observer that follows it."""
    return PollingObserverVFS(os.stat, placement.listdir, polling_interval=interval)
