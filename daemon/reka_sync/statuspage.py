"""The read-only HTML status page served at `/`: a status report turned into one HTML5 document.

Pure functions (no I/O, no clock: the time comes in as `now`). The page is plain server-rendered
HTML with inline CSS, no JavaScript, no forms and no links that change anything; it reloads
itself every 5 seconds and is laid out for a phone 390 px wide. Every string taken from the
report is escaped with `html.escape` (file names may hold `<`, quotes or `\\xNN` escapes).
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime
from typing import Any

from reka_sync.progress import human_size

REFRESH_SECONDS = 5
UNTIL_LIFTED = 365 * 86400.0  # a pause longer than this is a stop, lifted by hand (as in status)

_CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;padding:12px;background:#fff;color:#111;
 font:18px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 overflow-wrap:anywhere}
main{max-width:46rem;margin:0 auto}
h1{font-size:30px;margin:0 0 8px;padding:8px 12px;border-left:10px solid;border-radius:4px}
h1.ok{background:#dcf3dd;color:#0d4a12;border-color:#1b6e20}
h1.paused{background:#ffe9b8;color:#5c3b00;border-color:#c77c00}
h1.problem{background:#fde0e4;color:#8a0018;border-color:#b00020}
h2{font-size:22px;margin:22px 0 8px;border-bottom:2px solid #ddd;padding-bottom:2px}
ul{margin:0;padding-left:20px}
li{margin:0 0 10px}
p{margin:0 0 8px}
table{border-collapse:collapse;width:100%}
td{padding:4px 6px;border-bottom:1px solid #eee;vertical-align:baseline}
td.n{font-size:28px;font-weight:700;text-align:right;width:40%;font-variant-numeric:tabular-nums}
tr.total td{border-top:2px solid #111;border-bottom:0}
.path{font-family:"DejaVu Sans Mono",ui-monospace,monospace;font-size:17px;word-break:break-all}
.bar{height:18px;background:#e6e6e6;border-radius:4px;overflow:hidden;margin:4px 0}
.fill{height:100%;background:#1565c0}
.note{color:#444}
.err{color:#b00020}
.held{color:#5c3b00;font-weight:700}
footer{margin-top:24px;color:#444;font-size:16px}
"""


def render_page(report: dict[str, Any], now: float) -> str:
    """Given a status report (with an optional `controls` key) and the time, return the
    status page as a complete HTML5 document."""
    controls: dict[str, Any] | None = report.get("controls")
    sections = [
        _headline(report, controls),
        _counts(report),
        _in_flight(report.get("in_flight", []), report.get("oldest_queued_seconds")),
        _paused(controls, now),
        _api_pauses(report.get("pauses", [])),
        _schedule(controls, now),
        _roots(report.get("unavailable_roots", [])),
        _failures(report.get("recent_failures", [])),
        _waiting(report.get("waiting", [])),
        _indexing(report.get("indexing")),
        _journal(report),
    ]
    footer = (
        f"<footer><p>Page as of <b>{_clock(now)}</b>; it reloads every {REFRESH_SECONDS} s.</p>"
        f'<p>Journal: <span class="path">{_e(report.get("journal", ""))}</span></p></footer>'
    )
    return _document("reka-sync status", "".join(s for s in sections if s) + footer)


def render_error(message: str) -> str:
    """Given why the journal could not be read, return an HTML5 page that says so."""
    body = (
        '<h1 class="problem">JOURNAL UNREADABLE</h1>'
        "<p>The status cannot be shown: the journal could not be read.</p>"
        f'<p class="err">{_e(message)}</p>'
        f"<footer><p>This page tries again every {REFRESH_SECONDS} s.</p></footer>"
    )
    return _document("reka-sync status: journal unreadable", body)


def problems(report: dict[str, Any]) -> list[str]:
    """Given a status report, return one short line for each thing that needs a person."""
    found = []
    roots = report.get("unavailable_roots", [])
    if roots:
        found.append(f"{len(roots)} watch root{_s(len(roots))} unavailable")
    failed = report.get("counts", {}).get("failed", 0)
    if failed:
        found.append(f"{failed} file{_s(failed)} failed")
    check = report.get("journal_check")
    if check is not None and check.get("verdict") != "ok":
        found.append("journal damaged")
    pauses = report.get("pauses", [])
    if pauses:
        kinds = ", ".join(str(p.get("kind", "?")) for p in pauses)
        found.append(f"API requests paused ({kinds})")
    return found


