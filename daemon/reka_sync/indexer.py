"""The indexing step: plan, trigger and follow the features of stored videos.

Runs on the control pool beside the status polls. Each look takes the due runs,
asks the API what it needs to (a plan for a run that has none, else one batched
listing per 50 videos), lets `features.decide` say what to do, commits that, and
only then sends the triggers it allows; their answers are committed in turn. What a
run is and how it ends is `features`; this module does the I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import structlog

from reka_sync import features, outcomes
from reka_sync.errors import NotFound, OutcomeUnknown, RekaSyncError, ValidationFailed
from reka_sync.features import GONE, Feature, IndexMove, Look, Outcome, Run
from reka_sync.journal import CAPPED, Job, Journal
from reka_sync.retry import Backoff
from reka_sync.rules import GroupRules
from reka_sync.workers import Context

log = structlog.get_logger("reka_sync.indexer")
LIST_BATCH = 50  # videos per listing request (ids in the query string)
PLANS_PER_LOOK = 50  # plans one look sends at most; the others wait for the next tick


class Indexer:
    """Drives the indexing runs of stored videos (one look at a time, on the control pool)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._catalog: dict[str, tuple[str, ...]] | None = None

    @property
    def policy(self) -> features.Policy:
        index, upload = self.ctx.config.index, self.ctx.config.upload
        return features.Policy(
            index.max_attempts,
            index.max_per_day,
            Backoff(upload.backoff_base, upload.backoff_cap),
            index.poll_interval,
        )

    def step(self, jobs: Sequence[Job]) -> None:
        """Given due jobs in state indexing, look at their videos, commit what that decides,
        then send the triggers it allows."""
        ctx = self.ctx
        if not jobs:
            return
        runs = ctx.journal.runs_of(jobs)
        wanted = {j.id: ctx.rules.features(j.rel_path) for j in jobs}
        idle = [runs[j.id] for j in jobs if j.id in runs and not wanted[j.id]]
        busy = _fewer_plans([runs[j.id] for j in jobs if j.id in runs and wanted[j.id]])
        now = ctx.clock()
        moves = [features.decide(r, (), Look({}), {}, self.policy, 0, now, 0.0) for r in idle]
        catalog = self._catalog_or_none(busy, now)
        if catalog is not None:
            looks = self._look(busy, wanted)
            moves += self._decide(busy, looks, wanted, catalog, now)
        archived = {j.id for j in jobs if ctx.rules.after(j.rel_path) != "keep"}
        moves = [
            dataclasses.replace(m, then_archive=True) if m.run.job_id in archived else m
            for m in moves
        ]
        self._commit_and_trigger(moves, now)

    # -- looking -------------------------------------------------------------------------

    def _catalog_or_none(self, runs: list[Run], now: float) -> dict[str, tuple[str, ...]] | None:
        """Return the API's feature catalog (read once), or None if it cannot be read now
        (the runs are put off)."""
        if self._catalog is None and runs:
            try:
                self._catalog = self.ctx.api.feature_catalog()
            except RekaSyncError as exc:
                log.warning("cannot read the API's feature catalog; indexing waits", error=str(exc))
                self._commit([self._failed_look(r, exc, now) for r in runs], now)
                return None
        return self._catalog or {}

    def _look(
        self, runs: list[Run], wanted: dict[int, tuple[str, ...]]
    ) -> dict[int, Look | RekaSyncError | None]:
        """Ask the API about each run: a plan where one is needed, else the batched listing
        (None: the API no longer has the video)."""
        looks: dict[int, Look | RekaSyncError | None] = {}
        following = [r for r in runs if not r.needs_plan]
        for i in range(0, len(following), LIST_BATCH):
            batch = following[i : i + LIST_BATCH]
            try:
                videos = {
                    v.video_id: v for v in self.ctx.api.list_videos(r.video_id for r in batch)
                }
            except RekaSyncError as exc:
                looks.update((r.job_id, exc) for r in batch)
                continue
            for run in batch:
                video = videos.get(run.video_id)
                looks[run.job_id] = None if video is None else Look(video.features)
        for run in (r for r in runs if r.needs_plan):
            looks[run.job_id] = self._plan(run, wanted[run.job_id])
        return looks

    def _plan(self, run: Run, wanted: tuple[str, ...]) -> Look | RekaSyncError | None:
        try:
            plan = self.ctx.api.plan_features(run.video_id, list(wanted))
        except NotFound:
            return None
        except RekaSyncError as exc:
            return exc
        return Look(plan.statuses, plan.actionable, plan.required)

    def _decide(
        self,
        runs: list[Run],
        looks: dict[int, Look | RekaSyncError | None],
        wanted: dict[int, tuple[str, ...]],
        catalog: dict[str, tuple[str, ...]],
        now: float,
    ) -> list[IndexMove]:
        ctx, policy = self.ctx, self.policy
        started = ctx.journal.started_on(now)
        moves: list[IndexMove] = []
        for run in runs:
            look = looks[run.job_id]
            if look is None:
                moves.append(IndexMove(run, outcome=Outcome.FAILED, reason=GONE, next_at=now))
            elif isinstance(look, ValidationFailed):
                reason = f"the API refused to plan its features: {look}"
                moves.append(IndexMove(run, outcome=Outcome.FAILED, reason=reason, next_at=now))
            elif isinstance(look, RekaSyncError):
                moves.append(self._failed_look(run, look, now))
            else:
                move = features.decide(
                    run, wanted[run.job_id], look, catalog, policy, started, now, ctx.rand()
                )
                started += move.starts
                moves.append(move)
        return moves

    def _failed_look(
        self, run: Run, error: RekaSyncError, now: float, plan: bool = False
    ) -> IndexMove:
        wait = outcomes.classify(error, False).wait
        return features.look_failed(run, wait, self.policy, now, self.ctx.rand(), plan=plan)

    # -- committing and triggering -------------------------------------------------------

    def _commit(self, moves: list[IndexMove], now: float) -> list[IndexMove]:
        """Commit moves; return those committed (a start over the daily cap is held)."""
        cap = self.ctx.config.index.max_per_day
        refused = self.ctx.journal.commit_index(moves, now, cap)
        capped = [m for m, why in refused if why == CAPPED and m.unstarted is not None]
        if capped:
            held = [features.held(m.unstarted, now) for m in capped if m.unstarted]
            self.ctx.journal.commit_index(held, now, cap)
            log.info("indexing waits for the next UTC day (index.max_per_day)", videos=len(held))
        gone = {id(m) for m, _ in refused}
        for move in moves:
            if move.outcome is not None and id(move) not in gone:
                _say_over(move)
        return [m for m in moves if id(m) not in gone]

    def _commit_and_trigger(self, moves: list[IndexMove], now: float) -> None:
        answered = [self._trigger(m) for m in self._commit(moves, now) if m.trigger]
        if answered:
            self._commit(answered, self.ctx.clock())

    def _trigger(self, move: IndexMove) -> IndexMove:
        """Send a committed move's triggers; return the run with their answers (the next
        look plans first if an answer was lost). A trigger the API did not act on (a 5xx, a
        429, not sent) gives its attempt back, as do those after it, never sent."""
        ctx, policy = self.ctx, self.policy
        run = dataclasses.replace(move.run, version=move.run.version + 1)
        done: dict[str, Feature] = {}
        for index, (name, force) in enumerate(move.trigger):
            feature = run.features[name]
            unsent = [n for n, _ in move.trigger[index + 1 :]]
            try:
                status = ctx.api.trigger_feature(
                    run.video_id, name, force=force, **self._options(name)
                )
            except NotFound:
                return IndexMove(run, outcome=Outcome.FAILED, reason=GONE, next_at=ctx.clock())
            except ValidationFailed as exc:  # e.g. a dependency not ready after all
                done[name] = features.refused(feature, str(exc), policy, ctx.clock(), ctx.rand())
                run = dataclasses.replace(run, needs_plan=True)
            except OutcomeUnknown:  # a malformed or lost answer: it may have run; plan next
                done.update(_given_back(run, unsent))
                return _with(run, done, needs_plan=True, next_at=ctx.clock() + policy.poll_interval)
            except RekaSyncError as exc:  # a 5xx, a 429, an outage: plan once it is over
                done.update(_given_back(run, [name, *unsent]))
                return self._failed_look(_with(run, done).run, exc, ctx.clock(), plan=True)
            else:
                done[name] = features.answered(feature, status, policy, ctx.clock(), ctx.rand())
        return _with(run, done, next_at=move.next_at)

    def _options(self, name: str) -> dict[str, object]:
        """Given a feature, return what its trigger carries besides `force`."""
        if name == "transcript":
            return {
                "chunking_config": {"use_scene_detection": self.ctx.config.index.scene_detection}
            }
        return {}


