"""The confirming steps: follow uploaded videos until the API says stored, file them in groups.

Polls are batched (`GET /v2/videos?ids=...`) and committed in one transaction;
what each answer does to a job is `outcomes.after_poll`. A poll that fails
(an outage, a reply that is not JSON) puts the batch's next poll off, doubling
each time, and says so once, not at every tick.
"""

from __future__ import annotations

import threading

import structlog

from reka_sync import outcomes
from reka_sync.errors import NotFound, Paused, RekaSyncError
from reka_sync.journal import Job, Replaced
from reka_sync.lifecycle import Event
from reka_sync.moves import Changes, Move
from reka_sync.removals import Guard
from reka_sync.workers import Context, marked

log = structlog.get_logger("reka_sync.filing")
POLL_BATCH = 50
RETIRE_BACKOFF = 60.0  # seconds before trying superseded deletes again after a failure


class Confirmer:
    """Polls uploaded videos and moves stored ones into their groups."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._failures = 0  # polls failed in a row
        self._retire_after = 0.0  # after a failed delete, wait before the next
        self._move_failures = 0  # group moves failed in a row

    def poll(self, jobs: list[Job]) -> None:
        """Given uploaded jobs, ask the API how their videos are and record it in one commit."""
        ctx = self.ctx
        ctx.meter.polls.inc()
        try:
            videos = {
                v.video_id: v
                for v in ctx.api.list_videos(ids=[j.video_id for j in jobs if j.video_id])
            }
        except Paused:
            return  # held back before sending: the engine polls again once the pause ends
        except RekaSyncError as exc:
            self._poll_failed(jobs, exc)
            return
        self._poll_worked()
        now = ctx.clock()
        policy = ctx.policy
        moves = [
            outcomes.after_poll(
                job,
                videos.get(job.video_id or ""),
                policy,
                now,
                ctx.rand(),
                **self._next_of(job),
            )
            for job in jobs
        ]
        self._apply(moves, now)

    def _apply(self, moves: list[Move], now: float) -> None:
        """Given moves, commit them in one transaction and tell the engine when the first
        job they leave waiting (for a poll, a group move...) comes due."""
        for move, why in self.ctx.journal.apply_many(moves, now):
            log.debug(
                "a polled job moved on meanwhile; its poll result is dropped",
                job=move.job_id,
                reason=why,
            )
        due = [d for d in map(outcomes.control_due, moves) if d is not None]
        if due:
            self.ctx.wake(min(due))

    def _poll_failed(self, jobs: list[Job], exc: RekaSyncError) -> None:
        with self._lock:
            self._failures += 1
            streak = self._failures
        now = self.ctx.clock()
        moves = [outcomes.poll_failed(j, streak, str(exc), self.ctx.policy, now) for j in jobs]
        self._apply(moves, now)
        delay = moves[0].changes.columns()["next_attempt_at"] - now if moves else 0.0
        say = log.warning if streak == 1 else log.debug
        say("status poll failed; backing off", error=str(exc), retry_in=round(delay, 1))

    def _poll_worked(self) -> None:
        with self._lock:
            failed, self._failures = self._failures, 0
        if failed:
            log.info("status poll works again", failed_polls=failed)

    def file(self, jobs: list[Job]) -> None:
        """Given stored jobs waiting for their group, move their videos there."""
        by_group: dict[str, list[Job]] = {}
        for job in jobs:
            if job.group_id and job.video_id:
                by_group.setdefault(job.group_id, []).append(job)
        for group_id, members in by_group.items():
            self._move(group_id, members)

    def _move(self, group_id: str, jobs: list[Job]) -> None:
        ctx = self.ctx
        try:
            result = ctx.api.move_videos(group_id, [j.video_id for j in jobs if j.video_id])
        except NotFound:
            self._regroup(jobs)
            return
        except RekaSyncError as exc:
            self._later(jobs, f"move to group failed: {exc}")
            return
        with self._lock:
            self._move_failures = 0
        moved = set(result.video_ids)
        now = ctx.clock()
        later = now + ctx.config.upload.poll_interval
        self._apply(
            [
                Move(j.id, self._filed(j), detail={"group": j.group_name})
                if j.video_id in moved
                else Move(j.id, None, Changes(next_attempt_at=later), note="move refused")
                for j in jobs
            ],
            now,
        )

    def _filed(self, job: Job) -> Event:
        """The event of a job now in its group: done, or on to indexing if its rule wants
        features, or to archiving if it moves or deletes the file after upload."""
        then = self._next_of(job)
        return Event.INDEX if then["index"] else Event.ARCHIVE if then["archive"] else Event.FILED

    def _next_of(self, job: Job) -> dict[str, bool]:
        """What follows a job once stored and filed, by its rule (one decision, and none
        at all when no rule names features or after_upload)."""
        rules = self.ctx.rules
        if not (rules.any_features or rules.any_after):
            return {"index": False, "archive": False}
        decision = rules.decide(job.rel_path)
        return {"index": bool(decision.features), "archive": decision.after != "keep"}

    def retire(self, replaced: list[Replaced]) -> None:
        """Given videos of files' earlier contents (whose new content is stored and filed),
        delete them (watch.on_change = "replace") or keep them ("keep"); record which."""
        ctx = self.ctx
        for old in replaced:
            now = ctx.clock()
            if now < self._retire_after:
                return
            if ctx.config.watch.on_change == "keep":
                ctx.journal.close_superseded(old.id, "kept", now)
                continue
            if not Guard(ctx).allows(now):  # at the hourly cap of deletions: later
                return
            try:
                outcome = self._delete_old(old)
            except RekaSyncError as exc:
                self._retire_after = now + RETIRE_BACKOFF
                log.info(
                    "cannot delete a superseded video yet", video_id=old.video_id, error=str(exc)
                )
                return
            ctx.journal.close_superseded(old.id, outcome, ctx.clock())
            if outcome == "deleted":
                ctx.journal.count_deletion(old.video_id or old.upload_key or "", "replaced", now)
            log.info("superseded video " + outcome, video_id=old.video_id, key=old.upload_key)

    def _delete_old(self, old: Replaced) -> str:
        api = self.ctx.api
        ids = [old.video_id] if old.video_id else []
        if old.upload_key:  # its send's outcome was unknown: find it by its marker
            ids = [v.video_id for v in marked(api.list_videos(), old.upload_key)]
        gone = 0
        for video_id in ids:
            try:
                api.delete_video(video_id)
            except NotFound:
                gone += 1
        return "deleted" if ids and gone < len(ids) else "already gone"

    def _regroup(self, jobs: list[Job]) -> None:
        """The group was deleted remotely: look it up (or create it) again."""
        ctx = self.ctx
        for job in jobs:
            if not job.group_name:
                continue
            try:
                ctx.groups.forget(job.group_name)
                new_id = ctx.groups.resolve(job.group_name)
            except RekaSyncError as exc:
                self._later([job], f"group {job.group_name!r} cannot be had: {exc}")
                continue
            move = Move(job.id, None, Changes(group_id=new_id), note="regroup")
            ctx.journal.apply(move, ctx.clock())

    def _later(self, jobs: list[Job], reason: str) -> None:
        """A group move failed: look again after the poll interval, doubled per failure."""
        now = self.ctx.clock()
        with self._lock:
            self._move_failures += 1
            streak = self._move_failures
        moves = [outcomes.poll_failed(j, streak, reason, self.ctx.policy, now) for j in jobs]
        self._apply(moves, now)
        say = log.warning if streak == 1 else log.debug
        say("moving videos into their group failed; trying again later", error=reason)
