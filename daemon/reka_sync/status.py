"""What `status` and `show` print: journal facts turned into text or JSON (no I/O of its own)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from reka_sync.lifecycle import State
from reka_sync.names import shown
from reka_sync.progress import human_size

UNTIL_LIFTED = 365 * 86400.0  # a pause longer than this is a stop, lifted by hand

if TYPE_CHECKING:
    from reka_sync.controls import Limits
    from reka_sync.features import Feature
    from reka_sync.journal import HistoryEntry, Job, Journal, Replaced


def status_report(journal: Journal, now: float, quick: bool = False) -> dict[str, Any]:
    """Given the journal and the time, return counts, in-flight work, pauses and recent
    failures. The counts are the counters the journal keeps, checked against a pass over
    the rows (damage shows), or with `quick` taken as they are (the status page, refreshed
    every few seconds)."""
    counts = journal.counts() if quick else journal.counts_checked()
    checked = journal.last_check()
    in_flight = journal.jobs([State.UPLOADING, State.UPLOADED, State.FILING], limit=50)
    sent = journal.progress()
    oldest = journal.oldest_waiting()
    return {
        "journal": str(journal.path),
        "counts": {state.value: n for state, n in counts.items()},
        "total": sum(counts.values()),
        "in_flight": [_with_progress(_brief(job, now), job, sent) for job in in_flight],
        "oldest_queued_seconds": round(now - oldest, 1) if oldest is not None else None,
        "waiting": [_brief(job, now) for job in journal.jobs([State.DISCOVERED], limit=20)],
        "other_extensions": journal.other_extensions(),
        "journal_check": {"at": _iso(checked[0]), "verdict": checked[1]} if checked else None,
        "pauses": [
            {
                "kind": p.kind,
                "until": _iso(p.until),
                "seconds_left": round(p.until - now, 1),
                "reason": p.reason,
            }
            for p in journal.pauses(now)
        ],
        "recent_failures": [_brief(job, now) for job in journal.recent_failures(10)],
        "unavailable_roots": [
            {"root": root, "since": _iso(since)}
            for root, since in sorted(journal.unavailable_roots().items())
        ],
        "indexing": {
            "videos": counts[State.INDEXING],
            "features": journal.feature_counts(),
            "waiting_for_daily_cap": journal.index_held(),
            "started_today": journal.started_on(now),
        },
    }


def controls_report(limits: Limits) -> dict[str, Any]:
    """Given the limits in force, return what `status` and the status page show of them:
    the operator's pause, the schedule's window in force and the next, the cap."""
    pause, span, upcoming = limits.pause, limits.window, limits.next_window
    return {
        "paused": None
        if pause is None
        else {
            "by": pause.by,
            "since": _local(pause.since),
            "until": _local(pause.until) if pause.until is not None else None,
            "now": pause.abort,
            "reason": pause.describe(),
        },
        "held": limits.held,
        "window": None
        if span is None
        else {
            "name": span.window.name,
            "workers": span.window.workers,
            "max_rate": span.window.max_rate,
            "ends": _local(span.end) if math.isfinite(span.end) else None,
        },
        "next_window": None
        if upcoming is None
        else {"name": upcoming.window.name, "starts": _local(upcoming.start)},
        "max_rate": limits.max_rate,
        "workers": limits.workers,
    }


def _brief(job: Job, now: float) -> dict[str, Any]:
    return {
        "id": job.id,
        "path": shown(job.path),
        "state": job.state.value,
        "attempts": job.attempts,
        "video_id": job.video_id,
        "group": job.group_name,
        "error": job.last_error,
        "age_seconds": round(now - job.created_at, 1),
    }


def _with_progress(
    brief: dict[str, Any], job: Job, sent: dict[int, tuple[int, float]]
) -> dict[str, Any]:
    if job.id in sent:
        count, _ = sent[job.id]
        brief["sent_bytes"] = count
        brief["size"] = job.size
        brief["percent"] = round(100 * count / job.size, 1) if job.size else 100.0
    return brief


def format_status(report: dict[str, Any]) -> str:
    """Given a status report, return it as lines for a person."""
    lines = [f"journal: {report['journal']}  ({report['total']} files)"]
    counts = report["counts"]
    lines.append(
        "  ".join(f"{state}={counts[state]}" for state in counts if counts[state])
        or "no files recorded yet"
    )
    lines.extend(_controls_lines(report.get("controls")))
    for pause in report["pauses"]:
        until = (
            "until lifted"  # a stop (deletions at their cap) waits for the operator
            if pause["seconds_left"] > UNTIL_LIFTED
            else f"until {pause['until']} ({pause['seconds_left']:.0f}s)"
        )
        lines.append(f"PAUSED {pause['kind']} {until}: {pause['reason']}")
    for root in report["unavailable_roots"]:
        lines.append(
            f"UNAVAILABLE root {root['root']} since {root['since']} (not mounted?); "
            "its files wait, they are not missing"
        )
    check = report["journal_check"]
    if check is not None and check["verdict"] != "ok":
        lines.append(f"JOURNAL DAMAGED (checked {check['at']}): {check['verdict']}")
    if report["other_extensions"]:
        lines.append(
            f"{report['other_extensions']} files under the roots are not videos by their "
            "extension (watch.extensions); not uploaded"
        )
    waiting = [j for j in report["waiting"] if j["error"]]
    if waiting:
        lines.append("waiting to be complete:")
        lines.extend(f"  {j['path']}: {j['error']}" for j in waiting)
    lines.extend(_indexing_lines(report["indexing"]))
    if counts.get("removed"):
        lines.append(
            f"{counts['removed']} videos were removed remotely (deleted in Reka, or expired on a"
            " Developer key); not uploaded again unless upload.reupload_removed = true or"
            " `reka-sync reconcile --apply --reupload-missing`"
        )
    if counts.get("deleted"):
        lines.append(
            f"{counts['deleted']} uploaded files were deleted locally (watch.on_delete decides"
            " what becomes of their videos; `show PATH` tells)"
        )
    if report["oldest_queued_seconds"] is not None:
        lines.append(f"oldest queued file waits {report['oldest_queued_seconds']:.0f}s")
    if report["in_flight"]:
        lines.append("in flight:")
        lines.extend(_in_flight_line(j) for j in report["in_flight"])
    if report["recent_failures"]:
        lines.append("recent failures:")
        lines.extend(f"  {j['path']}: {j['error']}" for j in report["recent_failures"])
    return "\n".join(lines)


def _controls_lines(controls: dict[str, Any] | None) -> list[str]:
    if controls is None:
        return []
    lines = []
    paused = controls["paused"]
    if paused is not None:
        now = "; uploads in flight were stopped" if paused["now"] else ""
        lines.append(f"PAUSED: uploads {paused['reason']}{now} (`reka-sync resume` lifts it)")
    window = controls["window"]
    if window is not None:
        workers, rate = window["workers"], window["max_rate"]
        allows = [
            f"workers {workers}" if workers is not None else "",
            "" if rate is None else f"max_rate {human_size(rate)}/s" if rate else "no cap",
        ]
        what = ", ".join(a for a in allows if a)
        until = f"until {window['ends']}" if window["ends"] else "at all times"
        lines.append(f"schedule: window {window['name']} in force {until} ({what})")
    if controls["next_window"] is not None:
        upcoming = controls["next_window"]
        lines.append(f"schedule: next window {upcoming['name']} starts {upcoming['starts']}")
    if controls["held"] and paused is None:
        lines.append(f"WAITING: {controls['held']}")
    if controls["max_rate"]:
        lines.append(f"bandwidth cap: {human_size(controls['max_rate'])}/s for all uploads")
    return lines


def _indexing_lines(indexing: dict[str, Any]) -> list[str]:
    lines = []
    for name, statuses in sorted(indexing["features"].items()):
        counted = ", ".join(f"{status} {n}" for status, n in sorted(statuses.items()))
        lines.append(f"feature {name}: {counted}")
    held = indexing["waiting_for_daily_cap"]
    if held:
        lines.append(
            f"{held} videos wait for the daily indexing cap (index.max_per_day; "
            f"{indexing['started_today']} started today); they start after 00:00 UTC"
        )
    return lines


def _in_flight_line(job: dict[str, Any]) -> str:
    sent = f" {job['percent']:.0f}% of {human_size(job['size'])}" if "percent" in job else ""
    return f"  {job['state']:<10}{sent} {job['path']} (attempt {job['attempts']})"


def show_report(
    job: Job,
    history: list[HistoryEntry],
    replaced: list[Replaced] | None = None,
    features: list[Feature] | None = None,
) -> dict[str, Any]:
    """Given a job, its history, the videos of its earlier contents and the features of
    its video, return everything `show` tells."""
    data = asdict(job)
    data["state"] = job.state.value
    data["path"], data["rel_path"] = shown(job.path), shown(job.rel_path)
    data["history"] = [
        {
            "at": _iso(h.at),
            "event": h.event,
            "from": h.from_state,
            "to": h.to_state,
            **({"detail": h.detail} if h.detail else {}),
        }
        for h in history
    ]
    data["superseded"] = [
        {
            "video_id": r.video_id,
            "upload_key": r.upload_key,
            "since": _iso(r.since),
            "outcome": r.outcome or "pending: deleted once the new content is stored and filed",
        }
        for r in replaced or []
    ]
    data["features"] = [
        {
            "name": f.name,
            "status": f.status,
            "attempts": f.attempts,
            "error": f.error,
            "triggered_at": _iso(f.triggered_at) if f.triggered_at else None,
        }
        for f in features or []
    ]
    return data


def format_show(report: dict[str, Any]) -> str:
    """Given a show report, return it as lines for a person."""
    keys = (
        "path",
        "state",
        "size",
        "attempts",
        "video_id",
        "group_name",
        "group_id",
        "digest",
        "upload_key",
        "last_error",
    )
    lines = [f"{key:>11}: {report[key]}" for key in keys if report.get(key) is not None]
    for pause in report.get("pauses", []):
        lines.append(f"     paused: {pause['kind']}: {pause['reason']}")
    for f in report.get("features", []):
        error = f": {f['error']}" if f["error"] else ""
        lines.append(f"    feature: {f['name']} {f['status']} (attempts {f['attempts']}){error}")
    for old in report.get("superseded", []):
        lines.append(f" superseded: {old['video_id'] or old['upload_key']} ({old['outcome']})")
    lines.append("    history:")
    for entry in report["history"]:
        detail = " ".join(f"{k}={shown(str(v))}" for k, v in entry.get("detail", {}).items())
        lines.append(
            f"  {entry['at']}  {entry['event']:<12} {entry['from'] or '-':>10} -> "
            f"{entry['to']:<10} {detail}".rstrip()
        )
    return "\n".join(lines)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _local(epoch: float) -> str:
    """Given seconds since the epoch, return local time in ISO 8601 with its offset (the
    schedule's windows are in local time)."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")