def _given_back(run: Run, names: list[str]) -> dict[str, Feature]:
    """Given a run and features whose triggers the API did not act on, return them with
    the attempt their recording spent given back (still requested: the next look plans)."""
    return {
        name: dataclasses.replace(run.features[name], attempts=run.features[name].attempts - 1)
        for name in names
    }


def _fewer_plans(runs: list[Run]) -> list[Run]:
    """Given due runs, return them with at most PLANS_PER_LOOK of those needing a plan, so
    a look after a large reload never holds the status polls up for long."""
    planned = [r for r in runs if r.needs_plan][:PLANS_PER_LOOK]
    return [r for r in runs if not r.needs_plan] + planned


def _with(
    run: Run, done: dict[str, Feature], *, needs_plan: bool | None = None, next_at: float = 0.0
) -> IndexMove:
    """Given a run and the features its triggers' answers changed, return the move that
    records them."""
    plan = run.needs_plan if needs_plan is None else needs_plan
    updated = dataclasses.replace(run, features={**run.features, **done}, needs_plan=plan)
    return IndexMove(updated, next_at=next_at)


def _say_over(move: IndexMove) -> None:
    """Log how a run ended."""
    if move.outcome is Outcome.INDEXED:
        log.info("indexed", job=move.run.job_id, features=list(move.run.features))
    else:
        log.warning("indexing failed", job=move.run.job_id, reason=move.reason)


def reindex(journal: Journal, rules: GroupRules, now: float) -> int:
    """Given the journal, the folder rules and the time, bring done videos whose rule asks
    for features they lack back to indexing (saying how many first), and look again at
    those the daily cap holds (it may have changed); return how many were brought back."""
    journal.wake_held(now)
    if not rules.any_features:
        return 0
    moves = features.reindex_moves(journal.done_videos(), rules.features, now)
    if moves:
        log.info(
            "videos already uploaded need more features under the rules; indexing them",
            videos=len(moves),
        )
    refused = sum(
        len(journal.apply_many(moves[i : i + 500], now)) for i in range(0, len(moves), 500)
    )
    return len(moves) - refused
