"""The engine: short ticks that decide what is due, and hand it to the worker pools.

How this works
--------------
* APScheduler 3 (``BackgroundScheduler``, in-memory store, coalescing, no misfire
  limit so late ticks run rather than vanish) calls the ticks: ``dispatch``
  (claim due uploads for free workers), ``poll`` (ask the API about stored
  videos, file them into groups, drive their indexing), ``settle`` (promote quiet, unchanged files)
  and ``heartbeat`` (renew leases, publish pauses). Every tick takes ``now``,
  so tests drive the engine step by step with no scheduler at all.
* Uploads run on a bounded upload pool, never as APScheduler jobs; polls, group
  moves and indexing looks run on a small control pool, so a long upload never delays them.
  When an upload finishes, ``dispatch`` runs at once: a free worker never waits
  for the next tick. A step that leaves a job due for the control pool (a first poll
  after a 202) says when (``wake``): the poll tick runs then, not at its next interval.
  A one-shot run (backfill) whose last upload was answered polls its videos at once
  (``_all_sent``): an API that stores at once lets it end without waiting FIRST_POLL.
* ``stop()`` stops claiming, cancels in-flight uploads (their jobs go back to
  the queue without spending an attempt) and waits for the steps to record it.
* Every dispatch asks the ``Governor`` how many uploads may run and how fast (the
  operator's pause, the schedule's window, the cap); every answer of the API passes
  through ``Vitals``, which pauses what it must (a 429, a refused key, an outage).
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from tzlocal import get_localzone

from reka_sync.api import ApiClient, ResponseInfo, Transport
from reka_sync.archiving import Archiver
from reka_sync.config import MAX_WORKERS, Config, UploadConfig
from reka_sync.credentials import Secret
from reka_sync.errors import JournalError, RekaSyncError, TransportError
from reka_sync.filing import POLL_BATCH, Confirmer
from reka_sync.governor import Governor
from reka_sync.groups import GroupResolver
from reka_sync.indexer import Indexer
from reka_sync.journal import Job, Journal, SeenFile, Skipped
from reka_sync.lifecycle import State
from reka_sync.metrics import Meter
from reka_sync.mounts import probe
from reka_sync.outcomes import FIRST_POLL
from reka_sync.patterns import IgnoreRules
from reka_sync.pauses import PauseBoard, kind_of
from reka_sync.pool import WorkerPool
from reka_sync.recording import record_walk
from reka_sync.removals import Remover, mark_deleted
from reka_sync.scanner import ScanProblem, Tally, links_of, walk_folders
from reka_sync.service import owner_alive, owner_id
from reka_sync.settling import Settler
from reka_sync.stability import Writer
from reka_sync.vitals import Vitals
from reka_sync.workers import Context, Steps, quiet_limit

if TYPE_CHECKING:
    from reka_sync.monitor import Monitor
    from reka_sync.watcher import Watcher  # watchdog: only `run` watches

log = structlog.get_logger("reka_sync.scheduler")
HEARTBEAT = 2.0  # seconds between lease renewals and progress reports, at most
STALLED = 30.0  # seconds without a heartbeat or dispatch tick before we call it stuck
LIVELY_TICKS = ("heartbeat", "dispatch")
INTEGRITY_EVERY = 86400.0  # seconds between the service's quick checks of the journal
LISTEN_RETRY = 5.0  # seconds between tries to bind a metrics port that was taken
ADOPT_RETRY_CAP = 60.0  # seconds between tries of a startup adoption that failed, at most
POLL_EVERY = 0.5  # seconds between the poll tick's looks on its interval
LOST_WARN_EVERY = 60.0  # seconds between warnings of dropped filesystem events, at least
# A job due for the control pool (a poll after its acceptance, say) wakes the poll tick at
# its due time, not at the next interval. Such a look polls the videos due within
# POLL_AHEAD too, so those accepted close together share a request (and looks come that
# far apart at least).
POLL_AHEAD = 0.1


class OverlapOnce(logging.Filter):
    """Turns APScheduler's "skipped: maximum number of running instances" into one warning
    per tick: a tick that outlasts its interval is news once, not at every interval after."""

    def __init__(self) -> None:
        super().__init__()
        self.said: set[str] = set()
        self.skipped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "maximum number of running instances" not in str(record.msg):
            return True
        self.skipped += 1
        job = record.args[0] if isinstance(record.args, tuple) and record.args else None
        tick = str(getattr(job, "id", job))
        if tick not in self.said:
            self.said.add(tick)
            log.warning("a tick outlasts its interval; its next runs wait for it", tick=tick)
        return False


OVERLAPS = OverlapOnce()
logging.getLogger("apscheduler.scheduler").addFilter(OVERLAPS)


class Engine:
    """Claims, dispatches, polls and files; owns the pools and the scheduler."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        key: Secret,
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        lease_seconds: float | None = None,
        watcher: Watcher | None = None,
        transport: Transport | None = None,
        one_shot: bool = False,
        zone: tzinfo | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.clock = clock
        self.lease_seconds = lease_seconds or config.upload.lease_seconds
        self.pauses = PauseBoard()
        self._owner = owner_id()
        self._rand = rand
        self._retired: list[ApiClient] = []
        self._transport = transport
        self.meter = Meter(kept=not one_shot or config.metrics.address is not None)
        self.vitals = Vitals(journal, self.pauses, self.meter, clock, config.api.outage_grace)
        self.governor = Governor(journal, zone or get_localzone())
        self.monitor: Monitor | None = None
        self._listening: tuple[str, int] | None = None  # what the listener should be on
        self._listen_next = 0.0  # when to try binding it again
        self._lost_warned = -LOST_WARN_EVERY  # when dropped events were last logged
        self._listen_failures = 0
        self.api, self.ctx = self._context(config, key, {})
        self.steps = Steps(self.ctx)
        self.confirm = Confirmer(self.ctx)
        self.indexer = Indexer(self.ctx)
        self.archiver = Archiver(self.ctx)
        self.remover = Remover(self.ctx) if not one_shot else None
        self.uploads = WorkerPool(pool_size(config), "reka-upload", most=MAX_WORKERS)
        self.control = WorkerPool(1, "reka-control")
        self._set_quiet_limit(config)
        self._cancels: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._roots_lock = threading.Lock()
        self._stopping = threading.Event()
        self._adopted = threading.Event()  # uploads wait for the startup adoption, if any
        self._adopted.set()
        self._adoption: Callable[[], object] | None = None
        self._poll_lock = threading.Lock()  # one look of the poll tick at a time
        self._wake_lock = threading.Lock()
        self._wakes: list[float] = []  # a heap: when jobs come due for the control pool
        self._armed: float | None = None  # when the look for the earliest wake runs
        self._early = 0.0  # the next look also polls the videos due before this (`_all_sent`)
        self._one_shot = one_shot
        self._changed = threading.Event()  # a worker step ended (`wait_change`)
        self._adopt_next = 0.0
        self._adopt_failures = 0
        self._scheduler: BackgroundScheduler | None = None
        self._last_run: dict[str, float] = {}
        self._progress_shown = False  # the last heartbeat published uploads in flight
        self.watcher = watcher
        self.settler = Settler(journal, self._writer_of, one_shot)

    def _context(
        self, config: Config, key: Secret, progress: dict[int, int]
    ) -> tuple[ApiClient, Context]:
        api = ApiClient(
            config.api,
            key,
            max_connections=MAX_WORKERS + 2,
            on_response=self._observe,
            before_request=self._gate,
            on_failure=self._no_answer,
            transport=self._transport,
            throttle=self.governor.throttle,
        )
        groups = GroupResolver(api, self.journal, config.groups.create_missing, self.clock)
        ctx = Context(
            config,
            self.journal,
            api,
            groups,
            config.rules(),
            self.pauses,
            self._owner,
            self.clock,
            self._rand,
            self._touch,
            lambda: self.vitals.reach.outage,
            progress,
            self.meter,
            self.wake,
        )
        return api, ctx

    def reconfigure(self, config: Config, key: Secret, watcher: Watcher | None) -> None:
        """Given a new (valid) config, key and watcher, use them for all work from now on.

        Steps in flight finish with what they started with; nothing is cancelled.
        """
        api, ctx = self._context(config, key, self.ctx.progress)
        self.vitals.key_refused = None  # a new key gets a new chance
        self.vitals.reach.grace = config.api.outage_grace
        with self._lock:
            self._retired.append(self.api)
            self.config, self.api, self.ctx = config, api, ctx
            self.steps, self.confirm, self.indexer = Steps(ctx), Confirmer(ctx), Indexer(ctx)
            self.archiver = Archiver(ctx)
            if self.remover is not None:
                self.remover.use(ctx)
            self.watcher = watcher
            self._set_quiet_limit(config)
        self.limit(config.upload)  # a new cap applies at once
        if self._scheduler is not None:
            self._schedule_rescan(self._scheduler, config.watch.rescan_interval, soon=True)
            if self.monitor is None or config.metrics.address != self._listening:
                self._serve_metrics(config)

    def limit(self, upload: UploadConfig) -> None:
        """Given new upload settings, apply their limits (the cap, the windows, the workers)
        at once; a reload calls it before `reconfigure`, which brings the rest."""
        with self._lock:
            self.config = dataclasses.replace(self.config, upload=upload)
            self.uploads.resize(pool_size(self.config))
        self.governor.forget()
        self.governor.decide(upload, self.clock())

    def _set_quiet_limit(self, config: Config) -> None:
        quiet = quiet_limit(config.api)
        self.uploads.quiet_limit = self.control.quiet_limit = quiet

    @property
    def owner(self) -> str:
        return self._owner

    # -- ticks -------------------------------------------------------------------------

    def dispatch(self, now: float) -> int:
        """Given the time, lease due uploads for free workers and start them, as many as the
        operator's pause and the schedule allow; return how many."""
        limits = self.governor.decide(self.config.upload, now)
        with self._lock:
            if limits.abort:
                for cancel in self._cancels.values():  # back to the queue, no attempt spent
                    cancel.set()
            room = min(self.uploads.free, limits.workers - len(self._cancels))
            if (
                room <= 0
                or self._stopping.is_set()
                or not self._adopted.is_set()
                or self.pauses.blocking("uploads", now)
            ):
                return 0
            # The lease is named for this claim (the process, then a token): a job claimed
            # again by this very process after its lease ran out has another owner, so the
            # worker that lost it cannot send it. Its time is read at the claim's commit.
            claim = f"{self.owner}/{uuid.uuid4().hex[:8]}"
            jobs = self.journal.claim_uploads(
                claim,
                lambda: max(now, self.clock()),
                room,
                self.lease_seconds,
                running=list(self._cancels),
            )
            for job in jobs:
                cancel = threading.Event()
                self._cancels[job.id] = cancel
                self.uploads.submit(
                    self._journal_guarded(partial(self.steps.upload, job, cancel)),
                    partial(self._finished, job),
                )
            return len(jobs)

    def _finished(self, job: Job) -> None:
        with self._lock:
            self._cancels.pop(job.id, None)
        self._changed.set()
        if self._stopping.is_set():
            return
        self.dispatch(self.clock())
        if self._one_shot:
            self._all_sent()

    def _all_sent(self) -> None:
        """Once a one-shot run has no upload in flight, poll the videos it sent now, not
        FIRST_POLL after their acceptance: the run ends as soon as the API has stored them,
        at the cost of one request (a video not stored yet is asked about again as usual)."""
        with self._lock:
            if self._cancels:
                return
        now = self.clock()
        with self._wake_lock:
            self._early = max(self._early, now + FIRST_POLL)
        self.wake(now)

    def poll(self, now: float, ahead: float = 0.0) -> int:
        """Given the time, hand due polls, group moves and indexing looks to the control pool;
        return jobs sent. Given `ahead`, poll the videos due that much later too."""
        with self._poll_lock:  # the interval tick and a wake may come at once
            return self._poll(now, ahead)

    def _poll(self, now: float, ahead: float) -> int:
        if self._stopping.is_set() or self.control.free == 0:
            return 0  # the step running arms the next wake as it ends
        with self._wake_lock:
            until, self._early = max(now + ahead, self._early), 0.0
        self._woken(until)
        if self.pauses.blocking("requests", now):
            return 0  # the interval tick looks again once the pause ends
        self._adopt_pending(now)
        if self.control.free == 0:
            return 0
        most = POLL_BATCH * 4
        polls = self.journal.jobs([State.UPLOADED], due_before=until, limit=most)
        filing = self.journal.jobs([State.FILING], due_before=now, limit=most)
        indexing = self.journal.jobs([State.INDEXING], due_before=now, limit=most)
        archiving = self.journal.jobs([State.ARCHIVING], due_before=now, limit=POLL_BATCH)
        replaced = self.journal.superseded_due()
        remover = self.remover
        removals = remover is not None and remover.due(now)
        if not (polls or filing or indexing or archiving or replaced or removals):
            return 0
        if len(polls) == most:  # more are due than one look takes: the next look soon
            self.wake(now + ahead)

        def fresh(state: State, first: list[Job], limit: int) -> list[Job]:
            """The jobs of `state` due now: after this step's polls, those they moved on
            too (a video stored goes to its group in the same step, not a tick later)."""
            if not polls:
                return first
            return self.journal.jobs([state], due_before=max(now, self.clock()), limit=limit)

        def step() -> None:  # each part on its own: one failing never skips the others
            parts: list[Callable[[], None]] = [
                *(
                    partial(self.confirm.poll, polls[i : i + POLL_BATCH])
                    for i in range(0, len(polls), POLL_BATCH)
                ),
                lambda: self.confirm.file(fresh(State.FILING, filing, most)),
                lambda: self.indexer.step(fresh(State.INDEXING, indexing, most)),
                lambda: self.archiver.step(fresh(State.ARCHIVING, archiving, POLL_BATCH)),
                partial(self.confirm.retire, replaced),
                *([partial(remover.step, now)] if remover is not None and removals else []),
            ]
            for part in parts:
                try:
                    part()
                except JournalError:
                    raise
                except RekaSyncError as exc:
                    log.warning("a confirming step failed; it runs again", error=str(exc))

        self.control.submit(self._journal_guarded(step), self._control_done)
        return len(polls) + len(filing) + len(indexing) + len(archiving)

    def wake(self, due: float) -> None:
        """Given when a job comes due for the control pool (a poll, a group move...), run
        the poll tick then, not at its next interval."""
        with self._wake_lock:
            heapq.heappush(self._wakes, due)
        self._arm()

    def _woken(self, until: float) -> None:
        """Given how far a look of the poll tick takes due jobs, forget the wakes it answers."""
        with self._wake_lock:
            while self._wakes and self._wakes[0] <= until:
                heapq.heappop(self._wakes)

    def _arm(self) -> None:
        """Schedule a look of the poll tick for the earliest wake, unless one comes sooner.

        Not while the control pool is busy: its step arms the wake as it ends.
        """
        scheduler = self._scheduler
        if scheduler is None or self._stopping.is_set() or self.control.free == 0:
            return
        with self._wake_lock:
            if not self._wakes:
                return
            at = self._wakes[0]
            armed = self._armed  # a look armed long ago and not run (skipped?) is forgotten
            if armed is not None and self.clock() - POLL_EVERY < armed <= at:
                return
            self._armed = at
            delay = timedelta(seconds=max(0.0, at - self.clock()))
            scheduler.add_job(
                self._due_poll,
                "date",
                run_date=datetime.now(UTC) + delay,
                id="poll-due",
                replace_existing=True,
                max_instances=4,  # a wake armed while the last one runs is not skipped
            )

    def _control_done(self) -> None:
        """A step of the control pool ended: say so, and arm the wake it held back."""
        self._changed.set()
        self._arm()

    def wait_change(self, timeout: float) -> bool:
        """Given a timeout, wait until a worker step ends (its outcome committed), at most
        that long; return True if one did. A one-shot run looks at the journal then."""
        changed = self._changed.wait(timeout)
        self._changed.clear()
        return changed

    def _due_poll(self) -> None:
        with self._wake_lock:
            self._armed = None
        self._run_tick("poll", partial(self.poll, ahead=POLL_AHEAD))
        self._arm()

    def settle(self, now: float) -> int:
        """Given the time, promote discovered files that are complete; return how many."""
        promoted = self.settler.tick(self.config.watch, now)
        if promoted:
            self.dispatch(now)
        return promoted

    def _writer_of(self, path: str) -> Writer:
        watcher = self.watcher
        return watcher.writer(path) if watcher is not None else Writer.UNSEEN

    def intake(self, now: float) -> int:
        """Given the time, record what the watcher saw (live files go first); return how many."""
        if self.watcher is None:
            return 0
        seen = self.watcher.drain()
        if seen:
            self._record(seen, now, priority=0)
        lost = self.watcher.take_lost()
        if lost:
            self._events_lost(lost, now)
        return len(seen)

    def _events_lost(self, roots: set[str], now: float) -> None:
        """Given roots whose events the kernel dropped, rescan now (and say so, at most once
        a minute: a copy storm can overflow the queue again and again)."""
        if now - self._lost_warned >= LOST_WARN_EVERY:
            self._lost_warned = now
            log.warning(
                "the kernel dropped filesystem events (inotify queue full); rescanning now. "
                "Raise `sysctl fs.inotify.max_queued_events` if this recurs",
                roots=sorted(roots),
            )
        self._rescan_now()

    def _rescan_now(self) -> None:
        """Run the rescan tick now instead of at its next interval (once started)."""
        if self._scheduler is not None:
            self._scheduler.modify_job("rescan", next_run_time=datetime.now(UTC))

    def _record(self, seen: list[SeenFile], now: float, priority: int) -> None:
        for path, why in self.journal.record_scan(seen, now, priority).refused:
            _cannot_record(path, why)

    def rescan(self, now: float) -> int:
        """Given the time, walk every root to catch what events missed; return files seen."""
        ignore = IgnoreRules(self.config.watch.ignore, self.config.watch.extensions)
        began = time.monotonic()
        self.check_roots(now)
        away = self.journal.unavailable_roots()
        seen = sum(
            self._rescan_root(root, ignore, now)
            for root in self.config.watch.roots
            if str(root) not in away
        )
        self.meter.rescans.inc()
        self.meter.rescan_seconds.observe(time.monotonic() - began)
        return seen

    def check_roots(self, now: float) -> None:
        """Given the time, record which roots are there; watch returning ones, rescan them.

        The heartbeat and the rescan both call this; one at a time, so a change is seen
        (and logged) once. A root seen for the first time is left to the startup rescan.
        """
        with self._roots_lock:
            last_mounts = self.journal.root_mounts()
            for root in self.config.watch.roots:
                available, mount = probe(root, last_mounts.get(str(root)))
                was = self.journal.set_root_available(str(root), available, now, mount)
                if was is not available:
                    self._root_changed(root, available, returned=was is False)

    def _root_changed(self, root: Path, available: bool, returned: bool) -> None:
        if not available:
            log.warning("root unavailable (unmounted?); its files wait", root=str(root))
            if self.watcher is not None:
                self.watcher.unwatch(root)
            return
        log.info("root available", root=str(root))
        if self.watcher is not None:
            self.watcher.watch(root)
            if returned:
                self._rescan_now()

    def _rescan_root(self, root: Path, ignore: IgnoreRules, now: float) -> int:
        skipped: list[Skipped] = []
        tally = Tally()
        links = links_of(self.config.watch)
        problems: list[ScanProblem] = []
        seen: set[int] = set()
        walker = partial(walk_folders, root, ignore, str(root), problems, links, skipped, tally)
        found = record_walk(self.journal, root, walker, skipped, now, 1, _cannot_record, seen)
        self.journal.set_root_tally(str(root), tally.other_extensions)
        if not problems:  # a walk that could not read a folder proves nothing gone
            if found.unseen:  # else every file the journal has was seen as it is
                mark_deleted(self.journal, self.config.watch, root, seen, now)
        else:
            log.info(
                "parts of a root could not be read; no file under it is taken for deleted",
                root=str(root),
                first=problems[0].path,
                error=problems[0].reason,
                unreadable=len(problems),
            )
        if found.recorded:
            log.info("scan found new or changed files", root=str(root), files=found.recorded)
        return found.seen

    def check_integrity(self, now: float) -> str:
        """Given the time, run SQLite's quick check on the journal, keep the verdict for
        `status`, and say so loudly if it found damage; return the verdict."""
        verdict = self.journal.check_integrity()
        self.journal.record_check(verdict, now)
        if verdict != "ok":
            log.error("the journal is damaged; stop reka-sync and keep the file", verdict=verdict)
        return verdict

    def heartbeat(self, now: float) -> None:
        """Given the time, renew our leases, free those of dead local processes, publish pauses."""
        with self._lock:
            held = list(self._cancels)  # jobs a worker of ours still runs
        # Idle, nothing is written; while the journal is in trouble this write is the probe
        # that sees it recover (_run_tick).
        if held or self._progress_shown or self.vitals.journal_trouble is not None:
            self.journal.renew_leases(self.owner, now, self.lease_seconds, self.in_flight(), held)
            self._progress_shown = bool(held)
        self.journal.expire_leases(lambda owner: owner_alive(owner) is False)
        for pause in self.pauses.active(now):
            self.journal.set_pause(pause.kind, pause.until, pause.reason)
        if self._listening is not None and self.monitor is None:
            self._try_serving(now)
        if self.watcher is not None:
            self.check_roots(now)

    def tick(self, now: float) -> None:
        """Given the time, run every tick once (tests and one-shot callers)."""
        self.heartbeat(now)
        self.settle(now)
        self.dispatch(now)
        self.poll(now)

    # -- the API's answers steer the pauses --------------------------------------------

    def _gate(self, method: str, path: str) -> None:
        self._touch()
        self.pauses.check(kind_of(method, path), self.clock())

    def _no_answer(self, error: TransportError) -> None:
        self._touch()
        self.vitals.no_answer(error)

    def _observe(self, info: ResponseInfo) -> None:
        self._touch()
        self.vitals.observe(info)

    # -- lifecycle ---------------------------------------------------------------------

    def adopt_first(self, adopt: Callable[[], object]) -> None:
        """Given the startup adoption (reconcile's), run it on the control pool before any
        upload is claimed, and again after a backoff until the API could be listed whole:
        a lost or restored journal sends nothing twice, and an API that does not answer
        holds back uploads, not the start."""
        self._adopted.clear()
        self._adoption = adopt
        self._adopt_next = 0.0
        self._adopt_pending(self.clock())

    def _adopt_pending(self, now: float) -> None:
        """Given the time, start the startup adoption if it is due (the poll tick calls)."""
        adopt = self._adoption
        if adopt is None or self._adopted.is_set() or now < self._adopt_next:
            return
        self._adopt_next = float("inf")  # running

        def step() -> None:
            try:
                adopt()
            except RekaSyncError as exc:
                self._adopt_failures += 1
                wait = min(ADOPT_RETRY_CAP, 2.0**self._adopt_failures)
                self._adopt_next = self.clock() + wait
                say = log.warning if self._adopt_failures == 1 else log.debug
                say(
                    "cannot list the API's videos to adopt what it has; uploads wait",
                    error=str(exc),
                    retry_in=wait,
                )
                return
            except Exception:  # a bug must not hold the service back for ever
                log.exception("the startup adoption failed; uploads go on without it")
            self._adoption = None
            self._adopted.set()
            self.dispatch(self.clock())

        self.control.submit(self._journal_guarded(step), self._control_done)

    def start(self) -> None:
        """Start the scheduler's ticks on background threads; each runs once right away."""
        scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        ticks: list[tuple[str, Callable[[float], object], float]] = [
            ("heartbeat", self.heartbeat, min(HEARTBEAT, max(0.2, self.lease_seconds / 3))),
            # A finished upload and a promoted file dispatch at once; this tick finds
            # retries come due and work queued by another process.
            ("settle", self.settle, 1.0),
            ("dispatch", self.dispatch, 1.0),
            ("poll", self.poll, POLL_EVERY),
            ("intake", self.intake, 0.5),
        ]
        first = datetime.now(UTC)
        self._last_run = {name: self.clock() for name, _, _ in ticks}
        for name, tick, seconds in ticks:
            scheduler.add_job(
                partial(self._run_tick, name, tick),
                "interval",
                seconds=seconds,
                id=name,
                next_run_time=first,
            )
        if self.watcher is not None:
            self._schedule_rescan(scheduler, self.config.watch.rescan_interval, soon=True)
            scheduler.add_job(
                partial(self._run_tick, "integrity", self.check_integrity),
                "interval",
                seconds=INTEGRITY_EVERY,
                id="integrity",
            )
        scheduler.start()
        self._scheduler = scheduler
        self._arm()  # jobs that came due before the start
        self._serve_metrics(self.config)

    def _serve_metrics(self, config: Config) -> None:
        """Given the config, (re)start the metrics listener it asks for, if any."""
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
        self._listening, self._listen_failures = config.metrics.address, 0
        self._try_serving(self.clock())

    def _try_serving(self, now: float) -> None:
        """Given the time, bind the metrics listener; if the port is taken (a backfill run
        with the same --metrics-listen, say), try again every LISTEN_RETRY seconds."""
        if self._listening is None or self.monitor is not None or now < self._listen_next:
            return
        from reka_sync import telemetry  # the status page and the gauges: only when served

        self.monitor = telemetry.serve(self, self._listening, quiet=self._listen_failures > 0)
        if self.monitor is None:
            self._listen_failures += 1
            self._listen_next = now + LISTEN_RETRY

    def _schedule_rescan(self, scheduler: BackgroundScheduler, seconds: float, soon: bool) -> None:
        scheduler.add_job(
            partial(self._run_tick, "rescan", self.rescan),
            "interval",
            seconds=seconds,
            id="rescan",
            next_run_time=datetime.now(UTC) if soon else None,
            replace_existing=True,
        )

    def _run_tick(self, name: str, tick: Callable[[float], object]) -> None:
        try:
            tick(self.clock())
            if name == "heartbeat":  # it writes whenever the journal is in trouble
                self._journal_worked()
        except JournalError as exc:
            self._journal_failed(str(exc))
        except RekaSyncError as exc:
            log.error("tick failed; it runs again shortly", tick=name, error=str(exc))
        finally:
            self._last_run[name] = self.clock()

    def _journal_failed(self, reason: str) -> None:
        self.vitals.journal_failed(reason)

    def _journal_worked(self) -> None:
        if self.vitals.journal_worked() and self.watcher:
            self._rescan_now()  # what changed meanwhile

    def _journal_guarded(self, step: Callable[[], None]) -> Callable[[], None]:
        """Given a worker step, return it with a journal that cannot be written reported
        as the engine's trouble (once), not as a crash of every step."""

        def guarded() -> None:
            try:
                step()
            except JournalError as exc:
                self._journal_failed(str(exc))

        return guarded

    def trouble(self, now: float) -> str | None:
        """Given the time, return what is stuck: the scheduler, its ticks or a worker step.

        Return None while the scheduler runs, its short ticks keep coming and every
        running step has shown a sign of life within its allowance.
        """
        scheduler = self._scheduler
        if scheduler is None or not scheduler.running or self._stopping.is_set():
            return "the scheduler is not running"
        late = [n for n in LIVELY_TICKS if now - self._last_run.get(n, now) >= STALLED]
        if late:
            return f"the scheduler's {' and '.join(late)} ticks stopped"
        stuck = self.uploads.overdue() + self.control.overdue()
        if stuck:
            return f"{stuck} worker steps are stuck outside every timeout (DNS? a hung mount?)"
        return None

    def _touch(self, allowance: float | None = None) -> None:
        self.uploads.touch(allowance)  # only the pool running this thread's step notes it
        self.control.touch(allowance)

    def stop(self, grace: float | None = None) -> bool:
        """Stop claiming, cancel in-flight uploads, wait for the steps to record their outcome.

        Given a grace in seconds, wait no longer than that for steps stuck in a network
        call (a stalled server); return False if one still runs. Its journal row already
        says its outcome is unknown, and the next start settles it (reconcile).
        """
        self._stopping.set()
        with self._lock:
            for cancel in self._cancels.values():
                cancel.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
        if self.monitor is not None:
            self.monitor.close()
        drained = self.uploads.shutdown(grace)
        drained = self.control.shutdown(grace) and drained
        if drained:
            for api in [*self._retired, self.api]:
                api.close()
        else:
            log.warning("a step is stuck in a network call; the next start settles it")
        return drained

    def health_line(self) -> str | None:
        """Return what is wrong with the environment, in a few words, or None."""
        return self.vitals.health_line()

    def wait_idle(self, timeout: float) -> bool:
        """Given a timeout, wait until no upload, poll or group move runs; return True if so."""
        return self.uploads.wait_idle(timeout) and self.control.wait_idle(timeout)

    def in_flight(self) -> dict[int, int]:
        """Return bytes sent so far for each upload in flight, by job id."""
        return dict(self.ctx.progress)


def pool_size(config: Config) -> int:
    """Given the config, return the upload pool's size: enough for upload.workers and for
    the most any schedule window allows."""
    return max([config.upload.workers, *(w.workers or 0 for w in config.upload.schedule)])


def _cannot_record(path: str, why: str) -> None:
    log.warning("cannot record this file; the next rescan tries again", path=path, error=why)
