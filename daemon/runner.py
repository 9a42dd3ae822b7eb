"""`reka-sync run`: the service. Watch, upload, poll and file into groups until SIGTERM."""

from __future__ import annotations

import threading
import time

import structlog

from daemon.config import Config, Secret
from daemon.journal import Journal
from daemon.scheduler import Engine
from daemon.service import on_stop_signals
from daemon.watcher import Watcher

log = structlog.get_logger("reka_sync.run")
LIVENESS_CHECK = 1.0  # seconds between checks that the observers still run


def run(config: Config, key: Secret) -> int:
    """Given the config and key, serve until SIGTERM/SIGINT (0) or a fatal error (1)."""
    journal = Journal.open(config.journal.path)
    watcher = Watcher(config.watch, time.time)
    engine = Engine(config, journal, key, watcher=watcher)
    stop = threading.Event()
    on_stop_signals(stop.set)
    try:
        watcher.start()
        engine.start()
        log.info(
            "reka-sync running",
            roots=[str(r) for r in config.watch.roots],
            observers={str(k): v for k, v in watcher.kinds.items()},
            workers=config.upload.workers,
        )
        while not stop.wait(LIVENESS_CHECK):
            if not watcher.alive():
                log.error("a filesystem observer stopped; exiting so systemd restarts us")
                return 1
        log.info("stopping: in-flight uploads go back to the queue")
        return 0
    finally:
        engine.stop()
        watcher.stop()
        journal.close()
        log.info("stopped")
