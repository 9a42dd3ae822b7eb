"""A local, faithful Reka Vision API emulator served over HTTP (see DESIGN.md section 6).

`start()` runs it on a background thread (tests, `reka-sync demo`);
`serve()` runs it in the foreground (`reka-sync emulator`). `demo` beside it drives
the real pipeline against it: a client of the engine, outside the production path.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from reka_sync.emulator.faults import Fault, Faults, Quota
from reka_sync.emulator.server import EmulatorServer, Settings
from reka_sync.emulator.store import Store

__all__ = ["Fault", "RunningEmulator", "Settings", "build", "serve", "start"]


@dataclass
class RunningEmulator:
    server: EmulatorServer
    thread: threading.Thread
    cleanup: tempfile.TemporaryDirectory[str] | None = field(default=None)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        """Stop serving, wait for the thread, and remove a temporary data folder."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        if self.cleanup is not None:
            self.cleanup.cleanup()


def build(
    host: str = "127.0.0.1",
    port: int = 0,
    data_dir: Path | None = None,
    settings: Settings | None = None,
    faults: list[Fault] | None = None,
    seed: int | None = None,
) -> tuple[EmulatorServer, tempfile.TemporaryDirectory[str] | None]:
    """Given where to listen and what to emulate, return a bound server (not yet serving).

    Without `data_dir`, state lives in a temporary folder for the server's lifetime.
    """
    settings = settings or Settings()
    cleanup = None
    if data_dir is None:
        cleanup = tempfile.TemporaryDirectory(prefix="reka-emulator-")
        data_dir = Path(cleanup.name)
    store = Store(data_dir, group_cap=settings.group_cap, persist=cleanup is None)
    server = EmulatorServer(
        (host, port), store, Faults(faults, seed), Quota(settings.upload_quota), settings
    )
    return server, cleanup


def start(**options: object) -> RunningEmulator:
    """Given the options of `build`, return an emulator serving on a background thread."""
    server, cleanup = build(**options)  # type: ignore[arg-type]
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        name="reka-emulator",
        daemon=True,
    )
    thread.start()
    return RunningEmulator(server, thread, cleanup)


def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    settings: Settings,
    faults: list[Fault],
    seed: int | None,
) -> None:
    """Serve in the foreground until SIGTERM or SIGINT."""
    from reka_sync.service import on_stop_signals

    server, cleanup = build(host, port, data_dir, settings, faults, seed)
    on_stop_signals(server.shutdown)
    bound_host, bound_port = server.server_address[:2]
    print(
        f"Reka Vision API emulator on http://{bound_host!s}:{bound_port}"
        f" (data: {data_dir or 'temporary'}; key: {'fixed' if settings.api_key else 'any'})",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if cleanup is not None:
            cleanup.cleanup()
