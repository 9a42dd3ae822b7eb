"""The handlers of the commands that read or repair the journal: status, show, retry,
rules, reconcile, resume-deletes and journal (the others are in `cli`).

Each imports what it needs inside itself: `status` and `show` are run by hand and by
scripts, and must not pay for the HTTP client, the scheduler or the watcher.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from reka_sync.config import Config, default_config_path, load_config
from reka_sync.credentials import Secret, require_api_key
from reka_sync.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from reka_sync.names import shown


def load(args: argparse.Namespace) -> Config:
    if args.config is None:
        args.config = default_config_path()
    config = load_config(args.config)
    for warning in config.warnings:
        print(f"reka-sync: warning: {warning}", file=sys.stderr)
    return config


def start_logging(args: argparse.Namespace, key: Secret | None) -> None:
    from reka_sync import logs

    if key is not None:
        logs.register_secret(key)
    logs.configure(args.log_level, args.log_format)


def cmd_status(args: argparse.Namespace) -> int:
    """Print counts per state, work in flight, pauses and recent failures."""
    from reka_sync.controls import limits_now
    from reka_sync.journal import Journal
    from reka_sync.status import controls_report, format_status, status_report

    config = load(args)
    journal = Journal.open(config.journal.path, readonly=True)
    now = time.time()
    try:
        report = status_report(journal, now)
        report["controls"] = controls_report(
            limits_now(config.upload, journal.operator_pause(), now)
        )
    finally:
        journal.close()
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return EXIT_OK


def cmd_journal(args: argparse.Namespace) -> int:
    """Back up the journal (exit 0, 74 if the copy cannot be written) or check it (exit 0
    when intact, 1 when damaged or missing)."""
    from reka_sync.journal import maintenance

    if args.action == "backup":
        config = load(args)
        if args.keep is None:
            made = maintenance.backup(config.journal.path, args.file)
        else:
            made = maintenance.backup_dated(config.journal.path, args.file, args.keep, time.time())
        print(maintenance.format_backup(made))
        return EXIT_OK
    path = args.file if args.file is not None else load(args).journal.path
    health = maintenance.check(path)
    print(
        json.dumps(health.as_json(), indent=2) if args.json else maintenance.format_health(health)
    )
    return EXIT_OK if health.intact else EXIT_FAILED


def cmd_show(args: argparse.Namespace) -> int:
    """Print one file's history."""
    from reka_sync.journal import Journal
    from reka_sync.status import format_show, show_report

    config = load(args)
    journal = Journal.open(config.journal.path, readonly=True)
    try:
        path = _as_recorded(args.path)
        job = journal.find(path)
        if job is None:
            print(
                f"reka-sync: {shown(path)} is not in the journal (never seen, ignored, "
                "or outside the roots)",
                file=sys.stderr,
            )
            return EXIT_FAILED
        report = show_report(
            job, journal.history(job.id), journal.superseded_of(job.id), journal.features_of(job)
        )
        report["pauses"] = [  # what holds every file back now: a 429, a refused key, an outage
            {"kind": p.kind, "reason": p.reason} for p in journal.pauses(time.time())
        ]
    finally:
        journal.close()
    print(json.dumps(report, indent=2) if args.json else format_show(report))
    return EXIT_OK


def _as_recorded(raw: str) -> str:
    """Given a path from the command line, return it as the journal records it: its folder
    resolved, its last part as it is (a link is shown as the link, not its target)."""
    if "://" in raw:  # a URL (add-url, backfill --urls) is recorded as it is
        return raw
    absolute = os.path.abspath(raw)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


def cmd_retry(args: argparse.Namespace) -> int:
    """Put failed (or missing, skipped) files back in the queue."""
    from reka_sync import outcomes
    from reka_sync.features import GONE, retry_indexing
    from reka_sync.journal import Journal
    from reka_sync.lifecycle import State

    if not args.paths and not args.all_failed:
        print("reka-sync: name files to retry, or pass --all-failed", file=sys.stderr)
        return EXIT_USAGE
    config = load(args)
    journal = Journal.open(config.journal.path)
    try:
        jobs = [journal.find(_as_recorded(p)) for p in args.paths]
        if args.all_failed:
            jobs += journal.jobs([State.FAILED], limit=1_000_000)
        status = EXIT_OK
        for path, job in zip(args.paths, jobs, strict=False):
            if job is None:
                print(f"reka-sync: {path}: not in the journal", file=sys.stderr)
                status = EXIT_FAILED
        requeued = 0
        for job in (j for j in jobs if j is not None):
            if job.state not in (State.FAILED, State.MISSING, State.SKIPPED):
                print(f"{shown(job.path)}: {job.state.value}, nothing to retry")
                continue
            if (
                job.state is State.FAILED
                and job.last_error != GONE  # its video is gone: upload it again
                and journal.indexing_failed(job.id)
            ):
                journal.apply(retry_indexing(job.id, time.time()), time.time())
                print(f"{shown(job.path)}: indexing again (its video stays)")
            else:
                journal.apply(outcomes.requeue(job), time.time())
            requeued += 1
        print(f"requeued {requeued} file(s)")
        return status
    finally:
        journal.close()


