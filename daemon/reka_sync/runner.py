"""`reka-sync run`: the service. Watch, upload, poll and file into groups until SIGTERM.

The main thread only supervises. Once a second it checks that the observers and
the engine's ticks are alive, and only then tells systemd's watchdog so; every
few seconds it publishes a STATUS= line; at SIGHUP it reloads the configuration.
Signal handlers only set events. READY=1 goes out once the journal is open (its
migrations applied) and the watches are placed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from functools import partial
from pathlib import Path

import structlog

from reka_sync.config import Config, load_config
from reka_sync.credentials import Secret, require_api_key
from reka_sync.errors import ConfigError
from reka_sync.indexer import reindex
from reka_sync.journal import Journal
from reka_sync.journal.connection import JournalDamaged
from reka_sync.journal.maintenance import refuse_to_start
from reka_sync.lifecycle import State
from reka_sync.logs import register_secret
from reka_sync.reconcile import adopt_on_start
from reka_sync.scheduler import Engine
from reka_sync.service import InstanceLock, Notifier, on_reload_signal, on_stop_signals
from reka_sync.watcher import Watcher

log = structlog.get_logger("reka_sync.run")
SUPERVISE_EVERY = 1.0  # seconds between liveness checks (and watchdog pings)
STATUS_EVERY = 5.0  # seconds between STATUS= lines
DRAIN = 30.0  # what we ask systemd for while uploads in flight are put back
STOP_GRACE = 1.5  # seconds an aborted step may take to record its outcome


def run(config: Config, key: Secret, config_path: Path) -> int:
    """Given the config, key and config file, serve until SIGTERM/SIGINT (0) or an error (1);
    a damaged journal stops it at once (1), the file left as it was."""
    try:
        service = Service(config, key, config_path, Notifier())
    except JournalDamaged as damage:
        return refuse_to_start(damage, "run", sys.stderr)
    code = service.serve()
    if not service.drained:
        # A thread is stuck in a network call and would hold the exit open: leave now.
        # The journal is closed; that upload's row says its outcome is unknown.
        logging.shutdown()
        os._exit(code)
    return code


class Service:
    """The running daemon: journal, watcher and engine, supervised from the main thread."""

    def __init__(self, config: Config, key: Secret, config_path: Path, notifier: Notifier) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier
        self.stop = threading.Event()
        self.wake = threading.Event()  # a signal came: the loop acts now, not at its next turn
        self.reload = threading.Event()
        self.drained = True
        self.instance = InstanceLock(config.journal.path)
        self.instance.acquire()  # one service per journal: a second one says whose it is
        # Damage is said at start, never silently worked on: open() checks before writing.
        self.journal = Journal.open(config.journal.path)
        self.journal.record_check("ok", time.time())
        self.engine = Engine(config, self.journal, key, watcher=Watcher(config.watch, time.time))

    def serve(self) -> int:
        """Run until a stop signal (return 0) or a dead observer (return 1)."""
        on_stop_signals(self._stop)
        on_reload_signal(self.reload, self.wake)
        try:
            self.start()
            self.notifier.ready(self.status_line())
            return self._supervise()
        finally:
            self.notifier.stopping("stopping: uploads in flight go back to the queue", DRAIN)
            self.shutdown()

    def start(self) -> None:
        """Place the watches, index what the rules now ask more of, start the engine's ticks."""
        self._watcher().start()
        reindex(self.journal, self.config.rules(), time.time())
        engine = self.engine
        engine.adopt_first(partial(adopt_on_start, self.config, self.journal, engine.api))
        engine.start()
        log.info(
            "reka-sync running",
            roots=[str(r) for r in self.config.watch.roots],
            observers={str(k): v for k, v in self._watcher().kinds.items()},
            workers=self.config.upload.workers,
        )

    def shutdown(self) -> None:
        """Re-queue uploads in flight, stop the engine and the observers, close the journal."""
        self.drained = self.engine.stop(grace=STOP_GRACE)
        self._watcher().stop()
        self.journal.close()
        log.info("stopped")

    def _supervise(self) -> int:
        last_status = time.monotonic()
        stalled = False
        watchdog = self.notifier.watchdog_seconds
        every = SUPERVISE_EVERY if watchdog is None else min(SUPERVISE_EVERY, watchdog / 2)
        while not self._slept(every):
            if self.reload.is_set():
                self.reload.clear()
                self.apply_reload()
            if not self._watcher().alive():
                log.error("a filesystem observer stopped; exiting so systemd restarts us")
                return 1
            trouble = self.engine.trouble(time.time())
            if trouble is None:
                self.notifier.watchdog()
            elif not stalled:
                log.error("stuck; no watchdog pings until it recovers", reason=trouble)
            stalled = trouble is not None
            if time.monotonic() - last_status >= STATUS_EVERY:
                self.notifier.status(self.status_line())
                last_status = time.monotonic()
        log.info("stopping: in-flight uploads go back to the queue")
        return 0

    def _stop(self) -> None:
        self.stop.set()
        self.wake.set()

    def _slept(self, seconds: float) -> bool:
        """Given seconds, wait that long or until a signal; return True to stop."""
        self.wake.wait(seconds)
        self.wake.clear()
        return self.stop.is_set()

    def apply_reload(self) -> None:
        """Read the config file again and use it; keep the old one if the new one is invalid."""
        self.notifier.reloading()
        try:
            config = load_config(self.config_path)
            key = require_api_key(config)
        except ConfigError as exc:
            log.error(
                "configuration not reloaded; the one in use stays. Fix these, then reload again",
                problems=exc.problems,
            )
            self.notifier.ready(self.status_line())
            return
        if config.journal.path != self.config.journal.path:
            log.warning(
                "journal.path changes take effect at restart only",
                in_use=str(self.config.journal.path),
            )
            config = dataclasses.replace(config, journal=self.config.journal)
        register_secret(key)
        self.engine.limit(config.upload)  # the cap and the windows now, before the watches
        old = self._watcher()
        watcher = Watcher(config.watch, time.time)
        watcher.start()
        self.engine.reconfigure(config, key, watcher)
        reindex(self.journal, config.rules(), time.time())
        old.stop()
        self.config = config
        log.info(
            "configuration reloaded",
            roots=[str(r) for r in config.watch.roots],
            observers={str(k): v for k, v in watcher.kinds.items()},
            workers=config.upload.workers,
        )
        self.notifier.ready(self.status_line())

    def status_line(self) -> str:
        """Return a one-line summary for systemctl status: counts and uploads in flight."""
        counts = self.journal.counts()
        sending = self.engine.in_flight()
        parts = [f"uploading {len(sending)}"]
        trouble = self.engine.health_line()
        if trouble:
            parts.insert(0, trouble)
        limits = self.engine.governor.limits
        if limits is not None and limits.held:
            parts.insert(0, f"WAITING: {limits.held}")
        parts += [
            f"{label} {counts[state]}"
            for label, state in (
                ("queued", State.QUEUED),
                ("settling", State.DISCOVERED),
                ("retrying", State.RETRY_WAIT),
                ("indexing", State.INDEXING),
                ("done", State.DONE),
                ("failed", State.FAILED),
            )
        ]
        return ", ".join(parts)

    def _watcher(self) -> Watcher:
        watcher = self.engine.watcher
        assert watcher is not None  # the service always has one
        return watcher
