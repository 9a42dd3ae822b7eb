"""Load and validate the TOML configuration into frozen, typed objects.

Every problem is collected with its key path (``watch.roots[1]: not a
directory``) and raised together as one ConfigError, so a user fixes a file
in one pass. Warnings (a root that does not exist yet) do not stop loading.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from reka_sync.errors import ConfigError, GlobError
from reka_sync.markers import default_instance, valid_instance
from reka_sync.patterns import compile_glob, template_fields
from reka_sync.rules import GroupRules, Rule
from reka_sync.throttle import parse_rate
from reka_sync.windows import ALL_DAYS, ALL_HOURS, Window, days_problem, hours_problem

DEFAULT_CONFIG_PATH = Path("/etc/reka-sync/config.toml")
OBSERVERS = ("auto", "native", "polling")
MAX_WORKERS = 64  # upload.workers at most
MIN_RATE = 16 * 1024  # a cap below this starves each worker's slices for seconds
T = TypeVar("T")


@dataclass(frozen=True)
class ApiConfig:
    base_url: str = "https://vision-agent.api.reka.ai"
    api_key_file: Path | None = None
    ca_bundle: Path | None = None
    allow_insecure_http: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    stall_timeout: float = 60.0
    outage_grace: float = 120.0


@dataclass(frozen=True)
class JournalConfig:
    path: Path = Path("/var/lib/reka-sync/journal.db")
    instance: str = ""  # this host's id in video markers; "" = derived from the host name


@dataclass(frozen=True)
class WatchConfig:
    roots: tuple[Path, ...] = ()
    extensions: tuple[str, ...] = (
        *("mp4", "mov", "m4v", "mkv", "webm", "avi", "ts", "mts", "m2ts"),
        *("mpg", "mpeg", "wmv", "flv", "3gp"),
    )
    ignore: tuple[str, ...] = ("**/.*", "**/*.part", "**/@eaDir/**")
    settle_seconds: float = 15.0
    rescan_interval: float = 300.0
    observer: str = "auto"
    mp4_index_wait: float = 600.0
    live_quiet_seconds: float = 60.0
    follow_symlinks: bool = False
    on_change: str = "replace"
    on_delete: str = "keep"  # a stored file deleted locally: keep its video, or delete it
    delete_grace: float = 3600.0  # seconds a file is gone (root there) before "delete" acts
    max_deletes_per_hour: int = 50  # deletions reka-sync decides on its own; then it stops
    remote_check_interval: float = 21600.0  # seconds between looks for videos removed remotely


@dataclass(frozen=True)
class UploadConfig:
    workers: int = 4
    max_attempts: int = 10
    backoff_base: float = 2.0
    backoff_cap: float = 900.0
    poll_interval: float = 5.0
    processing_deadline: float = 3600.0
    lease_seconds: float = 60.0
    reupload_removed: bool = False  # a video removed remotely is uploaded again
    after_upload: str = "keep"  # keep | delete | move:/absolute/dir (rules may say otherwise)
    max_rate: int = 0  # bytes per second for all workers together; 0 = no cap
    schedule: tuple[Window, ...] = ()  # [[upload.schedule]] windows; the later entry wins


@dataclass(frozen=True)
class GroupsConfig:
    create_missing: bool = True
    default: str = ""
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class IndexConfig:
    features: tuple[str, ...] = ()  # for files no rule matches
    max_per_day: int = 0  # indexing runs that may start per UTC day; 0 = no cap
    max_attempts: int = 5  # per feature
    scene_detection: bool = True
    poll_interval: float = 5.0  # seconds between looks at features in progress


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""  # "host:port" of /metrics and the status page; "" = off

    @property
    def address(self) -> tuple[str, int] | None:
        """Return (host, port) to listen on, or None when metrics are off."""
        return split_listen(self.listen) if self.listen else None


@dataclass(frozen=True)
class Config:
    api: ApiConfig = field(default_factory=ApiConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    groups: GroupsConfig = field(default_factory=GroupsConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: Path | None = None
    warnings: tuple[str, ...] = ()

    def rules(self) -> GroupRules:
        """Return the folder rules ready to decide paths: group and features."""
        return GroupRules(
            self.groups.rules, self.groups.default, self.index.features, self.upload.after_upload
        )


def default_config_path() -> Path:
    """Return $REKA_SYNC_CONFIG if set, else /etc/reka-sync/config.toml."""
    env = os.environ.get("REKA_SYNC_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_config(path: Path) -> Config:
    """Given a TOML file, return its validated Config. Raise ConfigError listing every problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [f"{path}: no such file; pass --config FILE or set REKA_SYNC_CONFIG"]
        ) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    return parse_config(data, source=path)


