"""Folder-mapping rules: which group a file goes to, and which features it needs (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reka_sync.names import text
from reka_sync.patterns import Glob, compile_glob


@dataclass(frozen=True)
class Rule:
    """One `[[groups.rules]]` entry: a glob, the group-name template it feeds, the features
    its videos need (their dependencies are added at run time)."""

    match: str
    group: str
    features: tuple[str, ...] = ()
    after_upload: str | None = None  # keep | delete | move:/dir; None: [upload] after_upload


@dataclass(frozen=True)
class GroupDecision:
    """Where a file goes: `group` is None for "no group"; `rule` says who decided."""

    group: str | None
    rule_index: int | None
    reason: str
    features: tuple[str, ...] = ()
    after: str = "keep"  # what becomes of the file once its video is stored: keep, delete, move:DIR


class GroupRules:
    """Ordered rules; the first match wins, `default` (and `default_features`) take the rest."""

    def __init__(
        self,
        rules: Sequence[Rule],
        default: str,
        default_features: Sequence[str] = (),
        default_after: str = "keep",
    ) -> None:
        self._rules: tuple[tuple[Rule, Glob], ...] = tuple(
            (rule, compile_glob(rule.match)) for rule in rules
        )
        self._default = default.strip()
        self._features = tuple(default_features)
        self._after = default_after
        self.any_features = bool(self._features) or any(r.features for r in rules)
        self.any_after = default_after != "keep" or any(
            r.after_upload not in (None, "keep") for r in rules
        )

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
            after = rule.after_upload or self._after
            return GroupDecision(name or None, index, reason, rule.features, after)
        if self._default:
            return GroupDecision(self._default, None, "groups.default", self._features, self._after)
        reason = "no rule matched and groups.default is empty"
        return GroupDecision(None, None, reason, self._features, self._after)

    def after(self, rel_path: str) -> str:
        """Given a root-relative path, return what becomes of the file once its video is
        stored and filed: keep, delete or move:DIR."""
        return self.decide(rel_path).after if self.any_after else "keep"

    def features(self, rel_path: str) -> tuple[str, ...]:
        """Given a root-relative path, return the features its video needs."""
        return self.decide(rel_path).features if self.any_features else ()