def _document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _headline(report: dict[str, Any], controls: dict[str, Any] | None) -> str:
    found = problems(report)
    controls = controls or {}
    held = controls.get("held")  # why no upload starts: a pause, or a window allowing none
    if controls.get("paused") is not None or held:
        css, word = "paused", "PAUSED"
    elif found:
        css, word = "problem", "PROBLEMS"
    else:
        css, word = "ok", "OK"
    why = f'<p class="held">{_e(held)}</p>' if held else ""
    lines = "".join(f"<li>{_e(line)}</li>" for line in found)
    listed = f'<ul class="err">{lines}</ul>' if found else ""
    return f'<h1 class="{css}">{word}</h1>{why}{listed}'


def _counts(report: dict[str, Any]) -> str:
    counts: dict[str, int] = report.get("counts", {})
    rows = "".join(
        f'<tr><td>{_e(state)}</td><td class="n">{n:,}</td></tr>' for state, n in counts.items() if n
    )
    total = int(report.get("total", sum(counts.values())))
    return (
        f"<h2>Files</h2><table>{rows}"
        f'<tr class="total"><td>total</td><td class="n">{total:,}</td></tr></table>'
    )


def _in_flight(jobs: list[dict[str, Any]], oldest: float | None) -> str:
    waits = (
        f"<p>Oldest queued file has waited <b>{_duration(oldest)}</b>.</p>"
        if oldest is not None
        else "<p class='note'>Nothing is queued.</p>"
    )
    if not jobs:
        return f"<h2>Uploads</h2><p class='note'>No upload in flight.</p>{waits}"
    items = []
    for job in jobs:
        line = (
            f'<span class="path">{_e(job.get("path", ""))}</span><br>'
            f"{_e(job.get('state', ''))}, attempt {_e(job.get('attempts', '?'))}"
        )
        if job.get("percent") is not None:
            percent = min(100.0, max(0.0, float(job["percent"])))
            sent = f"{human_size(job.get('sent_bytes') or 0)} of {human_size(job.get('size') or 0)}"
            line += (
                f'<div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100"'
                f' aria-valuenow="{percent:.0f}"><div class="fill" style="width:{percent:.1f}%">'
                f"</div></div><b>{percent:.0f}%</b> ({_e(sent)})"
            )
        items.append(f"<li>{line}</li>")
    return f"<h2>Uploads in flight ({len(jobs)})</h2><ul>{''.join(items)}</ul>{waits}"


def _paused(controls: dict[str, Any] | None, now: float) -> str:
    if controls is None or controls.get("paused") is None:
        return ""
    pause: dict[str, Any] = controls["paused"]
    until = pause.get("until")
    ends = f"until {_when(until, now)}" if until else "until lifted by hand"
    held = (
        "Uploads in flight were stopped."
        if pause.get("now")
        else "Uploads already sending finish; no new ones start."
    )
    reason = pause.get("reason")
    # controls_report gives the pause's own description as its reason, and as `held`,
    # which the headline shows already: say it once.
    said = reason and reason != controls.get("held")
    why = f"<p>Reason: {_e(reason)}</p>" if said else ""
    return (
        "<h2>Paused by the operator</h2>"
        f"<p>Paused by <b>{_e(pause.get('by') or 'unknown')}</b> since "
        f"{_when(pause.get('since'), now)}, {ends}.</p>{why}<p class='note'>{held}</p>"
    )


def _api_pauses(pauses: list[dict[str, Any]]) -> str:
    if not pauses:
        return ""
    items = []
    for p in pauses:
        left = float(p.get("seconds_left", 0))
        until = (
            "until lifted by hand"
            if left > UNTIL_LIFTED
            else f"until {_iso_shown(p.get('until'))} ({_duration(left)} left)"
        )
        items.append(f"<li><b>{_e(p.get('kind', '?'))}</b> {until}: {_e(p.get('reason', ''))}</li>")
    return f"<h2>API pauses</h2><ul>{''.join(items)}</ul>"


