"""`reka-sync backfill`: scan, record, run the engine until every file is finished, summarise."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from reka_sync.config import Config, MetricsConfig
from reka_sync.credentials import Secret
from reka_sync.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_IOERR,
    EXIT_OK,
    EXIT_TEMPFAIL,
    JournalError,
    UsageError,
)
from reka_sync.features import needing_more
from reka_sync.fingerprint import digest_file, sample_file
from reka_sync.journal import Job, Journal, Listed, Scope, SeenFile, Skipped
from reka_sync.journal.connection import JournalDamaged
from reka_sync.lifecycle import ACTIVE, State
from reka_sync.mounts import probe
from reka_sync.names import shown
from reka_sync.patterns import IgnoreRules
from reka_sync.progress import Progress, human_size
from reka_sync.recording import BATCH, record, record_walk
from reka_sync.scanner import ScanProblem, links_of, walk, walk_folders
from reka_sync.urls import URL_ROOT, UrlItem

if TYPE_CHECKING:
    from reka_sync.scheduler import Engine

WAIT_STEP = 0.1  # seconds between looks at the engine's health
# Looks at the journal (progress, and whether all is done) come every WAIT_STEP, or
# LOOK_COST times what the last one took if that is longer: at most 5% of a core.
LOOK_COST = 20
LOOK_MOST = 2.0  # seconds: the end of a backfill is seen within this, however big
DEFERRED_SHOWN = 10  # files named in the text summary whose indexing waits for the cap
JOURNAL_PATIENCE = 5.0  # seconds the journal may fail to write before a backfill gives up
# A scope's files by state, and its done files by group (`Journal.scope_census`).
Census = tuple[Mapping[State, int], Mapping[str, int]]


@dataclass
class Targets:
    """Where a backfill walks, the scope of journal rows it covers, and the roots away."""

    walks: list[tuple[Path, Path | None]] = field(default_factory=list)  # (root, start)
    scope: Scope = field(default_factory=Scope)
    unavailable: list[Path] = field(default_factory=list)
    mounted: dict[str, str] = field(default_factory=dict)  # root -> its mount point


def targets(config: Config, paths: list[Path], last_mounts: Mapping[str, str]) -> Targets:
    """Given the config, optional paths inside its roots and where roots were mounted,
    return what to walk.

    Raise UsageError if a path is outside every root, or does not exist.
    """
    found = Targets()
    named: list[tuple[str, str]] = []
    for raw in paths:
        path = raw.resolve()
        root = next((r for r in config.watch.roots if path.is_relative_to(r)), None)
        if root is None:
            raise UsageError(f"{raw} is not under any watch.roots entry")
        if not path.exists():
            raise UsageError(f"{raw} does not exist")
        found.walks.append((root, path))
        named.append((str(root), str(path)))
    for root in config.watch.roots if not paths else []:
        there, point = probe(root, last_mounts.get(str(root)))
        if there:
            found.walks.append((root, None))
            found.mounted[str(root)] = point
        else:
            found.unavailable.append(root)
    found.scope = Scope(tuple(str(r) for r, _ in found.walks if not paths), tuple(named))
    return found


def files_of(
    config: Config, found: Targets, problems: list[ScanProblem], skipped: list[Skipped]
) -> Iterator[SeenFile]:
    """Given the config and what to walk, yield the wanted files one by one; unreadable
    folders go to `problems`, links not followed and special files to `skipped`."""
    ignore = IgnoreRules(config.watch.ignore, config.watch.extensions)
    links = links_of(config.watch)
    for root, start in found.walks:
        yield from walk(root, ignore, start, problems, links, skipped)


def run(
    config: Config,
    key: Secret | None,
    paths: list[Path],
    *,
    dry_run: bool,
    as_json: bool,
    max_wait: float = 900.0,
    wait_index: bool = True,
    urls: list[UrlItem] | None = None,
    ignore_schedule: bool = False,
    metrics_listen: str = "",
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Given the config, back the roots (or `paths`) up once, waiting for the features its
    rules ask for unless not `wait_index`; return the exit code: 0 all done, 1 some failed
    or interrupted, 74 the journal cannot be written, 75 the API stayed unreachable for
    `max_wait` seconds (0: wait forever), 78 the API refused the key; a damaged journal
    stops it at once (1), the file left as it was. Given `urls`, upload those (and wait
    for every URL recorded) instead of walking the roots. `ignore_schedule` sets the
    [[upload.schedule]] windows aside (an operator's pause still holds). Metrics are served
    on `metrics_listen` ("host:port"; "" = none), never on the service's metrics.listen."""
    if ignore_schedule:
        config = replace(config, upload=replace(config.upload, schedule=()))
    config = replace(config, metrics=MetricsConfig(listen=metrics_listen))
    try:
        journal = Journal.open(config.journal.path, check_beside=True)  # checked as it walks
    except JournalDamaged as damage:
        from reka_sync.journal.maintenance import refuse_to_start  # (not imported otherwise)

        return refuse_to_start(damage, "backfill", err)
    started = False  # the checked journal's work began: damage met then is not a refusal
    try:
        found = (
            targets(config, paths, journal.root_mounts())
            if urls is None
            else Targets(scope=Scope(roots=(URL_ROOT,)))
        )
        for root in found.unavailable:
            print(f"reka-sync: warning: {root} is unavailable (not mounted?); skipped", file=err)
        problems: list[ScanProblem] = []
        if dry_run:
            journal.checked()
            code = _dry_run(config, journal, files_of(config, found, problems, []), as_json, out)
            _warn(problems, err)
            return code
        assert key is not None
        for mounted, point in found.mounted.items():
            journal.set_root_available(mounted, True, time.time(), point)
        _record(config, journal, found, problems, err)
        _queue_more(config, journal, urls)
        interrupted, stopped = False, None
        journal.checked()  # nothing is sent or reported from a damaged journal
        started = True
        census = journal.scope_census(found.scope)
        counted: Census | None = census  # what the summary says
        if _work_left(journal, found.scope, census[0], wait_index):  # else no engine at all
            interrupted, stopped = _drive(
                config, journal, key, found.scope, err, max_wait, wait_index
            )
            counted = None  # the engine changed it: counted again
        summary = summarise(journal, found.scope, interrupted or stopped is not None, counted)
    except JournalDamaged as damage:
        if started:
            raise
        from reka_sync.journal.maintenance import refuse_to_start

        return refuse_to_start(_verdict(journal, damage), "backfill", err)
    finally:
        journal.close()
    _print_summary(summary, as_json, out)
    if stopped is not None:
        code, message = stopped
        print(f"reka-sync: {message}", file=err)
        return code
    return EXIT_FAILED if summary["failed"] or interrupted else EXIT_OK


