"""What the metrics listener serves, read from a running engine: the gauges of a scrape
and the status page.

A scrape reads the counters the journal's triggers keep (`state_counts`), the engine's
own state and a few files under /proc; the two reads that walk rows (features per
status, the oldest queued file) are kept for SLOW_READS seconds, so a scrape costs
the same with 100 files or 100,000.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reka_sync.errors import RekaSyncError
from reka_sync.metrics import METRICS, Reading, inotify_limit, inotify_watches
from reka_sync.monitor import Monitor
from reka_sync.monitor import serve as serve_on
from reka_sync.status import controls_report, status_report

if TYPE_CHECKING:
    from reka_sync.controls import Limits
    from reka_sync.scheduler import Engine

SLOW_READS = 10.0  # seconds the row-walking reads are kept


def serve(engine: Engine, address: tuple[str, int], quiet: bool = False) -> Monitor | None:
    """Given the engine and the address, serve its metrics and status page; None if the
    address cannot be bound (logged, at debug level when `quiet`)."""
    gauges = Gauges(engine)
    engine.meter.watch_once(Scrape(gauges.read))
    return serve_on(address, engine.meter.exposition, lambda: page(engine), quiet)


class Scrape(Collector):
    """The gauges as metric families, read at each scrape."""

    def __init__(self, read: Callable[[], Reading]) -> None:
        self._read = read

    def describe(self) -> list[Metric]:
        return []  # the families are known at scrape time only; none clash with the counters

    def collect(self) -> Iterator[Metric]:
        reading = self._read()
        files = GaugeMetricFamily(
            "reka_sync_files", METRICS["reka_sync_files"][1], labels=["state"]
        )
        for state, n in sorted(reading.files.items()):
            files.add_metric([state], n)
        yield files
        features = GaugeMetricFamily(
            "reka_sync_features", METRICS["reka_sync_features"][1], labels=["feature", "status"]
        )
        for name, statuses in sorted(reading.features.items()):
            for status, n in sorted(statuses.items()):
                features.add_metric([name, status], n)
        yield features
        paused = reading.paused_seconds
        for name, value in (
            ("reka_sync_oldest_queued_age_seconds", reading.oldest_queued_age),
            ("reka_sync_uploads_in_flight", reading.in_flight),
            ("reka_sync_roots_unavailable", reading.roots_unavailable),
            ("reka_sync_journal_size_bytes", reading.journal_bytes),
            ("reka_sync_inotify_watches", reading.watches),
            ("reka_sync_inotify_watches_limit", reading.watches_limit),
            ("reka_sync_paused", 0 if paused is None else 1),
            ("reka_sync_paused_seconds", paused or 0),
            ("reka_sync_upload_max_rate_bytes_per_second", reading.max_rate),
            ("reka_sync_upload_workers_allowed", reading.workers_allowed),
            ("reka_sync_api_reachable", int(reading.api_reachable)),
        ):
            yield GaugeMetricFamily(name, METRICS[name][1], value=value)


class Gauges:
    """Reads the engine's gauges for a scrape; thread-safe."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._slow: tuple[float, dict[str, dict[str, int]], float | None] | None = None

    def read(self) -> Reading:
        """Return the gauges now."""
        engine, now = self.engine, time.time()
        journal = engine.journal
        features, oldest = self._slow_reads(now)
        limits = _limits(engine, now)
        paused = limits.pause
        return Reading(
            files={state.value: n for state, n in journal.counts().items()},
            features=features,
            oldest_queued_age=max(0.0, now - oldest) if oldest is not None else 0.0,
            in_flight=len(engine.in_flight()),
            roots_unavailable=len(journal.unavailable_roots()),
            journal_bytes=_journal_bytes(str(journal.path)),
            watches=inotify_watches() if engine.watcher is not None else 0,
            watches_limit=inotify_limit(),
            paused_seconds=max(0.0, now - paused.since) if paused is not None else None,
            max_rate=limits.max_rate,
            workers_allowed=limits.workers,
            api_reachable=not engine.vitals.reach.outage,
        )

    def _slow_reads(self, now: float) -> tuple[dict[str, dict[str, int]], float | None]:
        with self._lock:
            if self._slow is None or now - self._slow[0] >= SLOW_READS:
                journal = self.engine.journal
                self._slow = (now, journal.feature_counts(), journal.oldest_waiting())
            return self._slow[1], self._slow[2]


def page(engine: Engine) -> str:
    """Given the engine, return the status page as it is now."""
    from reka_sync.statuspage import render_error, render_page

    now = time.time()
    try:
        report: dict[str, Any] = status_report(engine.journal, now, quick=True)
    except RekaSyncError as exc:  # the page says so rather than failing the request
        return render_error(f"the journal cannot be read: {exc}")
    limits = _limits(engine, now)
    report["controls"] = controls_report(limits)
    report["in_flight"] = _live_progress(report["in_flight"], engine)
    trouble = engine.health_line()
    if trouble:
        report["trouble"] = trouble
    return render_page(report, now)


def _limits(engine: Engine, now: float) -> Limits:
    """The limits the engine's last dispatch decided (decided now if none has run yet)."""
    return engine.governor.limits or engine.governor.decide(engine.config.upload, now)


def _live_progress(in_flight: list[dict[str, Any]], engine: Engine) -> list[dict[str, Any]]:
    """The journal's progress lags by a heartbeat; this process's own uploads are exact."""
    sent = engine.in_flight()
    for job in in_flight:
        count = sent.get(job["id"]) if "id" in job else None
        if count is not None and job.get("size"):
            job["sent_bytes"] = count
            job["percent"] = round(100 * count / job["size"], 1)
    return in_flight


def _journal_bytes(path: str) -> int:
    total = 0
    for name in (path, f"{path}-wal"):
        try:
            total += os.stat(name).st_size
        except OSError:
            continue
    return total
