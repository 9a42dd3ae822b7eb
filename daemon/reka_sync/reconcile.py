"""`reka-sync reconcile`, and the adoption every start runs: the journal and the API made
to agree again after a lost, damaged or restored journal.

The key's videos are read as the listing streams in (`ApiClient.iter_videos`), kept as
small records, and classed by `recovery.plan` against the journal and the files under
the roots. Without `apply` nothing changes. With it: adopted videos are recorded
(their files go to `uploaded`, and the status poll confirms them stored, filed and
indexed as usual), missing ones are queued again if asked, duplicates deleted if asked.
Foreign videos are never touched.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import structlog

from reka_sync import markers, recovery
from reka_sync.api import ApiClient
from reka_sync.config import Config
from reka_sync.deletions import removed
from reka_sync.errors import NotFound, RekaSyncError
from reka_sync.fingerprint import sample_file
from reka_sync.journal import Journal, SeenFile
from reka_sync.lifecycle import Event
from reka_sync.moves import Changes, Move
from reka_sync.names import shown
from reka_sync.recovery import Adopt, Done, Found, Plan, Remote
from reka_sync.scanner import links_of, stat_file
from reka_sync.stability import FileStat
from reka_sync.urls import URL_ROOT, UrlItem, is_url_root, name_of, url_sample

log = structlog.get_logger("reka_sync.reconcile")
SHOWN = 20  # files named per class in the text report


@dataclass(frozen=True)
class Choices:
    """What `reconcile` may change."""

    apply: bool = False
    reupload_missing: bool = False
    delete_duplicates: bool = False


def survey(config: Config, journal: Journal, api: ApiClient, *, missing: bool = True) -> Plan:
    """Given the config, the journal and the API, return the plan: every video of the key
    classed against the journal and the files under the roots. `missing=False`: leave the
    journal's videos the listing lacks out (each costs a request to confirm it is gone)."""
    known_videos, known_keys = journal.known_remote()
    links = links_of(config.watch)

    def find(marker: markers.Marker) -> Found | None:
        if marker.rel_path and "://" in marker.rel_path:  # a URL's video: no file to look at
            return Found(URL_ROOT, marker.rel_path, FileStat(0, 0, 0, 0))
        rel = Path(marker.rel_path or "")
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            return None  # a marker never names a file outside its root
        for root in config.watch.roots:
            path = str(root / rel)
            stat = stat_file(path, links)
            if stat is not None and (stat.size, stat.mtime_ns) == (marker.size, marker.mtime_ns):
                return Found(str(root), path, stat)
        return None

    remotes = (
        Remote(v.video_id, v.status, v.group_id, markers.parse(v.description))
        for v in api.iter_videos()
    )
    done = (Done(*row) for row in journal.stored_files()) if missing else ()
    plan = recovery.plan(remotes, config.journal.instance, known_videos, known_keys, done, find)
    plan.missing = [d for d in plan.missing if _gone(api, d.video_id)]  # one listing is not proof
    return plan


def _gone(api: ApiClient, video_id: str) -> bool:
    """Given a video the listing lacked, return True if the API says it has no such video."""
    try:
        api.get_video(video_id)
    except NotFound:
        return True
    return False


def apply(
    plan: Plan, choices: Choices, journal: Journal, api: ApiClient, now: float
) -> dict[str, int]:
    """Given a plan and what may change, make the changes; return how many of each."""
    made = {"adopted": 0, "removed": 0, "requeued": 0, "deleted": 0}
    if choices.apply:
        made["adopted"] = adopt(plan.adopted, journal, api, now)
    if choices.apply:  # missing: marked removed, or queued again if asked
        moves = [removed(d.job_id, d.video_id, choices.reupload_missing) for d in plan.missing]
        done = len(moves) - len(journal.apply_many(moves, now))  # removed already: refused
        made["requeued" if choices.reupload_missing else "removed"] = done
    if choices.apply and choices.delete_duplicates:
        for _, extras in plan.duplicates:
            for extra in extras:
                with contextlib.suppress(NotFound):  # gone already
                    api.delete_video(extra.video_id)
                made["deleted"] += 1
    return made