def _queue_more(config: Config, journal: Journal, urls: list[UrlItem] | None) -> None:
    """Record the URLs given, and queue what the rules want of videos already done."""
    if urls:
        journal.record_urls(urls, time.time())
    if config.rules().any_features:  # done videos the rules now want more features of
        from reka_sync.indexer import reindex

        reindex(journal, config.rules(), time.time())
    elif journal.index_held():
        journal.wake_held(time.time())  # the cap may have changed


def _verdict(journal: Journal, damage: JournalDamaged) -> JournalDamaged:
    """Given the damage a read or write met, return the integrity check's own verdict if it
    found some (what `run` says of the same file), else the damage met."""
    try:
        journal.checked()
    except JournalDamaged as found:
        return found
    return damage


def _record(
    config: Config, journal: Journal, found: Targets, problems: list[ScanProblem], err: TextIO
) -> None:
    """Record the files as the walk finds them, a batch at a time (never the whole tree
    in memory), with what it skipped, and say what could not be read."""
    now = time.time()
    ignore = IgnoreRules(config.watch.ignore, config.watch.extensions)
    links = links_of(config.watch)
    skipped: list[Skipped] = []

    def refused(path: str, why: str) -> None:
        print(f"reka-sync: warning: cannot record {shown(path)}: {why}", file=err)

    for root, start in found.walks:
        if start is None:  # a whole root: compared with the journal's keys, like a rescan
            walker = partial(walk_folders, root, ignore, str(root), problems, links, skipped)
            record_walk(journal, root, walker, skipped, now, 1, refused)
        else:
            batch: list[SeenFile] = []
            for seen in walk(root, ignore, start, problems, links, skipped):
                batch.append(seen)
                if len(batch) >= BATCH:
                    record(journal, batch, skipped, now, 1, refused)
            record(journal, batch, skipped, now, 1, refused)
        _warn(problems, err)


def _warn(problems: list[ScanProblem], err: TextIO) -> None:
    for problem in problems:
        print(f"reka-sync: warning: cannot read {problem.path}: {problem.reason}", file=err)
    problems.clear()


def _work_left(
    journal: Journal, scope: Scope, counts: Mapping[State, int], wait_index: bool
) -> bool:
    """Given how many files of the scope are in each state, is any of them unfinished, or
    a video of an earlier content to retire?"""
    return (
        bool(counts[State.DISCOVERED])
        or _waited_for(journal, scope, counts, wait_index) > 0
        or bool(journal.superseded_due(1))
    )