def parse_config(data: dict[str, Any], source: Path | None = None) -> Config:
    """Given parsed TOML, return a Config. Raise ConfigError listing every problem."""
    problems: list[str] = []
    warnings: list[str] = []
    top = _Table(data, "", problems)
    base = source.parent if source else Path.cwd()
    config = Config(
        api=_api(top.table("api"), base),
        journal=_journal(top.table("journal"), base),
        watch=_watch(top.table("watch"), base, warnings),
        upload=_upload(top.table("upload"), base),
        groups=_groups(top.table("groups"), base),
        index=_index(top.table("index")),
        metrics=_metrics(top.table("metrics")),
        source=source,
        warnings=tuple(warnings),
    )
    top.finish()
    if problems:
        raise ConfigError(problems)
    return _archives_ignored(config)


def _archives_ignored(config: Config) -> Config:
    """Given a config, return it with each after_upload folder inside a root ignored there:
    a file moved into it is never picked up again."""
    actions = [config.upload.after_upload, *(r.after_upload or "" for r in config.groups.rules)]
    folders = {Path(a.removeprefix("move:")) for a in actions if a.startswith("move:")}
    roots = [f for f in folders if f in config.watch.roots]
    if roots:
        raise ConfigError(
            [
                f"after_upload: move:{f} is a watch root; archive into a folder of its own"
                for f in roots
            ]
        )
    extra = [
        f"{folder.relative_to(root).as_posix()}/**"
        for root in config.watch.roots
        for folder in folders
        if folder.is_relative_to(root) and folder != root
    ]
    if not extra:
        return config
    watch = dataclasses.replace(config.watch, ignore=(*config.watch.ignore, *extra))
    return dataclasses.replace(config, watch=watch)


