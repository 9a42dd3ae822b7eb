"""The `reka-sync` command line: parse arguments, map errors to exit codes, print results.

Each command imports what it needs inside its handler: `status` and `show` are run by
hand and by scripts, and must not pay for the HTTP client, the scheduler or the watcher.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from reka_sync import __version__
from reka_sync.config import Config, default_config_path, load_config
from reka_sync.credentials import Secret, require_api_key, resolve_api_key
from reka_sync.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_IOERR,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    JournalError,
    NoJournalYet,
    RekaSyncError,
    UsageError,
)
from reka_sync.names import shown

Handler = Callable[[argparse.Namespace], int]
# The first matching kind decides the exit code (a NoJournalYet is a JournalError too).
EXIT_CODES: tuple[tuple[type[RekaSyncError], int], ...] = (
    (UsageError, EXIT_USAGE),
    (NoJournalYet, EXIT_FAILED),
    (JournalError, EXIT_IOERR),
    (RekaSyncError, EXIT_FAILED),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Given command-line arguments, run the command and return its exit code."""
    for stream in (sys.stdout, sys.stderr):  # a file name need not be valid UTF-8
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"reka-sync: configuration error in {args.config}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except RekaSyncError as exc:
        print(f"reka-sync: {exc}", file=sys.stderr)
        return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every command of the interface contract."""
    parser = argparse.ArgumentParser(
        prog="reka-sync",
        description="Keep folders of videos in sync with the Reka Vision API.",
    )
    parser.add_argument("--version", action="version", version=f"reka-sync {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.add_argument(
            "--log-level",
            default="info",
            choices=["debug", "info", "warning", "error"],
            help="(info)",
        )
        sub.add_argument(
            "--log-format",
            default="auto",
            choices=["auto", "console", "json"],
            help="console on a terminal, JSON lines otherwise (auto)",
        )
        sub.add_argument(
            "--config",
            type=Path,
            default=None,
            help="configuration file (default: $REKA_SYNC_CONFIG, then /etc/reka-sync/config.toml)",
        )
        sub.set_defaults(handler=handler)
        return sub

    add("run", cmd_run, "watch, upload, poll and file into groups until SIGTERM")
    sub = add("backfill", cmd_backfill, "upload everything under the roots once, then exit")
    sub.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="only these files or folders"
    )
    sub.add_argument("--dry-run", action="store_true", help="upload nothing; show the plan")
    sub.add_argument(
        "--max-wait",
        type=_duration,
        default=900.0,
        metavar="DURATION",
        help="how long to wait for an unreachable API before exiting 75 (15m; 0 = forever)",
    )
    sub.add_argument(
        "--no-wait-index",
        action="store_true",
        help="stop once videos are stored and filed; the service does their indexing",
    )
    _json_flag(sub)
    _json_flag(add("status", cmd_status, "counts per state, work in flight, pauses, failures"))
    sub = add("show", cmd_show, "one file's history in the journal")
    sub.add_argument("path")
    _json_flag(sub)
    sub = add("retry", cmd_retry, "put failed files back in the queue")
    sub.add_argument("paths", nargs="*", metavar="PATH")
    sub.add_argument("--all-failed", action="store_true", help="every failed file")
    sub = add("rules", cmd_rules, "which group and features each path gets, and which rule decided")
    sub.add_argument("paths", nargs="*", metavar="PATH")
    sub.add_argument(
        "--features",
        action="store_true",
        help="also count the videos already uploaded that these rules would index for more",
    )
    sub = add("reconcile", cmd_reconcile, "compare the journal, the files and the key's videos")
    sub.add_argument("--apply", action="store_true", help="adopt; without it nothing changes")
    sub.add_argument(
        "--reupload-missing",
        action="store_true",
        help="with --apply: queue files whose video is gone",
    )
    sub.add_argument(
        "--delete-duplicates",
        action="store_true",
        help="with --apply: delete extra videos of a content (never one the journal holds)",
    )
    _json_flag(sub)
    add(
        "resume-deletes",
        cmd_resume_deletes,
        "let deletions go on after the hourly cap stopped them",
    )
    add("check-config", cmd_check_config, "validate the configuration; print every problem")
    doctor = add(
        "doctor", cmd_doctor, "check the key, reachability, clock, inotify limits, mounts, journal"
    )
    _json_flag(doctor)
    _journal_actions(add("journal", cmd_journal, "back up or check the journal file"))
    _emulator_flags(add("emulator", cmd_emulator, "run the built-in Reka Vision API emulator"))
    add("demo", cmd_demo, "run the pipeline against the built-in emulator on a sample tree")
    return parser


def _duration(text: str) -> float:
    """Given "90", "90s", "20m" or "2h", return seconds; refuse anything else."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (90s, 20m, 2h)") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError("a duration cannot be negative")
    return seconds