def _waited_for(
    journal: Journal, scope: Scope, counts: Mapping[State, int], wait_index: bool
) -> int:
    """How many files of the scope a backfill waits for, settling ones aside: those on their
    way, and those being indexed (`wait_index`) but for those the daily cap holds back."""
    busy = sum(counts[s] for s in ACTIVE if s not in (State.DISCOVERED, State.INDEXING))
    indexing = counts[State.INDEXING] if wait_index else 0
    if indexing:
        indexing -= len(journal.scope_held(scope))
    return busy + indexing


def _drive(
    config: Config,
    journal: Journal,
    key: Secret,
    scope: Scope,
    err: TextIO,
    max_wait: float,
    wait_index: bool,
) -> tuple[bool, tuple[int, str] | None]:
    """Run the engine until every file in `scope` is finished; return whether a signal
    interrupted it, and the exit code and reason if the environment stopped it."""
    from reka_sync.reconcile import adopt_on_start
    from reka_sync.scheduler import Engine  # only a backfill with work to do needs it
    from reka_sync.service import on_stop_signals

    engine = Engine(config, journal, key, one_shot=True)
    # A lost or restored journal: adopt what the API has before anything is sent.
    engine.adopt_first(partial(adopt_on_start, config, journal, engine.api))
    stop = threading.Event()
    on_stop_signals(stop.set)
    tally = journal.scope_tally(scope)
    progress = Progress(
        err,
        total_files=sum(count for count, _ in tally.values()),
        total_bytes=sum(size for _, size in tally.values()),
    )
    engine.start()
    stopped: tuple[int, str] | None = None
    looked, pace = 0.0, WAIT_STEP
    try:
        while not stop.is_set():
            engine.wait_change(WAIT_STEP)  # a step ended (its outcome committed), or a while
            now = time.monotonic()
            stopped = _environment_stops(engine, max_wait, time.time())
            if stopped is not None:
                break
            if now - looked < pace:  # a big scope's count is slow: look no more often
                if stop.wait(pace - (now - looked)):
                    break
                now = time.monotonic()
            tally = journal.scope_tally(scope)
            looked = time.monotonic()  # a big scope's count is slower: look less often
            pace = min(LOOK_MOST, LOOK_COST * (looked - now))
            progress.update(
                tally,
                sum(engine.in_flight().values()),
                journal.pauses(time.time()),
                engine.governor.limits.held if engine.governor.limits else None,
            )
            counts = {state: count for state, (count, _) in tally.items()}
            if _finished(journal, scope, counts, engine.settler.left, wait_index):
                engine.confirm.retire(journal.superseded_due())  # videos of old contents
                break
    except JournalError as exc:
        stopped = _journal_stops(journal.path, str(exc))
    finally:
        engine.stop()
        progress.close()
    return stop.is_set(), stopped


def _finished(
    journal: Journal,
    scope: Scope,
    counts: Mapping[State, int],
    left: Mapping[int, str],
    wait_index: bool,
) -> bool:
    """Is every file of the scope finished, but those left for the service?"""
    if _waited_for(journal, scope, counts, wait_index):
        return False
    waiting = counts[State.DISCOVERED]
    if waiting == 0:
        return True
    return waiting <= len(left) and journal.scope_ids(scope, State.DISCOVERED) <= left.keys()


def _environment_stops(engine: Engine, max_wait: float, now: float) -> tuple[int, str] | None:
    """Given the engine's view of the environment, return why a one-shot run must stop."""
    if engine.vitals.key_refused:
        return EXIT_CONFIG, (
            f"{engine.vitals.key_refused}: fix api_key_file, $REKA_API_KEY or the credential "
            "reka-api-key, then run backfill again"
        )
    since = engine.vitals.reach.since
    if since is not None and max_wait > 0 and now - since >= max_wait:
        return EXIT_TEMPFAIL, (
            f"the API is unreachable since {_iso(since)} ({engine.vitals.reach.reason}); "
            "nothing was lost: run backfill again later"
        )
    trouble = engine.vitals.journal_trouble
    if trouble is not None and now - trouble[0] >= JOURNAL_PATIENCE:
        return _journal_stops(engine.journal.path, engine.vitals.journal_error)
    return None


