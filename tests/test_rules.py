"""Globs, ignore rules and group rules: pure functions, tested directly."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reka_sync.errors import GlobError
from reka_sync.patterns import (
    BUILTIN_IGNORED_NAMES,
    BUILTIN_IGNORED_SUFFIXES,
    IgnoreRules,
    compile_glob,
)
from reka_sync.rules import GroupRules, Rule


@pytest.mark.parametrize(
    ("pattern", "path", "captures"),
    [
        ("cameras/{camera}/**", "cameras/front/2024/01/a.mp4", {"camera": "front"}),
        ("cameras/{camera}/**", "cameras/front/a.mp4", {"camera": "front"}),
        ("**/*.mp4", "a.mp4", {}),
        ("**/*.mp4", "x/y/a.mp4", {}),
        ("shows/{show}/season-?/*", "shows/Foo/season-1/e1.mkv", {"show": "Foo"}),
        ("a/**/b/{name}", "a/b/c.mp4", {"name": "c.mp4"}),
        ("a/**/b/{name}", "a/x/y/b/c.mp4", {"name": "c.mp4"}),
    ],
)
def test_globs_that_match(pattern: str, path: str, captures: dict[str, str]) -> None:
    assert compile_glob(pattern).match(path) == captures


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("cameras/{camera}/**", "cameras/a.mp4"),
        ("cameras/{camera}/**", "other/front/a.mp4"),
        ("*.mp4", "x/a.mp4"),
        ("a.mp4", "a_mp4"),
    ],
)
def test_globs_that_do_not_match(pattern: str, path: str) -> None:
    assert compile_glob(pattern).match(path) is None


@pytest.mark.parametrize("pattern", ["", "/abs/**", "a**", "x/{a}/{a}", "x/{a"])
def test_malformed_globs_are_refused(pattern: str) -> None:
    with pytest.raises(GlobError):
        compile_glob(pattern)


def test_first_matching_rule_wins_and_default_takes_the_rest() -> None:
    rules = GroupRules(
        [
            Rule("cameras/{camera}/**", "Camera {camera}"),
            Rule("cameras/**", "All cameras"),
            Rule("trash/**", ""),
        ],
        default="Inbox",
    )
    front = rules.decide("cameras/front/x.mp4")
    assert (front.group, front.rule_index) == ("Camera front", 0)
    assert rules.decide("cameras/x.mp4").group == "All cameras"
    assert rules.decide("misc/x.mp4").group == "Inbox"
    assert rules.decide("misc/x.mp4").reason == "groups.default"
    assert rules.decide("trash/x.mp4").group is None
    assert GroupRules([], default="").decide("x.mp4").group is None


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("a.mp4", False),
        ("deep/er/A.MOV", False),
        ("a.txt", True),
        ("noext", True),
        (".hidden.mp4", True),
        ("x/.cache/a.mp4", True),
        ("a.mp4.part", True),
        ("a.mp4.crdownload", True),
        ("@eaDir/a.mp4", True),
        ("x/#recycle/a.mp4", True),
        ("x/.stversions/a.mp4", True),
        ("x/Thumbs.db", True),
        ("raw/a.mp4", True),
    ],
)
def test_ignore_rules(path: str, ignored: bool) -> None:
    rules = IgnoreRules(["raw/**"], ["mp4", "mov"])
    assert rules.ignores_file(path) is ignored


def _ignored_name(name: str, extensions: frozenset[str]) -> bool:
    """The name test as it reads in words (what `IgnoreRules` does with one regex)."""
    dot = name.rfind(".")
    lowered = name.lower()
    return (
        dot <= 0
        or name[dot + 1 :].lower() not in extensions
        or lowered.startswith(".")
        or lowered in BUILTIN_IGNORED_NAMES
        or lowered.endswith(BUILTIN_IGNORED_SUFFIXES)
    )


_NAME_PARTS = st.sampled_from(
    [".", "mp4", "MP4", "mkv", "part", "~", "db", "Thumbs.db", "a", "b", "tmp", "é", "\n", " "]
)


GLOBS = ["raw/**", "**/*.tmp.mp4", "a/{x}/b.mkv"]


WALKED_GLOBS = [*GLOBS, "**/.*", "**/{n}.part", "**/@eaDir/**", "**/c?.mkv", "x/**/q.mp4"]
FOLDERS = ["", "x/", "a/b/", "raw/", "raw/a/", "a/q/", "x/y/", "@eaDir/", "a/.h/"]


@given(
    st.lists(_NAME_PARTS, max_size=6).map("".join),
    st.sampled_from(["", "x/", "a/b/", "raw/", "raw/a/", "a/q/"]),
    st.booleans(),
)
@example("a.mp4", "raw/", True)  # a folder glob: the file is ignored with its folder
@example("b.mkv", "a/q/", True)
def test_the_one_regex_file_test_says_what_the_words_say(
    name: str, folder: str, with_globs: bool
) -> None:
    extensions = frozenset({"mp4", "mkv", "db"})
    globs = GLOBS if with_globs else []
    rules = IgnoreRules(globs, extensions)
    path = folder + name
    by_glob = any(compile_glob(g).match(path) is not None for g in globs)
    expected = _ignored_name(name, extensions) or by_glob
    assert rules.ignores_file(path) is expected, path


@given(
    st.lists(_NAME_PARTS, max_size=6).map("".join),
    st.sampled_from(FOLDERS),
    st.lists(st.sampled_from(WALKED_GLOBS), max_size=4),
)
@example("a.mp4", "raw/", ["raw/**"])
@example(".a.mp4", "x/", ["**/.*"])
@example("c1.mkv", "a/b/", ["**/c?.mkv"])
def test_a_walked_file_is_tested_on_its_name_as_its_whole_path_would_be(
    name: str, folder: str, globs: list[str]
) -> None:
    """A walk tests a file on its name (and only the globs that need its folders on its
    path) once its folders passed `ignores_dir`: the same answer as the whole path's."""
    rules = IgnoreRules(globs, ["mp4", "mkv", "db"])
    folders = folder.rstrip("/").split("/") if folder else []
    walked = not any(rules.ignores_dir("/".join(folders[: i + 1])) for i in range(len(folders)))
    path = folder + name
    if walked:
        assert rules.ignores_walked(name, path) is rules.ignores_file(path), path
    else:  # never walked into: the whole path is ignored as well
        assert rules.ignores_file(path), path


def test_ignored_folders_are_pruned() -> None:
    rules = IgnoreRules(["**/@eaDir/**", "raw/**"], ["mp4"])
    assert rules.ignores_dir("x/@eaDir")
    assert rules.ignores_dir("raw")
    assert rules.ignores_dir(".git")
    assert not rules.ignores_dir("cameras/front")


def test_a_walk_started_inside_an_ignored_tree_finds_nothing(tmp_path) -> None:
    from reka_sync.scanner import walk

    inner = tmp_path / "x" / "#recycle" / "sub"
    inner.mkdir(parents=True)
    (inner / "a.mp4").write_bytes(b"x")
    (tmp_path / "x" / "b.mp4").write_bytes(b"x")
    rules = IgnoreRules([], ["mp4"])
    assert list(walk(tmp_path, rules, inner)) == []
    assert [s.rel_path for s in walk(tmp_path, rules)] == ["x/b.mp4"]
    assert [s.rel_path for s in walk(tmp_path, rules, tmp_path / "x")] == ["x/b.mp4"]
