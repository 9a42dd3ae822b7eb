"""Walking the roots: which wanted files exist, with one stat each (no content reads)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xxhash import xxh3_64_intdigest

from reka_sync.config import WatchConfig
from reka_sync.journal import SeenFile, Skipped
from reka_sync.patterns import IgnoreRules
from reka_sync.stability import FileStat


@dataclass(frozen=True)
class ScanProblem:
    path: str
    reason: str


@dataclass
class Tally:
    """What a walk passed over, counted: files whose extension is not a video's."""

    other_extensions: int = 0


@dataclass(frozen=True)
class Links:
    """Which symbolic links may be followed: none, or those to a file inside a root."""

    follow: bool = False
    roots: tuple[Path, ...] = ()

    def target(self, path: str) -> str | None:
        """Given a path that is a link, return its real target if it may be followed."""
        if not self.follow:
            return None
        real = os.path.realpath(path)
        inside = any(real.startswith(str(root) + os.sep) for root in self.roots)
        return real if inside else None


NO_LINKS = Links()
REGULAR = stat.S_IFREG
# A folder's entries are listed from the folder held open, where the platform allows it.
BY_HANDLE = os.scandir in os.supports_fd and hasattr(os, "O_DIRECTORY")


def links_of(watch: WatchConfig) -> Links:
    """Given the watch settings, return the links policy they set."""
    return Links(watch.follow_symlinks, watch.roots)


LINK_SKIPPED = "a symbolic link (watch.follow_symlinks = false): not followed"
LINK_OUTSIDE = "a symbolic link whose target is outside every root: not followed"


def stat_file(path: str | Path, links: Links = NO_LINKS) -> FileStat | None:
    """Given a path, return its stat, or None if it is gone, not a regular file, or a link
    that may not be followed. A link that may be followed gives its target's stat."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            target = links.target(str(path))
            if target is None:
                return None
            st = os.lstat(target)  # the real path: a link here was swapped in since
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileStat(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def why_skipped(path: str, links: Links = NO_LINKS) -> str | None:
    """Given a path a scan passed over, return why it is not a file to upload (a link
    that may not be followed, a FIFO, a socket, a device), or None if it is gone."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        if not links.follow:
            return LINK_SKIPPED
        return LINK_OUTSIDE if links.target(path) is None else "a link to something not a file"
    if stat.S_ISREG(st.st_mode):
        return None
    kind = (
        "a FIFO"
        if stat.S_ISFIFO(st.st_mode)
        else "a socket"
        if stat.S_ISSOCK(st.st_mode)
        else "a device or special file"
    )
    return f"{kind}, not a regular file: never opened"


