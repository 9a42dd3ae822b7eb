"""Path globs and the ignore decision (pure: strings in, answers out).

Globs match a path relative to its watched root, with `/` separators:
`*` is any run inside one segment, `?` one character, `**` any number of
whole segments (zero included), and `{name}` captures one segment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from reka_sync.errors import GlobError

_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Names that are never media: NAS and OS litter, sync-tool state folders.
BUILTIN_IGNORED_NAMES = frozenset(
    name.lower()
    for name in (
        "@eaDir",
        "#recycle",
        "#snapshot",
        ".Trashes",
        ".Spotlight-V100",
        ".fseventsd",
        ".stfolder",
        ".stversions",
        "Thumbs.db",
        "desktop.ini",
        ".DS_Store",
        "lost+found",
        "$RECYCLE.BIN",
    )
)
# Partial downloads and editors' temporary files.
BUILTIN_IGNORED_SUFFIXES = (".part", ".crdownload", ".tmp", ".partial", ".download", "~")


@dataclass(frozen=True)
class Glob:
    """A compiled glob; `captures` names the `{name}` segments it binds."""

    pattern: str
    regex: re.Pattern[str]
    captures: tuple[str, ...]

    def match(self, rel_path: str) -> dict[str, str] | None:
        """Given a root-relative path, return its captures, or None if it does not match."""
        found = self.regex.fullmatch(rel_path)
        return None if found is None else found.groupdict()


def compile_glob(pattern: str) -> Glob:
    """Given a glob, return it compiled. Raise GlobError if it is empty or malformed."""
    if not pattern or pattern.startswith("/"):
        raise GlobError("must be a non-empty path relative to its root (no leading '/')")
    segments = pattern.split("/")
    parts: list[str] = []
    captures: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        if "**" in segment:
            raise GlobError(f"'**' must be a whole segment, not part of {segment!r}")
        parts.append(_segment_regex(segment, captures) + ("" if last else "/"))
    return Glob(pattern, re.compile("".join(parts), re.DOTALL), tuple(captures))


def _segment_regex(segment: str, captures: list[str]) -> str:
    out: list[str] = []
    position = 0
    while position < len(segment):
        char = segment[position]
        capture = _CAPTURE.match(segment, position)
        if capture:
            name = capture.group(1)
            if name in captures:
                raise GlobError(f"capture {{{name}}} appears twice")
            captures.append(name)
            out.append(f"(?P<{name}>[^/]+)")
            position = capture.end()
            continue
        if char in "{}":
            raise GlobError(f"unbalanced brace in {segment!r}; captures look like {{name}}")
        out.append({"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char)))
        position += 1
    return "".join(out)


def template_fields(template: str) -> tuple[str, ...]:
    """Given a group-name template, return the capture names it uses."""
    return tuple(_CAPTURE.findall(template))


class IgnoreRules:
    """The built-in ignores plus the configured globs and extension filter."""

    def __init__(self, globs: Iterable[str], extensions: Iterable[str]) -> None:
        compiled = [compile_glob(g) for g in globs]
        self._any = _alternation(compiled)
        self._extensions = frozenset(e.lower().lstrip(".") for e in extensions)
        # The name test of every file of a scan in one match: a video's extension, not
        # hidden, not a built-in ignored name or suffix (`_builtin_ignored`, as a regex).
        names = "|".join(re.escape(n) for n in sorted(BUILTIN_IGNORED_NAMES))
        suffixes = "|".join(re.escape(s) for s in BUILTIN_IGNORED_SUFFIXES)
        videos = "|".join(re.escape(e) for e in sorted(self._extensions)) or "(?!)"
        wanted_name = rf"(?i:(?!\.)(?!(?:{names})\Z)(?!.*(?:{suffixes})\Z)[^/]*\.(?:{videos}))"
        # ... and with the globs (case-sensitive, as a lookahead): a path in one match.
        globs = f"(?!(?:{self._any.pattern})\\Z)" if self._any is not None else ""
        self._wanted = re.compile(rf"{globs}(?:.*/)?{wanted_name}", re.DOTALL)
        # A walk's file, whose folders passed `ignores_dir`, is tested on its name alone
        # (the name test, and the globs `**/NAME`), and on its whole path only for the
        # globs that neither name a file alone nor end in `/**` (their folders were tested).
        by_name = [g for g in compiled if _names_a_file(g.pattern)]
        by_path = [g for g in compiled if g not in by_name and not g.pattern.endswith("/**")]
        # The name test is done by hand (`ignores_walked`): no regex at all for the globs the
        # built-in ignores cover (the default `**/.*` and `**/*.part`).
        self._named = _alternation(
            [compile_glob(g.pattern[3:]) for g in by_name if not _builtin_covers(g.pattern[3:])]
        )
        self._by_path = _alternation(by_path)
        self.plain_extensions = self._plain_extensions()

    def _plain_extensions(self) -> frozenset[str]:
        """Return the extensions (lowercase) whose files a walk wants on their name alone,
        if it is not hidden: no built-in ignored name or suffix ends so. Empty if some glob
        tests a file's name or path: then every file gets the name test (`ignores_walked`)."""
        if self._named is not None or self._by_path is not None:
            return frozenset()
        return frozenset(
            ext
            for ext in self._extensions
            if not any(name.endswith("." + ext) for name in BUILTIN_IGNORED_NAMES)
            and not any(
                ("." + ext).endswith(suffix) or suffix.endswith("." + ext)
                for suffix in BUILTIN_IGNORED_SUFFIXES
            )
        )

    def ignores_dir(self, rel_dir: str) -> bool:
        """Given a root-relative folder, return True if nothing inside it is wanted."""
        name = rel_dir.rsplit("/", 1)[-1]
        if _builtin_ignored(name):
            return True
        if self._any is None:
            return False
        return bool(self._any.fullmatch(rel_dir) or self._any.fullmatch(rel_dir + "/"))

    def wrong_extension(self, rel_path: str) -> bool:
        """Given a root-relative file path, return True if its extension is not a video's."""
        name = rel_path[rel_path.rfind("/") + 1 :]
        dot = name.rfind(".")
        return dot <= 0 or name[dot + 1 :].lower() not in self._extensions

    def ignores_file(self, rel_path: str, *, folders_checked: bool = False) -> bool:
        """Given a root-relative file path, return True if it is not a wanted video.

        `folders_checked` says its folders already passed `ignores_dir` (a walk).
        """
        if folders_checked:
            return self.ignores_walked(rel_path[rel_path.rfind("/") + 1 :], rel_path)
        if self._wanted.fullmatch(rel_path) is None:
            return True
        return any(_builtin_ignored(s) for s in rel_path.split("/"))

    def ignores_walked(self, name: str, rel_path: str) -> bool:
        """Given the name and root-relative path of a file whose folders passed
        `ignores_dir` (a walk's), return True if it is not a wanted video."""
        dot = name.rfind(".")
        if dot <= 0 or name[dot + 1 :].lower() not in self._extensions:
            return True  # not a video's extension (or a hidden name that is one: ".mp4")
        lowered = name.lower()
        if (
            name[0] == "."
            or lowered in BUILTIN_IGNORED_NAMES
            or lowered.endswith(BUILTIN_IGNORED_SUFFIXES)
            or (self._named is not None and self._named.fullmatch(name) is not None)
        ):
            return True
        return self._by_path is not None and self._by_path.fullmatch(rel_path) is not None