def _journal_stops(path: Path, error: str) -> tuple[int, str]:
    import shutil

    try:
        free = shutil.disk_usage(path.parent).free
        room = f"{human_size(free)} free on its disk"
    except OSError:
        room = "its disk cannot be read"
    return EXIT_IOERR, (
        f"the journal {path} cannot be written ({error}); {room}. Free some space or fix "
        "its permissions, then run backfill again: it carries on where it stopped"
    )


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def summarise(
    journal: Journal, scope: Scope, interrupted: bool = False, census: Census | None = None
) -> dict[str, Any]:
    """Given the journal and a backfill's scope (and its census, if just counted), return
    counts by outcome and by group, and the files that failed, were left or skipped (a
    few aggregate queries)."""
    counts, groups = census or journal.scope_census(scope)
    return {
        "files": sum(counts.values()),
        "outcomes": {state.value: count for state, count in sorted(counts.items()) if count},
        "groups": groups,
        "duplicates": len(journal.scope_listed(scope, State.SKIPPED, with_video=True)),
        "failed": counts[State.FAILED],
        "failures": _listed(journal.scope_listed(scope, State.FAILED), "error"),
        # still being written, or empty: the service takes them
        "left": [] if interrupted else _listed(journal.scope_listed(scope, State.DISCOVERED)),
        "skipped": _listed(journal.scope_listed(scope, State.SKIPPED)),
        "index_deferred": _listed(journal.scope_held(scope)) if counts[State.INDEXING] else [],
        "interrupted": interrupted,
    }


def _listed(files: list[Listed], why: str = "reason") -> list[dict[str, str | None]]:
    return [{"path": shown(item.path), why: item.reason} for item in files]


def _print_summary(summary: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(summary, indent=2), file=out)
        return
    print(f"backfill: {summary['files']} files", file=out)
    for outcome, count in summary["outcomes"].items():
        print(f"  {outcome:<11} {count}", file=out)
    if summary["duplicates"]:
        print(
            f"  ({summary['duplicates']} skipped as duplicates of videos already uploaded)",
            file=out,
        )
    if summary["groups"]:
        print("by group:", file=out)
        for group, count in summary["groups"].items():
            print(f"  {group:<30} {count}", file=out)
    for failure in summary["failures"]:
        print(f"FAILED {failure['path']}: {failure['error']}", file=out)
    for item in summary["left"]:
        print(f"LEFT   {item['path']}: {item['reason']}", file=out)
    for item in summary["skipped"]:
        print(f"SKIPPED {item['path']}: {item['reason']}", file=out)
    _print_deferred(summary, out)
    if summary["interrupted"]:
        print("interrupted: run the same command again to finish", file=out)


def _print_deferred(summary: dict[str, Any], out: TextIO) -> None:
    deferred = summary["index_deferred"]
    if deferred:
        print(f"indexing deferred to the service (daily cap): {len(deferred)} files", file=out)
        for item in deferred[:DEFERRED_SHOWN]:
            print(f"  {item['path']}", file=out)
        if len(deferred) > DEFERRED_SHOWN:
            print(f"  ... and {len(deferred) - DEFERRED_SHOWN} more (--json lists all)", file=out)
    indexing = summary["outcomes"].get(State.INDEXING.value, 0) - len(deferred)
    if indexing > 0:
        print(f"indexing left to the service: {indexing} files", file=out)


def _dry_run(
    config: Config, journal: Journal, files: Iterator[SeenFile], as_json: bool, out: TextIO
) -> int:
    rules = config.rules()
    plan: list[dict[str, Any]] = []
    for seen in files:
        decision = rules.decide(seen.rel_path)
        job = journal.find(seen.path)
        plan.append(
            {
                "path": shown(seen.path),
                "group": decision.group or "",
                "features": list(decision.features),
                "rule": decision.reason,
                "status": _planned_status(journal, seen, job),
            }
        )
    more, lacking = (
        needing_more(journal.done_videos(), rules.features) if rules.any_features else (0, {})
    )
    if as_json:
        reindex = {"videos": more, "lacking": lacking}
        print(json.dumps({"files": plan, "index_more": reindex}, indent=2), file=out)
    else:
        for item in plan:
            group = f"group {item['group']!r}" if item["group"] else "no group"
            indexed = f" + {', '.join(item['features'])}" if item["features"] else ""
            print(f"{item['status']:<24} {item['path']} -> {group}{indexed}", file=out)
        counts = Counter(item["status"].split()[0] for item in plan)
        print("dry run: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out)
        if more:
            print(f"{more} videos already uploaded would be indexed for more features", file=out)
    return 0


def _planned_status(journal: Journal, seen: SeenFile, job: Job | None) -> str:
    if job is not None and job.stat.same_content_as(seen.stat):
        if job.state is State.DONE:
            return "done already"
        if job.state is not State.DISCOVERED:
            return f"{job.state.value} (in journal)"
    sample = sample_file(Path(seen.path), seen.stat.size)
    twins = journal.uploaded_twins(seen.stat.size, sample, job.id if job else -1)
    if twins:
        digest = digest_file(Path(seen.path))
        twin = next((t for t in twins if t.digest == digest), None)
        if twin is not None:
            return f"duplicate of {twin.path}"
    return "new"
