"""Indexing decisions: what a stored video still needs, what to trigger now, and when to
look again (pure: no I/O, no clock).

The API indexes a video per feature (transcript, captions, embeddings, objects), each
with dependencies listed in its feature catalog; upload never starts any of them. A
rule names the features its videos need; the journal keeps, per video, a *run*: the
features asked for with their last known status, attempts and errors.

How a run goes (`decide` is called with fresh statuses every time):

* The first look is a plan (`POST .../features/plan`): the API's own view of what is
  required and actionable, and only what it calls actionable is triggered. Afterwards
  statuses come from the batched video listing (``GET /v2/videos?ids=...``, its
  ``features`` map), and a feature is triggered once every dependency is ``ready``:
  the rule the plan applies, without a plan per video per look. A feature a plan
  withholds although its dependencies are ready is left to the next plan.
* A trigger is recorded ``requested`` (and its attempt spent) before it is sent. A
  row still ``requested`` at the next look means its answer was lost (a crash, a
  malformed reply), and a listing that no longer shows a feature it showed is in
  doubt: either way that look is a plan, never a blind second trigger (triggers are
  metered).
* A feature the API reports ``failed`` (or whose trigger it refused) is run again
  with ``force`` after a backoff; each run spends one of the feature's own attempts,
  and past ``max_attempts`` the video fails with the reason. Nothing pending,
  processing or ready is ever triggered.
* A run that triggers its first feature *starts*: at most ``max_per_day`` runs start
  per UTC day; the others are held until the next day begins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from reka_sync.lifecycle import Event
from reka_sync.moves import Changes, Move
from reka_sync.retry import Backoff

FEATURES = ("transcript", "captions", "embeddings", "objects")  # what a rule may ask for
# As documented; the service uses the API's catalog, this is for offline answers only.
DOCUMENTED_DEPENDENCIES: Mapping[str, tuple[str, ...]] = {
    "transcript": (),
    "captions": ("transcript",),
    "objects": ("transcript",),
    "embeddings": ("transcript", "captions"),
}
DAY = 86400.0
REQUESTED = "requested"  # ours: a trigger went out and its answer is not recorded
SHOWN = frozenset({"pending", "processing", "ready"})  # a listing that drops these is in doubt
DAILY_CAP = "daily cap"
GONE = "the API no longer has the video (deleted remotely?); nothing to index"

Catalog = Mapping[str, tuple[str, ...]]  # feature -> the features it depends on


class Outcome(StrEnum):
    INDEXED = "indexed"  # every feature asked for (and its dependencies) is ready
    FAILED = "failed"  # a feature failed past its attempts, or the API cannot do it


@dataclass(frozen=True)
class Feature:
    """One feature of a video's run, as the journal keeps it."""

    name: str
    status: str = "none"  # the API's: none pending processing ready failed blocked; or REQUESTED
    attempts: int = 0  # runs of it we started (each trigger), since the run began
    retry_at: float = 0.0  # after a failure: when it may run again (with force)
    triggered_at: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Run:
    """A video's indexing run, as the journal keeps it."""

    job_id: int
    video_id: str
    features: Mapping[str, Feature] = field(default_factory=dict)
    needs_plan: bool = True  # the next look is a plan (first look, or an answer lost)
    started_at: float | None = None  # its first trigger: counted against the daily cap
    held: str | None = None  # why it waits (the daily cap)
    streak: int = 0  # looks in a row that failed (an outage, a 5xx)
    version: int = 0  # of its journal row as read (0: none yet); a write must match it


@dataclass(frozen=True)
class Policy:
    """The indexing settings the decisions need."""

    max_attempts: int
    max_per_day: int  # 0: no cap
    backoff: Backoff
    poll_interval: float


@dataclass(frozen=True)
class Look:
    """What the API said of a video at this look."""

    statuses: Mapping[str, str]  # feature -> status; absent means none
    actionable: frozenset[str] | None = None  # from a plan; None when from the listing
    required: tuple[str, ...] | None = None  # a plan's all_required


@dataclass(frozen=True)
class IndexMove:
    """A run's new state; the journal writes it in one transaction, then triggers may go."""

    run: Run
    trigger: tuple[tuple[str, bool], ...] = ()  # (feature, force) to send once committed
    outcome: Outcome | None = None
    reason: str | None = None
    next_at: float = 0.0
    starts: bool = False  # its first trigger: take one of today's starts (or hold)
    unstarted: Run | None = None  # with `starts`: the run as it is held if none is left
    then_archive: bool = False  # indexed: the file is moved or deleted next (after_upload)


