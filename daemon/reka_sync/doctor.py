"""`reka-sync doctor`: one line per check (ok, warn or fail), each problem with a hint.

It checks what a running service depends on: the key and the API, the clock, the
roots (there, readable, which filesystem and observer), inotify's limits against
the folders to watch, and the journal (intact, writable). It changes nothing.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from reka_sync.api import ApiClient, ResponseInfo
from reka_sync.config import Config
from reka_sync.credentials import resolve_api_key
from reka_sync.errors import AuthError, ConfigError, JournalError, RekaSyncError
from reka_sync.journal import Journal
from reka_sync.journal.connection import DAMAGED_HINT
from reka_sync.mounts import mount_of, observer_kind, probe, read_mounts
from reka_sync.patterns import IgnoreRules
from reka_sync.progress import human_size
from reka_sync.scanner import ScanProblem, count_folders

CLOCK_WARN, CLOCK_FAIL = 5.0, 120.0  # seconds of skew against the API's Date header
INOTIFY = Path("/proc/sys/fs/inotify")
SYSCTL_HINT = "install systemd/60-reka-sync.conf in /etc/sysctl.d/ and run `sysctl --system`"
REBUILD_HINT = DAMAGED_HINT
FREE_WARN_BYTES, FREE_WARN_SHARE = 1 << 30, 0.05  # warn under 1 GiB or 5% free


@dataclass(frozen=True)
class Check:
    level: str  # "ok", "warn" or "fail"
    name: str
    message: str
    hint: str = ""


def run_checks(config: Config) -> list[Check]:
    """Given the config, run every check; return them in the order they ran."""
    checks = check_api(config)
    folders, root_checks = check_roots(config, last_mounts(config.journal.path))
    checks += root_checks
    checks.append(check_inotify(folders))
    checks.append(check_journal(config.journal.path))
    return checks


def format_checks(checks: list[Check]) -> str:
    """Given checks, return one line each, with a hint line under each problem."""
    lines = []
    for check in checks:
        lines.append(f"{check.level:<5} {check.name:<8} {check.message}")
        if check.hint and check.level != "ok":
            lines.append(f"{'':<14} hint: {check.hint}")
    return "\n".join(lines)


def check_api(config: Config) -> list[Check]:
    """Given the config, check the key, that the API answers, and the clock against it."""
    try:
        key = resolve_api_key(config)
    except ConfigError as exc:
        return [Check("fail", "key", "; ".join(exc.problems), "fix the key file's path or mode")]
    if key is None:
        hint = "set $REKA_API_KEY, api.api_key_file, or LoadCredential=reka-api-key:FILE"
        return [Check("fail", "key", "no API key found", hint)]
    seen: list[ResponseInfo] = []
    client = ApiClient(config.api, key, on_response=seen.append)
    started = time.time()
    try:
        client.list_groups()
    except AuthError as exc:
        hint = "put a valid key in the key file, then `systemctl reload reka-sync`"
        return [Check("fail", "key", f"the API refused the key: {exc}", hint)]
    except RekaSyncError as exc:
        hint = "check api.base_url, the network or proxy, and api.ca_bundle for a private CA"
        return [Check("fail", "api", f"{config.api.base_url} unreachable: {exc}", hint)]
    finally:
        client.close()
    answered = time.time()
    info = seen[-1] if seen else None
    request = f", request id {info.request_id}" if info and info.request_id else ""
    took = f"{(answered - started) * 1000:.0f} ms"
    return [
        Check("ok", "key", "accepted by the API"),
        Check("ok", "api", f"{config.api.base_url} answered in {took}{request}"),
        check_clock(info.server_date if info else None, (started + answered) / 2),
    ]


def check_clock(server: float | None, local: float) -> Check:
    """Given the API's Date (epoch seconds) and our time then, say how far apart they are."""
    if server is None:
        return Check("warn", "clock", "the API sent no Date header; cannot compare clocks")
    skew = local - server
    message = f"{abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the API's clock"
    hint = "turn on time sync: `timedatectl set-ntp true`"
    if abs(skew) >= CLOCK_FAIL:
        return Check("fail", "clock", message, hint)
    if abs(skew) >= CLOCK_WARN:
        return Check("warn", "clock", message, hint)
    return Check("ok", "clock", f"within {CLOCK_WARN:.0f}s of the API's clock")


def last_mounts(path: Path) -> dict[str, str]:
    """Given the journal's path, return where each root was mounted when last there."""
    if not path.exists():
        return {}
    try:
        journal = Journal.open(path, readonly=True)
    except JournalError:
        return {}  # check_journal reports it
    try:
        return journal.root_mounts()
    except JournalError:
        return {}
    finally:
        journal.close()


