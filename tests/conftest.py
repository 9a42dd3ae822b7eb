"""Shared fixtures: real temporary folders, real SQLite files, configs written as TOML."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

REPO = Path(__file__).resolve().parent.parent


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as TOML to `path` and return the path."""
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def config_file(tmp_path: Path, media: Path) -> Path:
    return write_config(
        tmp_path / "config.toml",
        {
            "journal": {"path": str(tmp_path / "journal.db")},
            "watch": {"roots": [str(media)], "settle_seconds": 0},
            "groups": {"rules": [{"match": "cameras/{camera}/**", "group": "Camera {camera}"}]},
        },
    )


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("REKA_API_KEY", "CREDENTIALS_DIRECTORY", "REKA_SYNC_CONFIG", "NOTIFY_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    yield


def cli_env(**extra: str) -> dict[str, str]:
    """Return an environment for running reka-sync as a subprocess."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REKA_API_KEY", "CREDENTIALS_DIRECTORY", "REKA_SYNC_CONFIG", "NOTIFY_SOCKET")
    }
    env.update(extra)
    return env


PYTHON = sys.executable


API_KEY = "test-key-5f2b9c"


@pytest.fixture
def emu() -> Iterator[Any]:
    from daemon import emulator

    running = emulator.start(settings=emulator.Settings(processing_delay=0.2, feature_delay=0.2))
    yield running
    running.stop()


def set_faults(
    emulator_url: str, faults: list[dict[str, Any]], seed: int | None = 1, **extra: Any
) -> None:
    """Replace the emulator's faults through its control endpoint."""
    import httpx

    response = httpx.post(
        f"{emulator_url}/_emulator/faults", json={"faults": faults, "seed": seed, **extra}
    )
    response.raise_for_status()


def emulator_records(emulator_url: str) -> list[dict[str, Any]]:
    """Return what the emulator stored: every video with its size and digest."""
    import httpx

    return list(httpx.get(f"{emulator_url}/_emulator/videos").json()["results"])


def emulator_requests(emulator_url: str) -> list[dict[str, Any]]:
    import httpx

    return list(httpx.get(f"{emulator_url}/_emulator/requests").json()["results"])


def wait_for(condition: Any, timeout: float = 30.0, message: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(0.02)  # polling interval of a deadline-bounded wait


def digest_of(path: Path) -> str:
    """Return the digest reka-sync and the emulator record for a file's bytes."""
    from xxhash import xxh3_128

    return f"xxh3-128:{xxh3_128(path.read_bytes()).hexdigest()}"
