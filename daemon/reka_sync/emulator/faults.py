"""Faults on demand and the daily upload quota of the emulator.

A fault is ``{"kind": K, "rate": 0..1, "count": N or null, "scope": "upload"|"all",
"seconds": S}``. Kinds:

* ``server_error``: answer 500 ``server_error`` (an upload's body is read first)
* ``rate_limit``: answer 429 ``rate_limit_error`` with ``retry-after: S``
* ``latency``: wait S seconds before answering
* ``slow_body``: read an upload's body at most ``bytes_per_second`` (a slow link)
* ``drop_mid_body``: close the connection after reading half an upload's body
* ``drop_after_store``: store the upload, then close the connection without answering
* ``html_after_store``, ``truncated_after_store``, ``no_id_after_store``: store the
  upload, then answer 202 with an HTML page, a JSON body cut short, or JSON without
  ``video_id`` (a proxy or a broken server in front of a working store)
* ``gateway_after_store``: store the upload, then answer 502 with a gateway's HTML page
* ``garbled_reply``: answer any other request 200 with JSON cut short
* ``processing_failure``: the upload ends ``failed`` with an ``error``
* ``feature_failure``: a feature run (``POST /v2/videos/{id}/features/{feature}``
  that starts one) ends ``failed`` instead of ``ready``; ``rate`` is the share of
  runs that fail, drawn when the run starts (its scope is always ``all``)
* ``garbled_after_trigger``: a trigger takes effect (a run starts, or not, as it
  would), then its answer is 200 with JSON cut short: the case where a client that
  triggers again blindly pays twice (its scope is always ``all``)

Faults with scope ``all`` (the default of ``server_error``, ``rate_limit``,
``latency`` and ``garbled_reply``) hit every API endpoint: videos, groups, and
the feature catalog, plan and trigger endpoints alike. ``count`` caps how often
a fault fires (null: no cap); ``param`` (e.g. ``"ids"``) makes it fire only on
requests with that query parameter (the status polls, not a full listing). Draws
come from one seeded random generator, so a seed makes a run repeatable.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

KINDS = (
    "server_error",
    "rate_limit",
    "latency",
    "slow_body",
    "drop_mid_body",
    "drop_after_store",
    "html_after_store",
    "truncated_after_store",
    "no_id_after_store",
    "gateway_after_store",
    "garbled_reply",
    "processing_failure",
    "feature_failure",
    "garbled_after_trigger",
)
AFTER_STORE = (
    "drop_after_store",
    "html_after_store",
    "truncated_after_store",
    "no_id_after_store",
    "gateway_after_store",
)
UPLOAD_ONLY = ("slow_body", "drop_mid_body", *AFTER_STORE, "processing_failure")
DAY = 86400.0


@dataclass
class Fault:
    kind: str
    rate: float = 1.0
    count: int | None = None
    scope: str = "all"
    seconds: float = 1.0
    bytes_per_second: float = 1_000_000.0
    param: str | None = None  # fires only on requests with this query parameter (e.g. ids)
    fired: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(KINDS)}")
        scope = data.get("scope", "upload" if kind in UPLOAD_ONLY else "all")
        if scope not in ("upload", "all"):
            raise ValueError("fault scope must be 'upload' or 'all'")
        if kind == "feature_failure" and scope != "all":
            raise ValueError("feature_failure applies to feature runs: its scope is 'all'")
        rate = float(data.get("rate", 1.0))
        if not 0 <= rate <= 1:
            raise ValueError("fault rate must be between 0 and 1")
        count = data.get("count")
        return cls(
            kind,
            rate,
            None if count is None else int(count),
            scope,
            float(data.get("seconds", 1.0)),
            float(data.get("bytes_per_second", 1_000_000.0)),
            None if data.get("param") is None else str(data["param"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rate": self.rate,
            "count": self.count,
            "scope": self.scope,
            "seconds": self.seconds,
            "bytes_per_second": self.bytes_per_second,
            "param": self.param,
            "fired": self.fired,
        }


class Faults:
    """The faults in force; `draw` decides, under a lock, whether one fires now."""

    def __init__(self, faults: list[Fault] | None = None, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._faults = list(faults or [])

    def replace(self, faults: list[Fault], seed: int | None) -> None:
        with self._lock:
            self._faults = faults
            if seed is not None:
                self._random.seed(seed)

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_json() for f in self._faults]

    def draw(self, kind: str, is_upload: bool, params: Collection[str] = ()) -> Fault | None:
        """Given a fault kind, whether the request is an upload and its query parameters,
        return the fault that fires."""
        with self._lock:
            for fault in self._faults:
                if fault.kind != kind or (fault.scope == "upload" and not is_upload):
                    continue
                if fault.param is not None and fault.param not in params:
                    continue
                if fault.count is not None and fault.fired >= fault.count:
                    continue
                if self._random.random() < fault.rate:
                    fault.fired += 1
                    return fault
        return None


class Quota:
    """A per-key daily quota on uploads, with the documented rate-limit headers."""

    def __init__(self, per_day: int | None) -> None:
        self.per_day = per_day
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def headers(self, owner: str, now: float) -> dict[str, str]:
        """Given a key and the time, return the x-ratelimit headers for a response."""
        with self._lock:
            start, used = self._window(owner, now)
        limit = self.per_day if self.per_day is not None else 1_000_000
        return {
            "x-ratelimit-requests-limit": str(limit),
            "x-ratelimit-requests-remaining": str(max(0, limit - used)),
            "x-ratelimit-requests-reset": str(int(start + DAY - now)),
            "retry-after": "0",
        }

    def take(self, owner: str, now: float) -> float | None:
        """Given a key, count one upload; return seconds until reset if the quota is spent."""
        with self._lock:
            start, used = self._window(owner, now)
            if self.per_day is not None and used >= self.per_day:
                return start + DAY - now
            self._windows[owner] = (start, used + 1)
            return None

    def _window(self, owner: str, now: float) -> tuple[float, int]:
        start, used = self._windows.get(owner, (now, 0))
        if now - start >= DAY:
            start, used = now, 0
        self._windows[owner] = (start, used)
        return start, used
