"""The `reka-sync` command line: parse arguments, map errors to exit codes, print results.
The commands that read or repair the journal have their handlers in `commands`.

Each command imports what it needs inside its handler: `status` and `show` are run by
hand and by scripts, and must not pay for the HTTP client, the scheduler or the watcher.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import io
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reka_sync import __version__
from reka_sync.commands import (
    cmd_add_url,
    cmd_journal,
    cmd_reconcile,
    cmd_resume_deletes,
    cmd_retry,
    cmd_rules,
    cmd_show,
    cmd_status,
    load,
    start_logging,
)
from reka_sync.config import parse_duration, split_listen
from reka_sync.credentials import require_api_key, resolve_api_key
from reka_sync.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_IOERR,
    EXIT_NOPERM,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    JournalError,
    NoJournalYet,
    RekaSyncError,
    UsageError,
    WrongUser,
)

if TYPE_CHECKING:
    from reka_sync.urls import UrlItem

Handler = Callable[[argparse.Namespace], int]
# The first matching kind decides the exit code (a NoJournalYet is a JournalError too).
EXIT_CODES: tuple[tuple[type[RekaSyncError], int], ...] = (
    (UsageError, EXIT_USAGE),
    (WrongUser, EXIT_NOPERM),
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
        "--urls",
        type=Path,
        metavar="FILE",
        help="upload the URLs listed in FILE (URL[<tab>name[<tab>group]] per line), not the roots",
    )
    sub.add_argument(
        "--no-wait-index",
        action="store_true",
        help="stop once videos are stored and filed; the service does their indexing",
    )
    sub.add_argument(
        "--metrics-listen",
        type=_listen,
        default=None,
        metavar="HOST:PORT",
        help="serve /metrics and the status page there while it runs (not metrics.listen,"
        " which is the service's)",
    )
    sub.add_argument(
        "--ignore-schedule",
        action="store_true",
        help="upload at full speed now, whatever the [[upload.schedule]] windows say "
        "(a pause still holds)",
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
    sub = add("pause", cmd_pause, "pause new uploads, here and in any backfill, until resumed")
    sub.add_argument(
        "--for",
        dest="duration",
        type=_duration,
        metavar="DURATION",
        help="lift the pause by itself after this long (90m, 2h, 1d)",
    )
    sub.add_argument(
        "--now",
        action="store_true",
        help="also stop uploads in flight; they go back to the queue, no attempt spent",
    )
    add("resume", cmd_resume, "lift the pause: uploads start again within a few seconds")
    add(
        "resume-deletes",
        cmd_resume_deletes,
        "let deletions go on after the hourly cap stopped them",
    )
    sub = add("add-url", cmd_add_url, "queue a URL for the API to fetch as a video")
    sub.add_argument("url", metavar="URL")
    sub.add_argument("--name", default=None, help="the video's name (default: from the URL)")
    sub.add_argument("--group", default=None, help="its group (default: from the rules)")
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
    """Given "90", "90s", "20m", "2h" or "1d", return seconds. Raise ArgumentTypeError for
    anything else."""
    seconds = parse_duration(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (90s, 20m, 2h)")
    if seconds < 0:
        raise argparse.ArgumentTypeError("a duration cannot be negative")
    return seconds


def _listen(text: str) -> str:
    """Given "host:port", return it. Raise ArgumentTypeError for anything else."""
    if split_listen(text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port (127.0.0.1:9465)")
    return text


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


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the configuration and print a verdict."""
    config = load(args)
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


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check what the service depends on; exit 1 if any check fails."""
    import dataclasses

    from reka_sync import doctor

    config = load(args)
    try:
        key = resolve_api_key(config)
    except ConfigError:
        key = None  # doctor's key check says why
    start_logging(args, key)
    checks = doctor.run_checks(config)
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in checks], indent=2))
    else:
        print(doctor.format_checks(checks))
    return EXIT_FAILED if any(c.level == "fail" for c in checks) else EXIT_OK


def _without_http_command_line() -> None:
    """Keep httpx from importing its own command line (click and pygments' lexers, ~20 ms),
    which it does whenever they are installed, as sqlite-utils' dependencies are."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def cmd_run(args: argparse.Namespace) -> int:
    """Run the service until SIGTERM or SIGINT."""
    _without_http_command_line()
    from reka_sync import runner

    config = load(args)
    key = require_api_key(config)
    start_logging(args, key)
    return runner.run(config, key, Path(args.config))


def cmd_backfill(args: argparse.Namespace) -> int:
    """Upload everything under the roots (or the given paths) once, then exit."""
    _without_http_command_line()
    from reka_sync import backfill

    urls = _url_list(args.urls) if args.urls is not None else None
    if urls is not None and (args.paths or args.dry_run):
        raise UsageError("--urls uploads the URLs of a list: no PATH, no --dry-run with it")
    # At exit, the interpreter's last collection walks every object of every module the
    # engine imported (~70 ms): frozen, they are left to the end of the process.
    atexit.register(gc.freeze)
    config = load(args)
    key = None if args.dry_run else require_api_key(config)
    start_logging(args, key)
    return backfill.run(
        config,
        key,
        args.paths,
        dry_run=args.dry_run,
        as_json=args.json,
        max_wait=args.max_wait,
        wait_index=not args.no_wait_index,
        urls=urls,
        ignore_schedule=args.ignore_schedule,
        metrics_listen=args.metrics_listen or "",
    )


def _url_list(path: Path) -> list[UrlItem]:
    """Given a URL list file, return its URLs. Raise UsageError naming every bad line."""
    from reka_sync.urls import parse_list

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the URL list: {exc}") from None
    items, problems = parse_list(text)
    if problems:
        raise UsageError(f"{path}: " + "; ".join(problems))
    return items


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


def cmd_pause(args: argparse.Namespace) -> int:
    """Pause new uploads (see `pausing`)."""
    from reka_sync import pausing

    return pausing.cmd_pause(args)


def cmd_resume(args: argparse.Namespace) -> int:
    """Lift the operator's pause (see `pausing`)."""
    from reka_sync import pausing

    return pausing.cmd_resume(args)