def _emulator_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    sub.add_argument("--port", type=int, default=8765, help="port (8765; 0 picks a free one)")
    sub.add_argument("--data", type=Path, default=None, help="keep state and uploads here")
    sub.add_argument("--api-key", default=None, help="accept only this key (default: any)")
    sub.add_argument(
        "--processing-delay",
        type=float,
        default=1.0,
        help="seconds a video stays 'uploading' (1.0)",
    )
    sub.add_argument(
        "--feature-delay",
        type=float,
        default=2.0,
        help="seconds a feature (transcript, captions, ...) takes to be made (2.0)",
    )
    sub.add_argument("--group-cap", type=int, default=10, help="groups per key (10)")
    sub.add_argument("--upload-quota", type=int, default=None, help="uploads per key per day")
    sub.add_argument("--max-upload-bytes", type=int, default=None, help="answer 413 above this")
    sub.add_argument("--seed", type=int, default=None, help="seed for fault draws")
    for kind, text in (
        ("server-error", "answer 500"),
        ("rate-limit", "answer 429"),
        ("drop-mid-body", "cut uploads half way"),
        ("drop-after-store", "store uploads, then cut the connection"),
        ("processing-failure", "end uploads as 'failed'"),
        ("feature-failure", "end feature runs as 'failed'"),
    ):
        sub.add_argument(
            f"--{kind}-rate",
            type=float,
            default=0.0,
            metavar="P",
            help=f"share of requests to {text} (0..1)",
        )
    sub.add_argument("--retry-after", type=float, default=2.0, help="retry-after of injected 429s")
    sub.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")


def _journal_actions(journal: argparse.ArgumentParser) -> None:
    """Given the `journal` command's parser, add its actions: backup and check."""
    actions = journal.add_subparsers(title="actions", metavar="ACTION", dest="action")
    actions.required = True
    summary = "copy the journal consistently, even while `reka-sync run` writes it"
    backup = actions.add_parser("backup", help=summary, description=summary)
    backup.add_argument(
        "file", type=Path, metavar="FILE", help="the copy to write (with --keep: a folder)"
    )
    backup.add_argument(
        "--keep",
        type=int,
        default=None,
        metavar="N",
        help="FILE is a folder: write journal-YYYYMMDD.db there, keep the newest N copies",
    )
    summary = "check the journal in full: integrity, schema version, files per state"
    check = actions.add_parser("check", help=summary, description=summary)
    check.add_argument(
        "file", nargs="?", type=Path, metavar="FILE", help="a copy to check (default: the journal)"
    )
    _json_flag(check)
    for action in (backup, check):  # `journal backup FILE --config C` works as well
        action.add_argument(
            "--config", type=Path, default=argparse.SUPPRESS, help="configuration file"
        )


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _config(args: argparse.Namespace) -> Config:
    if args.config is None:
        args.config = default_config_path()
    config = load_config(args.config)
    for warning in config.warnings:
        print(f"reka-sync: warning: {warning}", file=sys.stderr)
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the configuration and print a verdict."""
    config = _config(args)
    if resolve_api_key(config) is None:
        print(
            "reka-sync: warning: api.api_key_file: no API key found yet; set $REKA_API_KEY, "
            "api.api_key_file or the systemd credential 'reka-api-key'",
            file=sys.stderr,
        )
    rules = config.groups.rules
    print(
        f"{args.config}: ok ({len(config.watch.roots)} roots, {len(rules)} rules, "
        f"journal {config.journal.path})"
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Print counts per state, work in flight, pauses and recent failures."""
    from reka_sync.journal import Journal
    from reka_sync.status import format_status, status_report

    config = _config(args)
    journal = Journal.open(config.journal.path, readonly=True)
    try:
        report = status_report(journal, time.time())
    finally:
        journal.close()
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return EXIT_OK