def adopt(adopted: list[Adopt], journal: Journal, api: ApiClient, now: float) -> int:
    """Given videos to adopt, record each for its file (recording the file first if the
    journal never saw it); return how many were adopted."""
    if not adopted:
        return 0
    groups = {g.group_id: g.name for g in api.list_groups()}
    journal.record_scan(
        [SeenFile(a.file.path, a.file.root, _rel(a), a.file.stat, now) for a in adopted], now
    )
    moves = []
    for item in adopted:
        job = journal.find(item.file.path)
        if job is None:
            continue
        marker, remote = item.remote.marker, item.remote
        assert marker is not None
        changes = Changes(
            video_id=remote.video_id,
            digest=marker.digest,
            sample_hash=_sample(item.file),
            upload_key=marker.key,
            accepted_at=now,
            remote_status=remote.status,
            outcome_unknown=False,
            lease=None,
            group_id=remote.group_id,
            group_name=groups.get(remote.group_id or ""),
            next_attempt_at=now,
            last_error=None,
        )
        detail = {"video_id": remote.video_id, "by": "reconcile"}
        moves.append(Move(job.id, Event.ADOPTED, changes, detail, expect=item.file.stat))
    refused = journal.apply_many(moves, now)
    for move, why in refused:
        log.info(
            "not adopted: the journal has this file in another state", job=move.job_id, why=why
        )
    return len(moves) - len(refused)


def _rel(item: Adopt) -> str:
    """Given an adoption, return its file's path relative to its root (a URL: its name)."""
    if is_url_root(item.file.root):
        return name_of(UrlItem(item.file.path))
    return str(Path(item.file.path).relative_to(item.file.root))


def _sample(found: Found) -> str | None:
    """Given a file found, return its sample hash (a URL's stand-in), or None if unreadable."""
    if is_url_root(found.root):
        return url_sample(found.path)
    try:
        return sample_file(Path(found.path), found.stat.size)
    except RekaSyncError:
        return None


def adopt_on_start(config: Config, journal: Journal, api: ApiClient) -> int:
    """Given the config, the journal and the API, adopt the videos of this instance the
    journal does not know whose files are there (a lost, new or restored journal), and
    say so; return how many. Raise RekaSyncError if the API cannot be listed whole now
    (the caller holds uploads back and tries again)."""
    plan = survey(config, journal, api, missing=False)  # adoption needs none of them
    count = adopt(plan.adopted, journal, api, time.time())
    if count:
        log.warning(
            "reconcile: adopted videos the journal did not know (a lost or restored journal?);"
            " they are not uploaded again",
            adopted=count,
        )
    return count


def report(plan: Plan, made: dict[str, int] | None) -> dict[str, Any]:
    """Given a plan and what was changed (None: a dry run), return the report."""
    return {
        "known": plan.known,
        "adopted": [
            {"path": shown(a.file.path), "video_id": a.remote.video_id} for a in plan.adopted
        ],
        "missing_remotely": [{"path": shown(d.path), "video_id": d.video_id} for d in plan.missing],
        "duplicates": [
            {"keep": keep.video_id, "delete": [e.video_id for e in extras]}
            for keep, extras in plan.duplicates
        ],
        "orphans": [
            {"video_id": r.video_id, "path": (r.marker.rel_path if r.marker else None)}
            for r in plan.orphans
        ],
        "foreign": plan.foreign,
        "changed": made,
    }


def print_report(data: dict[str, Any], as_json: bool, out: TextIO) -> None:
    """Given a report, print it as JSON or as lines for a person."""
    if as_json:  # written as it is encoded: 100,000 entries never sit in memory twice
        json.dump(data, out, indent=2)
        print(file=out)
        return
    duplicates = sum(len(d["delete"]) for d in data["duplicates"])
    rows = [
        ("known", data["known"], "in the journal already"),
        ("adopted", len(data["adopted"]), "files whose video the journal did not know"),
        ("missing", len(data["missing_remotely"]), "done here, gone from the API"),
        ("duplicates", duplicates, "extra videos of a content stored already"),
        ("orphans", len(data["orphans"]), "ours, and their file is gone or changed"),
        ("foreign", data["foreign"], "another instance's or not reka-sync's: never touched"),
    ]
    print("reconcile:", file=out)
    for name, count, meaning in rows:
        print(f"  {name:<11}{count:>7}  {meaning}", file=out)
    for name, key in (("ADOPT", "adopted"), ("MISSING", "missing_remotely"), ("ORPHAN", "orphans")):
        for item in data[key][:SHOWN]:
            print(f"{name:<8} {item['path']} ({item['video_id']})", file=out)
    changed = data["changed"]
    if changed is None:
        print(
            "dry run: nothing changed. --apply adopts; with --reupload-missing and "
            "--delete-duplicates it also acts on those",
            file=out,
        )
    else:
        print(", ".join(f"{n} {what}" for what, n in changed.items()), file=out)
