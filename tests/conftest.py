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
