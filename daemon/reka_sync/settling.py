"""The settle tick: promote discovered files that are complete, one file's trouble at a time.

For each discovered file it stats once (without following links), asks the
watcher what the events say of its writers, reads the container headers once the
file is quiet, and hands all of that to the pure decision (`stability`). What a
verdict does to the job is a move, committed here with the moves of other files
(one transaction per COMMIT_EVERY files). An error on one file is recorded on
that file and the tick goes on with the others.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import structlog

from reka_sync.config import WatchConfig
from reka_sync.container import inspect
from reka_sync.errors import RekaSyncError
from reka_sync.journal import Job, Journal
from reka_sync.lifecycle import Event
from reka_sync.mounts import is_there
from reka_sync.moves import UNSET, Changes, Move
from reka_sync.scanner import NO_LINKS, links_of, stat_file
from reka_sync.stability import Decision, FileStat, Limits, Verdict, Writer, complete, settle
from reka_sync.urls import is_url_root

log = structlog.get_logger("reka_sync.settling")
SETTLE_BATCH = 5000  # files looked at per tick, at most
COMMIT_EVERY = 500  # files read, decided and committed at a time
CHANGED_SINCE_SCAN = "it keeps changing"
KEEPS_CHANGING = 3  # one-shot: changes seen before a file counts as being written


class Settler:
    """Decides, tick by tick, which discovered files are complete."""

    def __init__(
        self,
        journal: Journal,
        writer_of: Callable[[str], Writer],
        one_shot: bool = False,
    ) -> None:
        self.journal = journal
        self.writer_of = writer_of
        self.one_shot = one_shot
        self.left: dict[int, str] = {}  # one-shot: files left for the service, and why
        self.links = NO_LINKS
        self._changes: dict[int, int] = {}  # one-shot: times each file changed under us
        self._moves: list[Move] = []  # decided, not yet committed

    def tick(self, config: WatchConfig, now: float) -> int:
        """Given the watch settings and the time, promote complete files; return how many."""
        self.links = links_of(config)
        limits = Limits(
            config.settle_seconds,
            config.live_quiet_seconds,
            config.mp4_index_wait,
            self.one_shot,
        )

        @functools.cache  # once per root and tick, not once per file of an unmounted share
        def root_there(root: str) -> bool:
            return is_there(root, self.journal.root_mounts())

        promoted = looked = 0
        away = self.journal.unavailable_roots()  # their files wait; never ahead of others
        after = (-1, -1.0, -1)  # (priority, next_attempt_at, id) of the last file looked at
        while looked < SETTLE_BATCH:
            page = self.journal.discovered(after, COMMIT_EVERY, skip_roots=away)
            for job in page:
                if job.id not in self.left:
                    promoted += self._guarded(job, limits, now, root_there)
            promoted -= self._flush(now)
            if len(page) < COMMIT_EVERY:
                break
            looked += len(page)
            after = (page[-1].priority, page[-1].next_attempt_at, page[-1].id)
        return promoted

    def _guarded(
        self, job: Job, limits: Limits, now: float, root_there: Callable[[str], bool]
    ) -> int:
        try:
            return self._one(job, limits, now, root_there)
        except (RekaSyncError, OSError) as exc:
            log.warning("cannot settle this file; trying again", path=job.path, error=str(exc))
            return 0

    def _decided_move(
        self,
        job: Job,
        event: Event | None,
        changes: Changes | None = None,
        detail: dict[str, str] | None = None,
        note: str = "",
    ) -> None:
        """Keep a move decided on what stat said of `job`, to commit with the page; it is
        refused then if the file's recorded stat changed meanwhile (the watcher's intake)."""
        move = Move(job.id, event, changes or Changes(), detail, note, expect=job.stat)
        self._moves.append(move)

    def _flush(self, now: float) -> int:
        """Commit the decided moves; return how many promotions were refused (a job another
        process moved on meanwhile)."""
        moves, self._moves = self._moves, []
        refused = self.journal.apply_many(moves, now)
        for move, why in refused:
            log.debug("a settled file moved on meanwhile", job=move.job_id, reason=why)
        return sum(1 for move, _ in refused if move.event is Event.SETTLED)

    def _one(self, job: Job, limits: Limits, now: float, root_there: Callable[[str], bool]) -> int:
        if is_url_root(job.root):  # a URL sent back (retry, reupload): nothing to settle
            self._decided_move(job, Event.SETTLED, note="a URL")
            return 1
        current = stat_file(job.path, self.links)
        if current is None and not root_there(job.root):
            return 0  # an unmounted share: its files are not missing
        first = settle(job.stat, current, job.quiet_since, now, limits.settle_seconds)
        if first is Verdict.VANISHED:
            self._decided_move(job, Event.VANISHED)
        elif first is Verdict.CHANGED and current is not None:
            self._changed(job, current, now)
        elif first is Verdict.STABLE or self.one_shot:
            container = inspect(job.path) if job.size > 0 else None
            writer = self.writer_of(job.path)
            decision = complete(job.size, now - job.quiet_since, writer, container, limits)
            return self._decided(job, decision, now)
        return 0

    def _changed(self, job: Job, current: FileStat, now: float) -> None:
        changes = Changes.for_stat(current, now)
        self._decided_move(job, None, changes, note="still changing")
        if self.one_shot:  # once is a rewrite; again and again is a writer at work
            self._changes[job.id] = self._changes.get(job.id, 0) + 1
            if self._changes[job.id] >= KEEPS_CHANGING:
                self._leave(
                    job, f"still being written ({CHANGED_SINCE_SCAN}); left for the service"
                )

    def _decided(self, job: Job, decision: Decision, now: float) -> int:
        verdict, reason = decision.verdict, decision.reason
        if verdict in (Verdict.STABLE, Verdict.UNFINALISED):
            detail = {"unfinalised": reason} if reason else None
            settled = Changes(next_attempt_at=now, last_error=None if job.last_error else UNSET)
            self._decided_move(job, Event.SETTLED, settled, detail)
            return 1
        if verdict is Verdict.CUT_SHORT:
            self._decided_move(job, Event.FAIL, Changes(last_error=reason))
            log.warning("incomplete video; not uploading it", path=job.path, reason=reason)
        elif verdict is Verdict.NOT_VIDEO:
            self._decided_move(job, Event.IGNORE, Changes(last_error=reason))
        elif job.last_error != reason:  # WAIT, EMPTY, LEFT: say why in `show`, once
            self._decided_move(job, None, Changes(last_error=reason), note="waiting")
        if self.one_shot and verdict in (Verdict.EMPTY, Verdict.LEFT):
            self._leave(job, reason)
        return 0

    def _leave(self, job: Job, reason: str) -> None:
        self.left[job.id] = reason