def walk(
    root: Path,
    ignore: IgnoreRules,
    start: Path | None = None,
    problems: list[ScanProblem] | None = None,
    links: Links = NO_LINKS,
    skipped: list[Skipped] | None = None,
) -> Iterator[SeenFile]:
    """Given a root (and optionally a file or folder inside it), yield every wanted file.

    Ignored folders are not entered; unreadable folders are reported in `problems`,
    links that may not be followed and special files in `skipped`.
    """
    base = start or root
    if base != root:
        parts = _relative(root, str(base)).split("/")
        folders = parts if base.is_dir() else parts[:-1]
        if any(ignore.ignores_dir("/".join(folders[: i + 1])) for i in range(len(folders))):
            return  # inside an ignored tree
    if not base.is_dir() or base.is_symlink():
        seen = _seen(root, str(base), ignore, links, skipped)
        if seen is not None:
            yield seen
        return
    for found in walk_folders(root, ignore, str(base), problems, links, skipped):
        for path, rel, st in found:
            fs = FileStat(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
            yield SeenFile(path, str(root), rel, fs, st.st_mtime_ns / 1e9)


Found = tuple[str, str, os.stat_result]  # (path, root-relative path, stat) of a file


@dataclass
class Known:
    """What a walk compares with as it goes: the journal's stat keys of the root (`keys`,
    see `stat_key`); files whose key is among them are counted in `walked` but not
    yielded. `seen`, if given, collects the key of every file walked."""

    keys: set[int]
    seen: set[int] | None = None
    walked: int = 0


def walk_folders(
    root: Path,
    ignore: IgnoreRules,
    folder: str,
    problems: list[ScanProblem] | None = None,
    links: Links = NO_LINKS,
    skipped: list[Skipped] | None = None,
    tally: Tally | None = None,
    known: Known | None = None,
) -> Iterator[list[Found]]:
    """Given a root and a folder in it, yield, folder by folder, the list of its wanted
    files as (path, relative path, stat); given `known`, only those not in it.

    The raw form of `walk`, for the rescan: it compares stats before building records,
    and a folder of files the journal has as they are costs no more than their stats.
    Links to folders are never walked; a link to a file gives its target's stat only
    when `links` allows it.
    """
    walk = _Walk(root, ignore, problems, links, skipped, tally, known)
    stack = [folder]
    while stack:
        yield walk.folder(stack.pop(), stack)


class _Walk:
    """What `walk_folders` walks with, and what it reports to."""

    def __init__(
        self,
        root: Path,
        ignore: IgnoreRules,
        problems: list[ScanProblem] | None,
        links: Links,
        skipped: list[Skipped] | None,
        tally: Tally | None,
        known: Known | None,
    ) -> None:
        self.root, self.ignore, self.links = root, ignore, links
        self.problems, self.skipped, self.tally, self.known = problems, skipped, tally, known
        self.skip = len(os.path.join(str(root), ""))  # a path: root + "/" + relative path
        self.plain = ignore.plain_extensions

    def rel(self, path: str) -> str:
        """Given a path the walk made, return it relative to the root, `/` separated."""
        return path[self.skip :] if os.sep == "/" else _relative(self.root, path)

    def folder(self, folder: str, stack: list[str]) -> list[Found]:
        """Given a folder, return its wanted files (those `known` has not, if given), and
        put its folders to walk on `stack`."""
        found: list[Found] = []
        known, plain, ignores_walked = self.known, self.plain, self.ignore.ignores_walked
        keys = known.keys if known is not None else None
        see = known.seen.add if known is not None and known.seen is not None else None
        walked = 0
        with _listing(folder, self.problems) as (prefix, entries):  # stat by name in it
            for entry in entries:  # (this runs for every file: its steps are inlined)
                base = entry.name
                path = prefix + base
                if entry.is_dir(follow_symlinks=False):
                    if not self.ignore.ignores_dir(self.rel(path)):
                        stack.append(path)
                    continue
                dot = base.rfind(".")
                ext = base[dot + 1 :]  # not hidden, with a plain extension: wanted; else asked
                if (
                    dot <= 0 or base[0] == "." or (ext not in plain and ext.lower() not in plain)
                ) and ignores_walked(base, self.rel(path)):
                    _passed_over(self.tally, self.ignore, self.rel(path))
                    continue
                try:
                    st: os.stat_result | None = entry.stat(follow_symlinks=False)
                except OSError as exc:  # a stale handle, an I/O error: not a file gone
                    _unreadable(self.problems, path, exc)
                    st = None
                if st is not None and st.st_mode & 0o170000 != REGULAR:
                    st = _link_target_stat(entry, path, self.links)
                if st is None:
                    _not_a_file(self.skipped, self.root, path, self.rel(path), self.links)
                    continue
                walked += 1
                if keys is not None:
                    try:  # (the journal's stat_key, inlined)
                        named = xxh3_64_intdigest(path.encode())
                    except UnicodeEncodeError:  # a name that is not UTF-8: as os.fsencode
                        named = xxh3_64_intdigest(path.encode("utf-8", "surrogateescape"))
                    key = hash((named, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev))
                    if see is not None:
                        see(key)
                    if key in keys:
                        continue
                found.append((path, self.rel(path), st))
        if known is not None:
            known.walked += walked
        return found


def _passed_over(tally: Tally | None, ignore: IgnoreRules, rel: str) -> None:
    """Given a file the walk ignores, count it in `tally` if its extension is not a video's."""
    if tally is not None and ignore.wrong_extension(rel):
        tally.other_extensions += 1


def _unreadable(problems: list[ScanProblem] | None, path: str, exc: OSError) -> None:
    """Given a file whose stat failed, and why, note it in `problems`."""
    if problems is not None:
        problems.append(ScanProblem(path, exc.strerror or str(exc)))


def _not_a_file(
    skipped: list[Skipped] | None, root: Path, path: str, rel: str, links: Links
) -> None:
    """Given an entry that is not a regular file to upload, say why in `skipped` (unless
    it is gone)."""
    if skipped is not None and (why := why_skipped(path, links)):
        skipped.append(Skipped(path, str(root), rel, why))


@contextmanager
def _listing(
    folder: str, problems: list[ScanProblem] | None
) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """Given a folder, yield the prefix of its entries' paths and its entries, whose `stat`
    runs on the folder held open (by name: the kernel does not walk the path again for
    each file); a folder that cannot be read goes to `problems`, with no entries."""
    prefix = os.path.join(folder, "")
    handle = None
    try:
        if BY_HANDLE:
            handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            entries = list(os.scandir(handle))
        else:
            entries = list(os.scandir(folder))
    except OSError as exc:
        if problems is not None:
            problems.append(ScanProblem(folder, exc.strerror or str(exc)))
        entries = []
    try:
        yield prefix, entries
    finally:
        if handle is not None:
            os.close(handle)


def _link_target_stat(entry: os.DirEntry[str], path: str, links: Links) -> os.stat_result | None:
    """Given an entry that is not a regular file and its path, return its target's stat
    if it is a link that may be followed to a regular file."""
    if not entry.is_symlink() or (target := links.target(path)) is None:
        return None
    try:
        st = os.lstat(target)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _seen(
    root: Path, path: str, ignore: IgnoreRules, links: Links, skipped: list[Skipped] | None
) -> SeenFile | None:
    rel = _relative(root, path)
    if ignore.ignores_file(rel):
        return None
    fs = stat_file(path, links)
    if fs is None:
        if skipped is not None and (why := why_skipped(path, links)):
            skipped.append(Skipped(path, str(root), rel, why))
        return None
    return SeenFile(path, str(root), rel, fs, fs.mtime_ns / 1e9)


def _relative(root: Path, path: str) -> str:
    prefix = str(root) + os.sep
    if path.startswith(prefix):  # the walk's own paths: no need for relpath's normalising
        return path[len(prefix) :].replace(os.sep, "/")
    return os.path.relpath(path, root).replace(os.sep, "/")


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