def cmd_rules(args: argparse.Namespace) -> int:
    """Print the group and features each path gets and the rule that decided; with
    --features, count the uploaded videos these rules would index for more."""
    if not args.paths and not args.features:
        print("reka-sync: name paths to decide, or pass --features", file=sys.stderr)
        return EXIT_USAGE
    config = load(args)
    rules = config.rules()
    status = EXIT_OK
    scope: list[tuple[str, str]] = []
    for raw in args.paths:
        path = Path(raw).resolve()
        root = next((r for r in config.watch.roots if path.is_relative_to(r)), None)
        if root is None:
            print(f"{shown(raw)}: not under any watch.roots entry")
            status = EXIT_FAILED
            continue
        scope.append((str(root), str(path)))
        decision = rules.decide(path.relative_to(root).as_posix())
        group = f"group {decision.group!r}" if decision.group else "no group"
        after = "" if decision.after == "keep" else f"; after upload: {decision.after}"
        indexed = _features_text(decision.features)
        print(f"{shown(raw)}: {group} ({decision.reason}); {indexed}{after}")
    if args.features and (scope or not args.paths):
        _count_reindex(config, scope)
    return status


def _features_text(names: tuple[str, ...]) -> str:
    from reka_sync.features import DOCUMENTED_DEPENDENCIES, required

    if not names:
        return "no indexing"
    needed, _ = required(names, DOCUMENTED_DEPENDENCIES)
    added = [n for n in needed if n not in names]
    return f"features {', '.join(names)}" + (f" (+ {', '.join(added)})" if added else "")


def _count_reindex(config: Config, paths: list[tuple[str, str]]) -> None:
    """Say how many videos already uploaded (under `paths`, as (root, path), if any) these
    rules would index for more features."""
    from reka_sync.features import needing_more
    from reka_sync.journal import Journal, Scope

    if not config.journal.path.exists():
        print("no journal yet: nothing uploaded to index again")
        return
    journal = Journal.open(config.journal.path, readonly=True)
    try:
        done = journal.done_videos(Scope(paths=tuple(paths)) if paths else None)
        videos, lacking = needing_more(done, config.rules().features)
    finally:
        journal.close()
    detail = ", ".join(f"{name} {n}" for name, n in lacking.items())
    print(
        f"{videos} videos already uploaded would be indexed for more features"
        + (f" (lacking: {detail})" if detail else "")
        + (
            f"; at most {config.index.max_per_day} start per day"
            if config.index.max_per_day and videos
            else ""
        )
    )


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Compare the journal, the files under the roots and the key's videos; print the plan,
    and with --apply act on it."""
    from reka_sync import reconcile
    from reka_sync.api import ApiClient
    from reka_sync.journal import Journal

    if (args.reupload_missing or args.delete_duplicates) and not args.apply:
        print("reka-sync: --reupload-missing and --delete-duplicates need --apply", file=sys.stderr)
        return EXIT_USAGE
    config = load(args)
    key = require_api_key(config)
    start_logging(args, key)
    journal = Journal.open(config.journal.path)
    api = ApiClient(config.api, key)
    try:
        plan = reconcile.survey(config, journal, api)
        choices = reconcile.Choices(args.apply, args.reupload_missing, args.delete_duplicates)
        made = reconcile.apply(plan, choices, journal, api, time.time()) if args.apply else None
    finally:
        api.close()
        journal.close()
    reconcile.print_report(reconcile.report(plan, made), args.json, sys.stdout)
    return EXIT_OK


def cmd_add_url(args: argparse.Namespace) -> int:
    """Record a URL for the API to fetch as a video; the service (or backfill --urls)
    uploads it once."""
    from reka_sync.journal import Journal
    from reka_sync.urls import UrlItem, check_url

    url = args.url.strip()
    why = check_url(url)
    if why:
        print(f"reka-sync: {url}: {why}", file=sys.stderr)
        return EXIT_USAGE
    config = load(args)
    journal = Journal.open(config.journal.path)
    try:
        new = journal.record_urls([UrlItem(url, args.name, args.group)], time.time())
        job = journal.find(url)
    finally:
        journal.close()
    state = job.state.value if job is not None else "unknown"
    print(f"{url}: " + ("queued" if new else f"in the journal already ({state}); not added again"))
    return EXIT_OK


def cmd_resume_deletes(args: argparse.Namespace) -> int:
    """Lift the stop of deletions; the hourly count starts again from now."""
    from reka_sync.journal import DELETES, Journal

    config = load(args)
    journal = Journal.open(config.journal.path)
    try:
        stopped = [p for p in journal.pauses(time.time()) if p.kind == DELETES]
        journal.resume_deletes(time.time())
    finally:
        journal.close()
    print("deletions resumed" if stopped else "deletions were not stopped; nothing to resume")
    return EXIT_OK
