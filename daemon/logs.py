"""Logging: structlog through stdlib logging, to stderr; console lines on a TTY, JSON otherwise.

Every event passes a redaction step that replaces any registered secret (the API
key) wherever it appears, so the key never reaches a log line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from daemon.config import Secret

_SECRETS: set[str] = set()
QUIET = ("httpx", "httpcore", "apscheduler", "watchdog")


def register_secret(secret: Secret) -> None:
    """Given a secret, make sure no log line ever shows it."""
    value = secret.reveal()
    if len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """Given text, return it with every registered secret replaced."""
    for secret in _SECRETS:
        text = text.replace(secret, "[REDACTED]")
    return text


def _redact_event(logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
    return {key: redact(value) if isinstance(value, str) else value for key, value in event.items()}


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Given a level and a format (auto, console, json), send every log line to `stream`."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact_event,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