def cmd_journal(args: argparse.Namespace) -> int:
    """Back up the journal (exit 0, 74 if the copy cannot be written) or check it (exit 0
    when intact, 1 when damaged or missing)."""
    from reka_sync.journal import maintenance

    if args.action == "backup":
        config = _config(args)
        if args.keep is None:
            made = maintenance.backup(config.journal.path, args.file)
        else:
            made = maintenance.backup_dated(config.journal.path, args.file, args.keep, time.time())
        print(maintenance.format_backup(made))
        return EXIT_OK
    path = args.file if args.file is not None else _config(args).journal.path
    health = maintenance.check(path)
    print(
        json.dumps(health.as_json(), indent=2) if args.json else maintenance.format_health(health)
    )
    return EXIT_OK if health.intact else EXIT_FAILED


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check what the service depends on; exit 1 if any check fails."""
    import dataclasses

    from reka_sync import doctor

    config = _config(args)
    try:
        key = resolve_api_key(config)
    except ConfigError:
        key = None  # doctor's key check says why
    _logging(args, key)
    checks = doctor.run_checks(config)
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in checks], indent=2))
    else:
        print(doctor.format_checks(checks))
    return EXIT_FAILED if any(c.level == "fail" for c in checks) else EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """Print one file's history."""
    from reka_sync.journal import Journal
    from reka_sync.status import format_show, show_report

    config = _config(args)
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
    config = _config(args)
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
    config = _config(args)
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
        print(f"{shown(raw)}: {group} ({decision.reason}); {_features_text(decision.features)}")
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
    config = _config(args)
    key = require_api_key(config)
    _logging(args, key)
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


def cmd_resume_deletes(args: argparse.Namespace) -> int:
    """Lift the stop of deletions; the hourly count starts again from now."""
    from reka_sync.journal import DELETES, Journal

    config = _config(args)
    journal = Journal.open(config.journal.path)
    try:
        stopped = [p for p in journal.pauses(time.time()) if p.kind == DELETES]
        journal.resume_deletes(time.time())
    finally:
        journal.close()
    print("deletions resumed" if stopped else "deletions were not stopped; nothing to resume")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run the service until SIGTERM or SIGINT."""
    from reka_sync import runner

    config = _config(args)
    key = require_api_key(config)
    _logging(args, key)
    return runner.run(config, key, Path(args.config))


def cmd_backfill(args: argparse.Namespace) -> int:
    """Upload everything under the roots (or the given paths) once, then exit."""
    from reka_sync import backfill

    config = _config(args)
    key = None if args.dry_run else require_api_key(config)
    _logging(args, key)
    return backfill.run(
        config,
        key,
        args.paths,
        dry_run=args.dry_run,
        as_json=args.json,
        max_wait=args.max_wait,
        wait_index=not args.no_wait_index,
    )


def _logging(args: argparse.Namespace, key: Secret | None) -> None:
    from reka_sync import logs

    if key is not None:
        logs.register_secret(key)
    logs.configure(args.log_level, args.log_format)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the pipeline against the built-in emulator on a sample tree, then exit."""
    from reka_sync import logs
    from reka_sync.emulator import demo

    logs.configure("warning" if args.log_level == "info" else args.log_level, args.log_format)
    return demo.run(sys.stdout)


def cmd_emulator(args: argparse.Namespace) -> int:
    """Run the built-in API emulator in the foreground."""
    from reka_sync import emulator

    faults = [
        emulator.Fault.from_json({"kind": kind, "rate": rate, "seconds": args.retry_after})
        for kind in (
            "server_error",
            "rate_limit",
            "drop_mid_body",
            "drop_after_store",
            "processing_failure",
            "feature_failure",
        )
        if (rate := getattr(args, f"{kind}_rate")) > 0
    ]
    if args.latency > 0:
        faults.append(emulator.Fault.from_json({"kind": "latency", "seconds": args.latency}))
    settings = emulator.Settings(
        api_key=args.api_key,
        processing_delay=args.processing_delay,
        feature_delay=args.feature_delay,
        group_cap=args.group_cap,
        upload_quota=args.upload_quota,
        max_upload_bytes=args.max_upload_bytes,
    )
    emulator.serve(args.host, args.port, args.data, settings, faults, args.seed)
    return EXIT_OK
