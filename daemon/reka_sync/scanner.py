"""Walking the roots: which wanted files exist, with one stat each (no content reads)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from reka_sync.journal import SeenFile
from reka_sync.patterns import IgnoreRules
from reka_sync.stability import FileStat


@dataclass(frozen=True)
class ScanProblem:
    path: str
    reason: str


def stat_file(path: str | Path) -> FileStat | None:
    """Given a path, return its stat, or None if it is gone or not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not _is_regular(st.st_mode):
        return None
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def walk(
    root: Path,
    ignore: IgnoreRules,
    start: Path | None = None,
    problems: list[ScanProblem] | None = None,
) -> Iterator[SeenFile]:
    """Given a root (and optionally a file or folder inside it), yield every wanted file.

    Ignored folders are not entered; unreadable folders are reported in `problems`.
    """
    base = start or root
    if base != root:
        parts = _relative(root, str(base)).split("/")
        folders = parts if base.is_dir() else parts[:-1]
        if any(ignore.ignores_dir("/".join(folders[: i + 1])) for i in range(len(folders))):
            return  # inside an ignored tree
    if base.is_file():
        seen = _seen(root, str(base), ignore)
        if seen is not None:
            yield seen
        return
    for path, rel, st in walk_stats(root, ignore, str(base), problems):
        stat = FileStat(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
        yield SeenFile(path, str(root), rel, stat, st.st_mtime_ns / 1e9)


def walk_stats(
    root: Path, ignore: IgnoreRules, folder: str, problems: list[ScanProblem] | None = None
) -> Iterator[tuple[str, str, os.stat_result]]:
    """Given a root and a folder in it, yield (path, relative path, stat) per wanted file.

    The raw form of `walk`, for the rescan: it compares stats before building records.
    """
    skip = len(os.path.join(str(root), ""))  # entry.path is root + "/" + the relative path
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError as exc:
            if problems is not None:
                problems.append(ScanProblem(exc.filename, exc.strerror or str(exc)))
            continue
        for entry in entries:
            rel = entry.path[skip:] if os.sep == "/" else _relative(root, entry.path)
            if entry.is_dir(follow_symlinks=False):
                if not ignore.ignores_dir(rel):
                    stack.append(entry.path)
            elif not ignore.ignores_file(rel, folders_checked=True):
                try:
                    st = entry.stat()
                except OSError:
                    continue
                if _is_regular(st.st_mode):
                    yield entry.path, rel, st


def _seen(root: Path, path: str, ignore: IgnoreRules) -> SeenFile | None:
    rel = _relative(root, path)
    if ignore.ignores_file(rel):
        return None
    stat = stat_file(path)
    if stat is None:
        return None
    return SeenFile(path, str(root), rel, stat, stat.mtime_ns / 1e9)


def _relative(root: Path, path: str) -> str:
    prefix = str(root) + os.sep
    if path.startswith(prefix):  # the walk's own paths: no need for relpath's normalising
        return path[len(prefix) :].replace(os.sep, "/")
    return os.path.relpath(path, root).replace(os.sep, "/")


def _is_regular(mode: int) -> bool:
    return (mode & 0o170000) == 0o100000


def count_folders(root: Path, ignore: IgnoreRules, problems: list[ScanProblem]) -> int:
    """Given a root, return how many folders in it are watched (itself included).

    Unreadable folders are counted and reported in `problems`.
    """
    skip = len(os.path.join(str(root), ""))
    count, stack = 0, [str(root)]
    while stack:
        folder = stack.pop()
        count += 1
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False) and not ignore.ignores_dir(
                        entry.path[skip:].replace(os.sep, "/")
                    ):
                        stack.append(entry.path)
        except OSError as exc:
            problems.append(ScanProblem(folder, exc.strerror or str(exc)))
    return count
