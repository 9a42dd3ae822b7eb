"""The API key: where it comes from ($REKA_API_KEY, a key file, a systemd credential),
and a wrapper that never shows it in a repr, a log line or a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from reka_sync.config import Config
from reka_sync.errors import ConfigError

CREDENTIAL_NAME = "reka-api-key"


class Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def resolve_api_key(config: Config) -> Secret | None:
    """Return the API key from $REKA_API_KEY, api.api_key_file or the systemd credential.

    Return None if none is set. Raise ConfigError if a named source cannot be read.
    """
    env = os.environ.get("REKA_API_KEY", "").strip()
    if env:
        return Secret(env)
    candidates: list[tuple[str, Path]] = []
    if config.api.api_key_file is not None:
        candidates.append(("api.api_key_file", config.api.api_key_file))
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        candidates.append((f"systemd credential {CREDENTIAL_NAME}", Path(creds) / CREDENTIAL_NAME))
    for label, path in candidates:
        if label.startswith("systemd") and not path.exists():
            continue
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError([f"{label}: cannot read {path}: {exc.strerror}"]) from None
        if not key:
            raise ConfigError([f"{label}: {path} is empty; put the API key in it"])
        return Secret(key)
    return None


def require_api_key(config: Config) -> Secret:
    """Return the API key. Raise ConfigError saying where to put it if there is none."""
    key = resolve_api_key(config)
    if key is None:
        raise ConfigError(
            [
                "api.api_key_file: no API key found; set $REKA_API_KEY, set api.api_key_file, "
                f"or pass the systemd credential {CREDENTIAL_NAME!r}"
            ]
        )
    return key
