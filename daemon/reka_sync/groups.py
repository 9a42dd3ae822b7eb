"""Group names to group ids: cached in the journal, looked up by exact name, created if allowed."""

from __future__ import annotations

import threading
from collections.abc import Callable

from reka_sync.api import ApiClient
from reka_sync.errors import Conflict, ValidationFailed
from reka_sync.journal import Journal


class GroupUnavailable(ValidationFailed):
    """The group a rule names cannot be used (missing and not creatable, or over the quota)."""


class GroupResolver:
    """Finds (or creates) the group for a name; one lookup at a time."""

    def __init__(
        self, api: ApiClient, journal: Journal, create_missing: bool, clock: Callable[[], float]
    ) -> None:
        self._api = api
        self._journal = journal
        self._create_missing = create_missing
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, str] = journal.group_ids()

    def resolve(self, name: str) -> str:
        """Given a group name, return its id. Raise GroupUnavailable if it cannot be had."""
        with self._lock:
            if name in self._cache:
                return self._cache[name]
            group_id = self._lookup(name) or self._create(name)
            self._cache[name] = group_id
            self._journal.save_group(name, group_id, self._clock())
            return group_id

    def forget(self, name: str) -> None:
        """Given a group name whose id turned out stale (deleted remotely), drop it."""
        with self._lock:
            self._cache.pop(name, None)
            self._journal.forget_group(name)

    def _lookup(self, name: str) -> str | None:
        return next((g.group_id for g in self._api.list_groups() if g.name == name), None)

    def _create(self, name: str) -> str:
        if not self._create_missing:
            raise GroupUnavailable(
                404,
                f"group {name!r} does not exist and "
                "groups.create_missing is false; create it or fix the rule",
            )
        try:
            return self._api.create_group(name, {"created_by": "reka-sync"}).group_id
        except Conflict:
            found = self._lookup(name)
            if found is None:
                raise
            return found
        except ValidationFailed as exc:
            raise GroupUnavailable(
                exc.status,
                f"cannot create group {name!r}: {exc.message}; "
                "delete unused groups or change the rules",
            ) from None