class _Table:
    """One TOML table being read: typed getters that record problems instead of raising."""

    def __init__(self, data: Any, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        if not isinstance(data, dict):
            self.problem("", f"must be a table, not {_kind(data)}")
            data = {}
        self.data: dict[str, Any] = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def problem(self, name: str, message: str) -> None:
        where = self.key(name) if name else self.path
        self.problems.append(f"{where}: {message}")

    def table(self, name: str) -> _Table:
        self.seen.add(name)
        return _Table(self.data.get(name, {}), self.key(name), self.problems)

    def get(
        self, name: str, kind: type[T], default: T, check: Callable[[T], str | None] | None = None
    ) -> T:
        self.seen.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.problem(name, f"must be {_kind_name(kind)}, not {_kind(value)}")
            return default
        message = check(value) if check else None
        if message:
            self.problem(name, message)
            return default
        return value

    def duration(self, name: str, default: float, *, positive: bool = False) -> float:
        """Read seconds given as a number or as text with a unit: "90s", "20m", "6h", "1d"."""
        value = self.get(name, object, default)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds: float | None = float(value)
        elif isinstance(value, str):
            seconds = parse_duration(value)
        else:
            seconds = None
        if seconds is None or seconds < 0 or (positive and seconds == 0):
            least = "greater than 0" if positive else "0 or more"
            self.problem(name, f'must be a duration {least} (seconds, or "90s", "20m", "6h", "1d")')
            return default
        return seconds

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(value for _, value in self.indexed_strings(name, default))

    def indexed_strings(self, name: str, default: tuple[str, ...]) -> Iterator[tuple[int, str]]:
        """Yield (index, value) for each string of a list, reporting the others in order."""
        for index, item in enumerate(self.get(name, list, list(default))):
            if isinstance(item, str):
                yield index, item
            else:
                self.problem(f"{name}[{index}]", f"must be a string, not {_kind(item)}")

    def finish(self) -> None:
        for name in sorted(set(self.data) - self.seen):
            self.problem(name, "unknown key; see config.example.toml for the keys there are")


def parse_duration(text: str) -> float | None:
    """Given "90", "90s", "20m", "6h" or "1d", return seconds; None if it is not one."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    text = text.strip()
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


def _kind(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _kind_name(kind: type) -> str:
    return _kind(kind())


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _api(table: _Table, base: Path) -> ApiConfig:
    d = ApiConfig()
    url = table.get("base_url", str, d.base_url)
    insecure = table.get("allow_insecure_http", bool, d.allow_insecure_http)
    url_problem = _check_base_url(url, insecure)
    if url_problem:
        table.problem("base_url", url_problem)
    key_file = _optional_path(table, "api_key_file", base)
    if key_file is not None and not os.environ.get("REKA_API_KEY"):
        if not key_file.exists():
            table.problem("api_key_file", f"{key_file} does not exist; create it with the API key")
        elif not os.access(key_file, os.R_OK):
            table.problem("api_key_file", f"{key_file} is not readable by this user")
    ca_bundle = _optional_path(table, "ca_bundle", base)
    if ca_bundle is not None and not ca_bundle.is_file():
        table.problem("ca_bundle", f"{ca_bundle} is not a file")
    config = ApiConfig(
        base_url=url.rstrip("/"),
        api_key_file=key_file,
        ca_bundle=ca_bundle,
        allow_insecure_http=insecure,
        connect_timeout=table.get("connect_timeout", float, d.connect_timeout, _positive),
        read_timeout=table.get("read_timeout", float, d.read_timeout, _positive),
        stall_timeout=table.get("stall_timeout", float, d.stall_timeout, _positive),
        outage_grace=table.get("outage_grace", float, d.outage_grace, _non_negative),
    )
    table.finish()
    return config


def _check_base_url(url: str, allow_insecure: bool) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL"
    if parts.scheme == "http" and not allow_insecure and not _is_loopback(parts.hostname):
        return (
            "plain http would send the API key unencrypted; use https, "
            "or set api.allow_insecure_http = true if you really mean it"
        )
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _optional_path(table: _Table, name: str, base: Path) -> Path | None:
    value = table.get(name, str, "")
    return (base / Path(value).expanduser()) if value else None


def _journal(table: _Table, base: Path) -> JournalConfig:
    value = table.get("path", str, str(JournalConfig.path))
    path = base / Path(value).expanduser()
    if path.is_dir():
        table.problem("path", f"{path} is a directory; name the database file inside it")
    instance = table.get("instance", str, "") or default_instance()
    if not valid_instance(instance):
        table.problem(
            "instance", f"{instance!r}: use letters, digits, '.', '_' and '-' only (a host name)"
        )
    table.finish()
    return JournalConfig(path=path, instance=instance)


def _watch(table: _Table, base: Path, warnings: list[str]) -> WatchConfig:
    d = WatchConfig()
    roots: list[Path] = []
    for index, value in table.indexed_strings("roots", ()):
        root = (base / Path(value).expanduser()).resolve()
        if not root.exists():
            warnings.append(
                f"watch.roots[{index}]: {root} does not exist (yet); "
                "it is reported unavailable until it appears"
            )
        elif not root.is_dir():
            table.problem(f"roots[{index}]", f"{root} is not a directory")
        roots.append(root)
    ignore: list[str] = []
    for index, pattern in table.indexed_strings("ignore", d.ignore):
        ignore.append(pattern)
        try:
            compile_glob(pattern)
        except GlobError as exc:
            table.problem(f"ignore[{index}]", f"{pattern!r}: {exc}")
    extensions = tuple(e.lower().lstrip(".") for e in table.strings("extensions", d.extensions))
    if not extensions:
        table.problem("extensions", "must name at least one file extension")
    observer = table.get(
        "observer",
        str,
        d.observer,
        lambda v: None if v in OBSERVERS else f"must be one of {', '.join(OBSERVERS)}",
    )
    config = WatchConfig(
        roots=tuple(roots),
        extensions=extensions,
        ignore=tuple(ignore),
        settle_seconds=table.get("settle_seconds", float, d.settle_seconds, _non_negative),
        rescan_interval=table.get("rescan_interval", float, d.rescan_interval, _positive),
        observer=observer,
        mp4_index_wait=table.get("mp4_index_wait", float, d.mp4_index_wait, _non_negative),
        live_quiet_seconds=table.get(
            "live_quiet_seconds", float, d.live_quiet_seconds, _non_negative
        ),
        follow_symlinks=table.get("follow_symlinks", bool, d.follow_symlinks),
        on_change=table.get(
            "on_change",
            str,
            d.on_change,
            lambda v: None if v in ("replace", "keep") else "must be 'replace' or 'keep'",
        ),
        on_delete=table.get(
            "on_delete",
            str,
            d.on_delete,
            lambda v: None if v in ("keep", "delete") else "must be 'keep' or 'delete'",
        ),
        delete_grace=table.duration("delete_grace", d.delete_grace),
        max_deletes_per_hour=table.get(
            "max_deletes_per_hour", int, d.max_deletes_per_hour, _non_negative
        ),
        remote_check_interval=table.duration(
            "remote_check_interval", d.remote_check_interval, positive=True
        ),
    )
    table.finish()
    return config


def _upload(table: _Table, base: Path) -> UploadConfig:
    d = UploadConfig()

    def workers_ok(v: int) -> str | None:
        return None if 1 <= v <= MAX_WORKERS else f"must be between 1 and {MAX_WORKERS}"

    def attempts_ok(v: int) -> str | None:
        return None if v >= 1 else "must be 1 or more"

    config = UploadConfig(
        workers=table.get("workers", int, d.workers, workers_ok),
        max_attempts=table.get("max_attempts", int, d.max_attempts, attempts_ok),
        backoff_base=table.get("backoff_base", float, d.backoff_base, _positive),
        backoff_cap=table.get("backoff_cap", float, d.backoff_cap, _positive),
        poll_interval=table.get("poll_interval", float, d.poll_interval, _positive),
        processing_deadline=table.get(
            "processing_deadline", float, d.processing_deadline, _positive
        ),
        lease_seconds=table.get("lease_seconds", float, d.lease_seconds, _positive),
        reupload_removed=table.get("reupload_removed", bool, d.reupload_removed),
        after_upload=_after_upload(table, base) or d.after_upload,
        max_rate=_rate(table, "max_rate", d.max_rate),
        schedule=_schedule(table),
    )
    table.finish()
    return config


def _rate(table: _Table, name: str, default: int) -> int:
    rate = parse_rate(table.get(name, object, default))  # type: ignore[arg-type]
    if rate is None or 0 < rate < MIN_RATE:
        table.problem(
            name,
            'must be bytes per second, 0 (no cap) or at least "16KiB": a number, or "20MiB",'
            ' "500KiB", "2MB"',
        )
        return default
    return rate


def _schedule(table: _Table) -> tuple[Window, ...]:
    """Read `[[upload.schedule]]`: windows with days, hours, and workers and/or max_rate."""
    windows: list[Window] = []
    for index, item in enumerate(table.get("schedule", list, [])):
        entry = _Table(item, f"{table.key('schedule')}[{index}]", table.problems)
        days = entry.get("days", str, ALL_DAYS, days_problem)
        hours = entry.get("hours", str, ALL_HOURS, hours_problem)
        workers = entry.get("workers", int, -1, _workers_or_none)
        rate = _rate(entry, "max_rate", -1) if "max_rate" in entry.data else -1
        abort = entry.get("abort_in_flight", bool, False)
        entry.finish()
        if "workers" not in entry.data and "max_rate" not in entry.data:
            entry.problem("", "a window needs workers and/or max_rate")
        if abort and workers != 0:
            entry.problem("abort_in_flight", "applies only to a window with workers = 0")
        windows.append(
            Window(
                days.lower(),
                hours,
                rate if rate >= 0 else None,
                workers if workers >= 0 else None,
                abort,
                index,
            )
        )
    return tuple(windows)


def _workers_or_none(v: int) -> str | None:
    return None if 0 <= v <= MAX_WORKERS else f"must be between 0 and {MAX_WORKERS}"


def split_listen(listen: str) -> tuple[str, int] | None:
    """Given "host:port" (or "[v6]:port"), return (host, port); None if it is not one."""
    host, _, port = listen.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _metrics(table: _Table) -> MetricsConfig:
    listen = table.get("listen", str, "").strip()
    if listen and split_listen(listen) is None:
        table.problem("listen", f'{listen!r}: use "host:port", e.g. "127.0.0.1:9464"; "" = off')
        listen = ""
    table.finish()
    return MetricsConfig(listen=listen)


def _after_upload(table: _Table, base: Path) -> str | None:
    """Read a table's `after_upload` (and `after_upload_confirm` beside it): "keep",
    "delete" (only when confirmed) or "move:DIR"; return it with DIR made absolute, or
    None when unset."""
    value = table.get("after_upload", str, "").strip()
    confirmed = table.get("after_upload_confirm", bool, False)
    if value in ("", "keep"):
        return value or None
    if value == "delete":
        if not confirmed:
            table.problem(
                "after_upload",
                '"delete" deletes each file once its video is stored; set after_upload_confirm'
                " = true beside it to mean it",
            )
        return value
    folder = value.removeprefix("move:").strip()
    if value.startswith("move:") and folder:
        return "move:" + str((base / Path(folder).expanduser()).resolve())
    table.problem("after_upload", f'{value!r}: use "keep", "move:DIR" or "delete"')
    return None


def _groups(table: _Table, base: Path) -> GroupsConfig:
    d = GroupsConfig()
    rules: list[Rule] = []
    for index, item in enumerate(table.get("rules", list, [])):
        rule = _rule(_Table(item, f"groups.rules[{index}]", table.problems), base)
        if rule is not None:
            rules.append(rule)
    config = GroupsConfig(
        create_missing=table.get("create_missing", bool, d.create_missing),
        default=table.get("default", str, d.default),
        rules=tuple(rules),
    )
    table.finish()
    return config


def _index(table: _Table) -> IndexConfig:
    d = IndexConfig()

    def attempts_ok(v: int) -> str | None:
        return None if v >= 1 else "must be 1 or more"

    config = IndexConfig(
        features=_features(table),
        max_per_day=table.get("max_per_day", int, d.max_per_day, _non_negative),
        max_attempts=table.get("max_attempts", int, d.max_attempts, attempts_ok),
        scene_detection=table.get("scene_detection", bool, d.scene_detection),
        poll_interval=table.get("poll_interval", float, d.poll_interval, _positive),
    )
    table.finish()
    return config


def _features(table: _Table) -> tuple[str, ...]:
    """Read a `features` list: only the documented features (dependencies come later)."""
    found: list[str] = []
    named = list(table.indexed_strings("features", ()))
    if not named:
        return ()
    from reka_sync.features import FEATURES  # only a config that names features needs it

    for index, name in named:
        if name in FEATURES:
            found.append(name)
        else:
            table.problem(
                f"features[{index}]", f"{name!r} is not a feature; use {', '.join(FEATURES)}"
            )
    return tuple(dict.fromkeys(found))


def _rule(table: _Table, base: Path) -> Rule | None:
    match = table.get("match", str, "")
    group = table.get("group", str, "")
    features = _features(table)
    after = _after_upload(table, base)
    table.finish()
    if not match:
        table.problem("match", "is required: a glob on the path relative to its root")
    if not group:
        table.problem("group", "is required: the group name, with {captures} from match")
    if not match or not group:
        return None
    try:
        glob = compile_glob(match)
    except GlobError as exc:
        table.problem("match", f"{match!r}: {exc}")
        return None
    missing = [name for name in template_fields(group) if name not in glob.captures]
    if missing:
        table.problem(
            "group",
            f"{group!r} uses {{{missing[0]}}} but match {match!r} "
            f"captures only {list(glob.captures) or 'nothing'}",
        )
        return None
    try:
        group.format_map(dict.fromkeys(glob.captures, "x"))
    except (ValueError, IndexError, KeyError) as exc:
        table.problem("group", f"{group!r} is not a valid template: {exc}")
        return None
    return Rule(match=match, group=group, features=features, after_upload=after)
