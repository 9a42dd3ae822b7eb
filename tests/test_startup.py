"""`status` and `show` import only what they need: not the HTTP client, the scheduler, the
watcher or the logging stack (checked in a fresh interpreter, never by timing)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import PYTHON, cli_env, journal_of_two_files

# What a read-only command must never load; each costs tens of milliseconds at start-up.
NOT_FOR_READING = (
    "httpx",
    "apscheduler",
    "watchdog",
    "structlog",
    "tqdm",
    "reka_sync.api",
    "reka_sync.emulator",
    "reka_sync.scheduler",
    "prometheus_client",
    "reka_sync.metrics",
    "reka_sync.runner",
    "reka_sync.backfill",
    "reka_sync.watcher",
    "reka_sync.outcomes",
    "sqlite_utils",
    "importlib.metadata",
)

PROBE = """
import contextlib, io, json, sys
import reka_sync.cli as cli

cli.build_parser()
config, path = sys.argv[1], sys.argv[2]
codes = []
with contextlib.redirect_stdout(io.StringIO()):
    codes.append(cli.main(["status", "--config", config]))
    codes.append(cli.main(["status", "--json", "--config", config]))
    codes.append(cli.main(["show", path, "--config", config]))
    codes.append(cli.main(["show", path, "--json", "--config", config]))
names = json.loads(sys.argv[3])
loaded = sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))
print(json.dumps({"codes": codes, "loaded": loaded}))
"""


def test_status_and_show_import_no_service_machinery(config_file: Path) -> None:
    journal, root = journal_of_two_files(config_file)
    journal.close()
    done = subprocess.run(
        [PYTHON, "-c", PROBE, str(config_file), str(root / "b.mp4"), json.dumps(NOT_FOR_READING)],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["codes"] == [0, 0, 0, 0], done.stderr
    assert result["loaded"] == []
