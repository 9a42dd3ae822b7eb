"""Prometheus metrics: the counters the engine keeps, and the gauges read at scrape time.

Every metric has the `reka_sync_` prefix; counters end in `_total`, durations are in
seconds and sizes in bytes; no label ever names a file, so the number of series stays
bounded whatever the library holds. The full list is `METRIC_NAMES` (the alert rules,
the dashboard and the tests check their expressions against it).

prometheus_client is imported by the first Meter that keeps its counts: a run that
serves no metrics (a backfill without --metrics-listen) never pays for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from reka_sync import __version__
from reka_sync.outcomes import Kind

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.registry import Collector

# name -> (type, help). Histograms list their base name.
METRICS: dict[str, tuple[str, str]] = {
    "reka_sync_info": ("gauge", "Always 1; the version label says which reka-sync runs."),
    "reka_sync_files": ("gauge", "Files in the journal, by state."),
    "reka_sync_uploads_started_total": ("counter", "Upload sends begun."),
    "reka_sync_uploads_succeeded_total": ("counter", "Uploads the API accepted (202)."),
    "reka_sync_uploads_failed_total": (
        "counter",
        "Upload sends that did not end with the video accepted, by error class.",
    ),
    "reka_sync_upload_retries_total": ("counter", "Failed upload tries that will be retried."),
    "reka_sync_uploaded_bytes_total": ("counter", "File bytes sent in accepted uploads."),
    "reka_sync_upload_duration_seconds": ("histogram", "Time from send to the API's answer."),
    "reka_sync_upload_size_bytes": ("histogram", "Size of the files uploaded."),
    "reka_sync_uploads_in_flight": ("gauge", "Uploads being sent now."),
    "reka_sync_oldest_queued_age_seconds": (
        "gauge",
        "Age of the oldest file waiting to be uploaded (0 when none waits).",
    ),
    "reka_sync_last_upload_success_timestamp_seconds": (
        "gauge",
        "When the API last accepted an upload from this process (0: not yet).",
    ),
    "reka_sync_rate_limit_pauses_total": ("counter", "429 answers that paused requests."),
    "reka_sync_rate_limit_pause_seconds_total": (
        "counter",
        "Seconds of pause the 429 answers asked for.",
    ),
    "reka_sync_rate_limit_limit": ("gauge", "x-ratelimit-requests-limit, as last seen."),
    "reka_sync_rate_limit_remaining": ("gauge", "x-ratelimit-requests-remaining, as last seen."),
    "reka_sync_rate_limit_reset_seconds": ("gauge", "x-ratelimit-requests-reset, as last seen."),
    "reka_sync_polls_total": ("counter", "Status polls of uploaded videos (requests)."),
    "reka_sync_features": ("gauge", "Features of current videos, by feature and status."),
    "reka_sync_rescans_total": ("counter", "Rescans of the roots."),
    "reka_sync_rescan_duration_seconds": ("histogram", "Time a rescan of all roots took."),
    "reka_sync_inotify_watches": ("gauge", "inotify watches this process placed."),
    "reka_sync_inotify_watches_limit": ("gauge", "fs.inotify.max_user_watches."),
    "reka_sync_roots_unavailable": ("gauge", "Watch roots that are not there (unmounted?)."),
    "reka_sync_journal_size_bytes": ("gauge", "Size of the journal file and its WAL."),
    "reka_sync_paused": ("gauge", "1 while an operator's pause holds uploads back."),
    "reka_sync_paused_seconds": ("gauge", "How long the operator's pause has lasted (0: none)."),
    "reka_sync_upload_max_rate_bytes_per_second": (
        "gauge",
        "Upload bandwidth cap in force (0: no cap).",
    ),
    "reka_sync_upload_workers_allowed": (
        "gauge",
        "Uploads that may run at once now (the schedule's window, else upload.workers).",
    ),
    "reka_sync_api_reachable": ("gauge", "0 while the API is unreachable (an outage), else 1."),
}
METRIC_NAMES = tuple(METRICS)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
SIZE_BUCKETS = tuple(float(4**n * 1024) for n in range(2, 13))  # 16 KiB .. 16 GiB
RESCAN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


@dataclass(frozen=True)
class Reading:
    """The gauges, read at scrape time from the journal and the engine."""

    files: dict[str, int]
    features: dict[str, dict[str, int]]
    oldest_queued_age: float
    in_flight: int
    roots_unavailable: int
    journal_bytes: int
    watches: int
    watches_limit: int
    paused_seconds: float | None  # None: not paused by the operator
    max_rate: int
    workers_allowed: int
    api_reachable: bool


class Meter:
    """The counters and histograms the engine keeps as things happen; thread-safe.

    Not `kept`: every update is dropped (nothing will read them).
    """

    started: Counter
    succeeded: Counter
    failed: Counter
    retries: Counter
    duration: Histogram
    size: Histogram
    last_success: Gauge
    pauses: Counter
    pause_seconds: Counter
    limit: Gauge
    remaining: Gauge
    reset: Gauge
    polls: Counter
    rescans: Counter
    rescan_seconds: Histogram
    # (`bytes` too, typed where `_keep` sets it: here its name would hide the builtin)

    def __init__(self, kept: bool = True) -> None:
        self.registry: CollectorRegistry | None = None
        self._gauges: Collector | None = None
        if kept:
            self._keep()
        else:
            self._drop()

    def _keep(self) -> None:
        import prometheus_client
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created`
        self.registry = r = CollectorRegistry(auto_describe=True)

        def counter(name: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name.removesuffix("_total"), METRICS[name][1], labels, registry=r)

        def histogram(name: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, METRICS[name][1], buckets=buckets, registry=r)

        def gauge(name: str) -> Gauge:
            return Gauge(name, METRICS[name][1], registry=r)

        self.started = counter("reka_sync_uploads_started_total")
        self.succeeded = counter("reka_sync_uploads_succeeded_total")
        self.failed = counter("reka_sync_uploads_failed_total", ("error_class",))
        for kind in Kind:  # every class present from the start, so rate() sees its first one
            if kind is not Kind.LOST:
                self.failed.labels(error_class=kind.value)
        self.retries = counter("reka_sync_upload_retries_total")
        self.bytes = counter("reka_sync_uploaded_bytes_total")
        self.duration = histogram("reka_sync_upload_duration_seconds", DURATION_BUCKETS)
        self.size = histogram("reka_sync_upload_size_bytes", SIZE_BUCKETS)
        self.last_success = gauge("reka_sync_last_upload_success_timestamp_seconds")
        self.pauses = counter("reka_sync_rate_limit_pauses_total")
        self.pause_seconds = counter("reka_sync_rate_limit_pause_seconds_total")
        self.limit = gauge("reka_sync_rate_limit_limit")
        self.remaining = gauge("reka_sync_rate_limit_remaining")
        self.reset = gauge("reka_sync_rate_limit_reset_seconds")
        self.polls = counter("reka_sync_polls_total")
        self.rescans = counter("reka_sync_rescans_total")
        self.rescan_seconds = histogram("reka_sync_rescan_duration_seconds", RESCAN_BUCKETS)
        info = Gauge("reka_sync_info", METRICS["reka_sync_info"][1], ("version",), registry=r)
        info.labels(version=__version__).set(1)

    def _drop(self) -> None:
        idle = cast(Any, _Idle())
        self.started = self.succeeded = self.failed = self.retries = self.bytes = idle
        self.duration = self.size = self.rescan_seconds = idle
        self.last_success = self.limit = self.remaining = self.reset = idle
        self.pauses = self.pause_seconds = self.polls = self.rescans = idle

    def uploaded(self, size: int, seconds: float, now: float) -> None:
        """Given an accepted upload's size, how long it took and the time, count it."""
        self.succeeded.inc()
        self.bytes.inc(size)
        self.duration.observe(seconds)
        self.size.observe(size)
        self.last_success.set(now)

    def rate_limits(self, limit: int | None, remaining: int | None, reset: float | None) -> None:
        """Given the rate-limit headers of an answer, keep those it had."""
        for gauge, value in ((self.limit, limit), (self.remaining, remaining), (self.reset, reset)):
            if value is not None:
                gauge.set(value)

    def watch_once(self, gauges: Collector) -> None:
        """Given the collector of the gauges, have every scrape call it, in place of any
        earlier one."""
        assert self.registry is not None, "a Meter that keeps nothing serves nothing"
        if self._gauges is not None:
            self.registry.unregister(self._gauges)
        self._gauges = gauges
        self.registry.register(gauges)

    def exposition(self) -> bytes:
        """Return the metrics in Prometheus' text format."""
        from prometheus_client import generate_latest

        assert self.registry is not None, "a Meter that keeps nothing serves nothing"
        return generate_latest(self.registry)


class _Idle:
    """Stands in for every metric of a Meter that keeps nothing."""

    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def labels(self, **labels: str) -> _Idle:
        return self


def inotify_watches() -> int:
    """Return how many inotify watches this process holds (0 where /proc cannot tell)."""
    total = 0
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
                total += sum(1 for line in info if line.startswith(b"inotify wd:"))
        except OSError:
            continue  # closed meanwhile
    return total


def inotify_limit() -> int:
    """Return fs.inotify.max_user_watches (0 where it cannot be read)."""
    try:
        with open("/proc/sys/fs/inotify/max_user_watches", "rb") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return 0