def check_roots(config: Config, mounted: dict[str, str]) -> tuple[int, list[Check]]:
    """Given the config and where roots were mounted, check each; return folders and checks."""
    if not config.watch.roots:
        return 0, [Check("warn", "roots", "no roots configured", "set watch.roots")]
    mounts = read_mounts()
    ignore = IgnoreRules(config.watch.ignore, config.watch.extensions)
    native_folders, checks = 0, []
    for root in config.watch.roots:
        there, point = probe(root, mounted.get(str(root)))
        if not there and root.is_dir() and os.access(root, os.R_OK | os.X_OK):
            message = f"{root} is an empty folder on {point}, not on {mounted[str(root)]} as before"
            hint = "mount the share again; reka-sync waits for it and marks nothing missing"
            checks.append(Check("warn", "root", f"{message} (unmounted?)", hint))
            continue
        if not root.is_dir():
            hint = "mount it; reka-sync waits for it and marks nothing missing"
            checks.append(Check("warn", "root", f"{root} is not there (unmounted?)", hint))
            continue
        if not os.access(root, os.R_OK | os.X_OK):
            hint = "give the service user read access (SupplementaryGroups= in the unit)"
            checks.append(Check("fail", "root", f"{root} is not readable by this user", hint))
            continue
        problems: list[ScanProblem] = []
        folders = count_folders(root, ignore, problems)
        fstype = mount_of(root, mounts).fstype
        kind = observer_kind(fstype, config.watch.observer)
        if kind == "native":
            native_folders += folders
        how = "inotify" if kind == "native" else "polled every 5 s"
        checks.append(Check("ok", "root", f"{root}: {fstype}, {how}, {folders} folders"))
        if problems:
            first = problems[0]
            hint = "give the service user read access to them"
            message = f"{len(problems)} unreadable folders in {root}, e.g. {first.path}"
            checks.append(Check("fail", "perms", f"{message}: {first.reason}", hint))
    return native_folders, checks


def check_inotify(folders: int) -> Check:
    """Given the folders to watch with inotify, compare them with the kernel's limits."""
    try:
        limit = int((INOTIFY / "max_user_watches").read_text())
    except (OSError, ValueError):
        return Check("warn", "inotify", "cannot read fs.inotify.max_user_watches")
    message = f"{folders} folders to watch, fs.inotify.max_user_watches = {limit}"
    if folders > limit:
        return Check("fail", "inotify", f"{message}: some roots will be polled", SYSCTL_HINT)
    if folders > limit // 2:
        return Check("warn", "inotify", f"{message}: little room to grow", SYSCTL_HINT)
    return Check("ok", "inotify", message)


def check_journal(path: Path) -> Check:
    """Given the journal's path, check it is intact and that this user can write it."""
    folder = path.parent
    if not path.exists():
        if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
            return Check("ok", "journal", f"{path} not created yet; the first run creates it")
        hint = "create the folder for the service user (StateDirectory= does it under systemd)"
        return Check("fail", "journal", f"cannot create {path}", hint)
    try:
        journal = Journal.open(path, readonly=True)
    except JournalError as exc:
        return Check("fail", "journal", str(exc), REBUILD_HINT)
    try:
        verdict = journal.check_integrity()
        total = sum(journal.counts().values()) if verdict == "ok" else 0
    except JournalError as exc:
        return Check("fail", "journal", str(exc), REBUILD_HINT)
    finally:
        journal.close()
    if verdict != "ok":
        return Check("fail", "journal", f"{path} is damaged: {verdict}", REBUILD_HINT)
    if not os.access(path, os.W_OK) or not os.access(folder, os.W_OK):
        hint = "run doctor as the service user: sudo -u reka-sync reka-sync doctor"
        return Check("fail", "journal", f"{path} is intact but not writable by this user", hint)
    return _free_space(path, f"{path} intact, {total} files recorded")


def _free_space(path: Path, intact: str) -> Check:
    """Given the journal and what the integrity check said, warn when its disk runs low."""
    usage = shutil.disk_usage(path.parent)
    free = f"{human_size(usage.free)} free of {human_size(usage.total)}"
    if usage.free < FREE_WARN_BYTES or usage.free < FREE_WARN_SHARE * usage.total:
        hint = "free space there: a full disk stops the journal (and so every upload)"
        return Check("warn", "journal", f"{intact}; only {free} on its disk", hint)
    return Check("ok", "journal", f"{intact}; {free} on its disk")