def _names_a_file(pattern: str) -> bool:
    """Given a glob, return True if it is `**/NAME`: it matches a path by its last segment."""
    return pattern.startswith("**/") and "/" not in pattern[3:] and "**" not in pattern[3:]


def _builtin_covers(name_glob: str) -> bool:
    """Given the name part of a glob `**/NAME`, return True if every name it matches is
    ignored by the built-in rules anyway: hidden (`.*`), an ignored suffix (`*.part`) or
    an ignored name."""
    if name_glob.startswith("."):
        return True  # a literal leading dot: hidden
    literal = name_glob[1:] if name_glob.startswith("*") else name_glob
    if any(char in literal for char in "*?{}"):
        return False
    if name_glob.startswith("*"):
        return literal.lower().endswith(BUILTIN_IGNORED_SUFFIXES)
    return literal.lower() in BUILTIN_IGNORED_NAMES


def _alternation(globs: list[Glob]) -> re.Pattern[str] | None:
    """Given compiled globs, return one regex matching what any of them matches (None if
    there are none): one match instead of one per glob, for every file of a scan."""
    if not globs:
        return None
    patterns = [re.sub(r"\(\?P<\w+>", "(?:", g.regex.pattern) for g in globs]
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.DOTALL)


def _builtin_ignored(name: str) -> bool:
    lowered = name.lower()
    return (
        lowered.startswith(".")
        or lowered in BUILTIN_IGNORED_NAMES
        or lowered.endswith(BUILTIN_IGNORED_SUFFIXES)
    )