def required(desired: Iterable[str], catalog: Catalog) -> tuple[list[str], list[str]]:
    """Given the features asked for and the catalog, return every feature needed
    (dependencies first) and the names the catalog does not know."""
    needed: list[str] = []
    unknown: list[str] = []

    def need(name: str, chain: tuple[str, ...]) -> None:
        if name in needed or name in chain:
            return
        if name not in catalog:
            if name not in unknown:
                unknown.append(name)
            return
        for dep in catalog[name]:
            need(dep, (*chain, name))
        needed.append(name)

    for name in desired:
        need(name, ())
    return needed, unknown


def missing(desired: Iterable[str], ready: Iterable[str]) -> list[str]:
    """Given the features asked for and those ready, return those still to be made."""
    have = set(ready)
    return [name for name in desired if name not in have]


def next_day(now: float) -> float:
    """Given the time, return when the next UTC day starts."""
    return (now // DAY + 1) * DAY


def day_of(now: float) -> int:
    """Given the time, return the UTC day number (days since the epoch)."""
    return int(now // DAY)


def decide(
    run: Run,
    desired: Sequence[str],
    look: Look,
    catalog: Catalog,
    policy: Policy,
    started_today: int,
    now: float,
    rand: float,
) -> IndexMove:
    """Given a run, the features its rule asks for, what the API says now, the catalog,
    the policy, how many runs started today, the time and a random draw, return the move:
    triggers to send, the outcome if the run is over, and when to look again."""
    needed, unknown = required(desired, catalog)
    if unknown:
        reason = f"the API's feature catalog has no {', '.join(map(repr, unknown))}"
        return _over(run, run.features, Outcome.FAILED, reason, now)
    if look.required is not None:  # the API's own list wins (a dependency we do not know)
        needed = [*needed, *(f for f in look.required if f not in needed)]
    before = {name: run.features.get(name) or Feature(name) for name in needed}
    features = {name: _seen(f, look, policy, now, rand) for name, f in before.items()}
    if all(f.status == "ready" for f in features.values()):
        return _over(run, features, Outcome.INDEXED, None, now)
    spent = [
        f for f in features.values() if f.status == "failed" and f.attempts >= policy.max_attempts
    ]
    if spent:
        f = spent[0]
        reason = (
            f"feature {f.name} failed {f.attempts} times ({f.error or 'the API reports failed'}); "
            "`reka-sync retry PATH` indexes it again without uploading"
        )
        return _over(run, features, Outcome.FAILED, reason, now)
    if look.actionable is None and any(_in_doubt(f, look) for f in before.values()):
        return IndexMove(dataclasses.replace(run, features=features, needs_plan=True), next_at=now)
    withheld = look.actionable is not None and any(
        f.status == "none"
        and name not in look.actionable
        and all(features[d].status == "ready" for d in catalog.get(name, ()) if d in features)
        for name, f in features.items()
    )
    run = dataclasses.replace(run, features=features, needs_plan=withheld, streak=0, held=None)
    return _triggers(run, catalog, look, policy, started_today, now)


def _in_doubt(old: Feature, look: Look) -> bool:
    """Given a feature as recorded and a listing, return True if only a plan can tell
    where it is: its trigger's answer was lost, or the listing dropped a status it showed."""
    status = look.statuses.get(old.name, "none")
    return old.status == REQUESTED or (old.status in SHOWN and status == "none")


def _seen(old: Feature, look: Look, policy: Policy, now: float, rand: float) -> Feature:
    """Given a feature as recorded and what the API says now, return the feature after
    this look: a new failure gets its retry time (its attempt was spent at its trigger)."""
    status = look.statuses.get(old.name, "none")
    if look.actionable is None and _in_doubt(old, look):
        return old  # the plan decides
    if old.status == "failed" and status == "none":
        return old  # its trigger was refused: nothing ran, its retry stands
    if status == "failed" and old.status != "failed":
        return dataclasses.replace(
            old,
            status=status,
            retry_at=now + policy.backoff.delay(max(old.attempts, 1), rand),
            error="the API reports it failed",
        )
    return dataclasses.replace(old, status=status)


def _triggers(
    run: Run, catalog: Catalog, look: Look, policy: Policy, started_today: int, now: float
) -> IndexMove:
    """Given a run after a look, return the move that triggers what may start now (each
    trigger spends an attempt), holds a new run over the daily cap, or waits."""
    features = run.features
    ready = {name for name, f in features.items() if f.status == "ready"}
    go: list[tuple[str, bool]] = []
    for name, f in features.items():
        if not all(dep in ready for dep in catalog.get(name, ())):
            continue
        if f.status == "none" and (look.actionable is None or name in look.actionable):
            go.append((name, False))
        elif f.status == "failed" and now >= f.retry_at:
            go.append((name, True))
    waits = [f.retry_at for f in features.values() if f.status == "failed" and f.retry_at > now]
    later = min([now + policy.poll_interval, *waits])
    if not go:
        return IndexMove(run, next_at=later)
    starts = run.started_at is None
    if starts and policy.max_per_day and started_today >= policy.max_per_day:
        return held(run, now)
    requested = {
        name: dataclasses.replace(
            features[name], status=REQUESTED, triggered_at=now, attempts=features[name].attempts + 1
        )
        for name, _ in go
    }
    going = dataclasses.replace(
        run,
        features={**features, **requested},
        started_at=now if starts else run.started_at,
    )
    return IndexMove(
        going,
        tuple(go),
        next_at=now + policy.poll_interval,
        starts=starts,
        unstarted=run if starts else None,
    )


def _over(
    run: Run, features: Mapping[str, Feature], outcome: Outcome, reason: str | None, now: float
) -> IndexMove:
    """Given a run and how it ends, return the move that ends it."""
    done = dataclasses.replace(run, features=features, held=None, streak=0)
    return IndexMove(done, outcome=outcome, reason=reason, next_at=now)


def answered(feature: Feature, status: str, policy: Policy, now: float, rand: float) -> Feature:
    """Given a feature just triggered and the status its trigger answered, return it (an
    answer of failed gets its retry time, as a failure seen later would)."""
    return _seen(feature, Look({feature.name: status}, frozenset()), policy, now, rand)


def refused(feature: Feature, reason: str, policy: Policy, now: float, rand: float) -> Feature:
    """Given a feature whose trigger the API refused (a 4xx; its attempt is spent), return
    it failed with the API's reason and a retry after the backoff."""
    return dataclasses.replace(
        feature,
        status="failed",
        retry_at=now + policy.backoff.delay(max(feature.attempts, 1), rand),
        error=reason,
    )


def look_failed(
    run: Run, wait: float | None, policy: Policy, now: float, rand: float, *, plan: bool = False
) -> IndexMove:
    """Given a run whose look (or, with `plan`, whose trigger) got no usable answer, and
    the wait a pause asks for, return the move that looks again after a backoff, a plan if
    a trigger's fate is unknown; no attempt is spent."""
    streak = run.streak + 1
    if wait is None:
        wait = max(policy.poll_interval, policy.backoff.delay(streak, rand))
    later = dataclasses.replace(run, needs_plan=run.needs_plan or plan, streak=streak)
    return IndexMove(later, next_at=now + wait)


def reindex_moves(
    done: Iterable[tuple[int, str, frozenset[str]]],
    wants: Callable[[str], tuple[str, ...]],
    now: float,
) -> list[Move]:
    """Given done videos (id, root-relative path, features ready), what each path's rule
    wants and the time, return the moves that bring those lacking a feature back to
    indexing."""
    return [
        Move(job_id, Event.INDEX, Changes(next_attempt_at=now), {"wants": lacking})
        for job_id, rel_path, ready in done
        if (lacking := missing(wants(rel_path), ready))
    ]


def retry_indexing(job_id: int, now: float) -> Move:
    """Given a job whose indexing failed, return the operator's `retry`: index it again,
    every feature with its attempts back, nothing uploaded."""
    return Move(
        job_id, Event.INDEX, Changes(next_attempt_at=now, last_error=None), {"by": "operator"}
    )


def needing_more(
    done: Iterable[tuple[int, str, frozenset[str]]], wants: Callable[[str], tuple[str, ...]]
) -> tuple[int, dict[str, int]]:
    """Given done videos (id, root-relative path, features ready) and what each path's rule
    wants, return how many would be indexed for more, and how many lack each feature."""
    videos, lacking = 0, dict.fromkeys(FEATURES, 0)
    for _, rel_path, ready in done:
        names = missing(wants(rel_path), ready)
        videos += bool(names)
        for name in names:
            lacking[name] = lacking.get(name, 0) + 1
    return videos, {name: n for name, n in lacking.items() if n}


def fresh_run(job_id: int, video_id: str, kept: Mapping[str, Feature], version: int = 0) -> Run:
    """Given a video that starts indexing, what is known of its features and the version of
    the run row it replaces (0: none), return a new run: it plans first, and every feature
    gets its attempts back."""
    features = {
        name: dataclasses.replace(f, attempts=0, retry_at=0.0, error=None)
        for name, f in kept.items()
    }
    return Run(job_id, video_id, features, version=version)


def held(run: Run, now: float) -> IndexMove:
    """Given a run whose start the daily cap refused (as it was read), return the move that
    holds it until the next UTC day."""
    return IndexMove(dataclasses.replace(run, held=DAILY_CAP), next_at=next_day(now))
