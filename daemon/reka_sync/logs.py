"""Logging: structlog through stdlib logging, to stderr: console lines on a TTY, plain lines
with priority prefixes under journald, JSON otherwise. Tracebacks are plain (no locals).

Every event passes a redaction step that replaces any registered secret (the API
key) wherever it appears, so the key never reaches a log line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

from reka_sync.credentials import Secret
from reka_sync.names import storable

_SECRETS: set[str] = set()
QUIET = ("httpx", "httpcore", "apscheduler", "watchdog")
PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


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
    # File names need not be valid UTF-8: a line shows their bytes as \xNN, like `ls -b`.
    return {
        key: redact(storable(value)) if isinstance(value, str) else value
        for key, value in event.items()
    }


def to_journald(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Given a stream, return True if it is connected to journald ($JOURNAL_STREAM matches)."""
    expected = environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return bool(expected) and expected == f"{st.st_dev}:{st.st_ino}"


class _JournaldFormatter(structlog.stdlib.ProcessorFormatter):
    """Prefixes every line with its syslog priority, `<3>` for errors and so on (sd-daemon(3))."""

    def format(self, record: logging.LogRecord) -> str:
        priority = PRIORITIES.get(record.levelno, 6)
        return f"<{priority}>" + super().format(record).replace("\n", f"\n<{priority}>")


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Given a level and a format (auto, console, json), send every log line to `stream`.

    auto is console lines on a terminal, plain lines with priority prefixes to journald
    (journald adds the time), and one JSON object per line anywhere else.
    """
    stream = stream or sys.stderr
    journald = fmt == "auto" and to_journald(stream)
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty() and not journald)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
    ]
    if not journald:
        shared.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    formatter = _JournaldFormatter if journald else structlog.stdlib.ProcessorFormatter
    handler.setFormatter(
        formatter(
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
