"""Folder-mapping rules: which group a file goes to (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reka_sync.names import text
from reka_sync.patterns import Glob, compile_glob


@dataclass(frozen=True)
class Rule:
    """One `[[groups.rules]]` entry: a glob and the group-name template it feeds."""

    match: str
    group: str


@dataclass(frozen=True)
class GroupDecision:
    """Where a file goes: `group` is None for "no group"; `rule` says who decided."""

    group: str | None
    rule_index: int | None
    reason: str


class GroupRules:
    """Ordered rules; the first match wins, `default` takes the rest."""

    def __init__(self, rules: Sequence[Rule], default: str) -> None:
        self._rules: tuple[tuple[Rule, Glob], ...] = tuple(
            (rule, compile_glob(rule.match)) for rule in rules
        )
        self._default = default.strip()

    def decide(self, rel_path: str) -> GroupDecision:
        """Given a root-relative path, return the group it belongs to and the rule that said so.

        Rules match the name as text: undecodable bytes read as U+FFFD."""
        rel_path = text(rel_path)
        for index, (rule, glob) in enumerate(self._rules):
            captures = glob.match(rel_path)
            if captures is None:
                continue
            name = rule.group.format_map(captures).strip()
            reason = f"groups.rules[{index}] match={rule.match!r}"
            return GroupDecision(name or None, index, reason)
        if self._default:
            return GroupDecision(self._default, None, "groups.default")
        return GroupDecision(None, None, "no rule matched and groups.default is empty")