def _schedule(controls: dict[str, Any] | None, now: float) -> str:
    if controls is None:
        return ""
    lines = []
    window = controls.get("window")
    if window is not None:
        own = [
            f"{_e(window['workers'])} upload{_s(window['workers'])} at once"
            if window.get("workers") is not None
            else "",
            f"{_e(human_size(window['max_rate']))}/s" if window.get("max_rate") else "",
        ]
        limits = f" ({', '.join(x for x in own if x)})" if any(own) else ""
        lines.append(
            f"<p>Window in force: <b>{_e(window.get('name', '?'))}</b>{limits}, "
            + (
                f"ends {_when(window['ends'], now)}.</p>"
                if window.get("ends")
                else "never ends.</p>"
            )
        )
    else:
        lines.append("<p>No schedule window in force.</p>")
    upcoming = controls.get("next_window")
    if upcoming is not None:
        lines.append(
            f"<p>Next window: <b>{_e(upcoming.get('name', '?'))}</b>, "
            f"starts {_when(upcoming.get('starts'), now)}.</p>"
        )
    rate = controls.get("max_rate")
    cap = f"{_e(human_size(rate))}/s" if rate else "no cap"
    lines.append(f"<p>Bandwidth cap: <b>{cap}</b></p>")
    workers = controls.get("workers")
    if workers is not None:
        lines.append(f"<p>Uploads allowed at once: <b>{_e(workers)}</b></p>")
    return f"<h2>Schedule</h2>{''.join(lines)}"


def _roots(roots: list[dict[str, Any]]) -> str:
    if not roots:
        return ""
    items = "".join(
        f'<li><span class="path">{_e(r.get("root", ""))}</span><br>'
        f"unavailable since {_iso_shown(r.get('since'))}</li>"
        for r in roots
    )
    return (
        f"<h2>Unavailable roots</h2><ul>{items}</ul>"
        "<p class='note'>Their files wait (not mounted?); they are not missing.</p>"
    )


def _failures(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return ""
    items = "".join(
        f'<li><span class="path">{_e(j.get("path", ""))}</span><br>'
        f'<span class="err">{_e(j.get("error") or "no reason recorded")}</span>'
        f" <span class='note'>({_e(j.get('state', ''))}, "
        f"{_e(j.get('attempts', '?'))} attempt{_s(j.get('attempts', 0))})</span></li>"
        for j in jobs
    )
    return f"<h2>Recent failures</h2><ul>{items}</ul>"


def _waiting(jobs: list[dict[str, Any]]) -> str:
    held = [j for j in jobs if j.get("error")]
    if not held:
        return ""
    items = "".join(
        f'<li><span class="path">{_e(j.get("path", ""))}</span><br>{_e(j["error"])}</li>'
        for j in held
    )
    return f"<h2>Waiting to be complete</h2><ul>{items}</ul>"


def _indexing(indexing: dict[str, Any] | None) -> str:
    if not indexing:
        return ""
    lines = []
    if indexing.get("videos"):
        lines.append(f"<p>{_e(indexing['videos'])} video(s) being indexed.</p>")
    for name, statuses in sorted(indexing.get("features", {}).items()):
        counted = ", ".join(f"{status} {n}" for status, n in sorted(statuses.items()))
        lines.append(f"<p>Feature {_e(name)}: {_e(counted)}</p>")
    held = indexing.get("waiting_for_daily_cap")
    if held:
        lines.append(
            f"<p>{_e(held)} video(s) wait for the daily indexing cap "
            f"({_e(indexing.get('started_today', 0))} started today); "
            "they start after 00:00 UTC.</p>"
        )
    return f"<h2>Indexing</h2>{''.join(lines)}" if lines else ""


def _journal(report: dict[str, Any]) -> str:
    lines = []
    check = report.get("journal_check")
    if check is not None:
        verdict = check.get("verdict")
        css = "" if verdict == "ok" else ' class="err"'
        lines.append(
            f"<p{css}>Journal check {_iso_shown(check.get('at'))}: <b>{_e(verdict)}</b></p>"
        )
    others = report.get("other_extensions")
    if others:
        lines.append(
            f"<p class='note'>{_e(others)} file(s) under the roots are not videos by their "
            "extension (watch.extensions); not uploaded.</p>"
        )
    return f"<h2>Journal</h2>{''.join(lines)}" if lines else ""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _s(n: object) -> str:
    return "" if n == 1 else "s"


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _parse_iso(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso_shown(text: object) -> str:
    """Given an ISO time from the report, return it escaped as `YYYY-MM-DD HH:MM UTC`."""
    epoch = _parse_iso(text)
    if epoch is None:
        return _e(text if text is not None else "?")
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def _when(text: object, now: float) -> str:
    """Given an ISO time and the time now, return it escaped, with how far off it is."""
    epoch = _parse_iso(text)
    if epoch is None:
        return _iso_shown(text)
    delta = epoch - now
    off = f"in {_duration(delta)}" if delta >= 0 else f"{_duration(-delta)} ago"
    return f"{_iso_shown(text)} ({off})"


def _duration(seconds: float) -> str:
    """Given a number of seconds, return it as `45 s`, `12 min`, `3 h 05 min` or `2 d 4 h`."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, _ = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
