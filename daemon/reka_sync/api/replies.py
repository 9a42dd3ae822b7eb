"""What the API's answers say: typed values, the error for a status, a body summarised.

Pure parsing (bytes and headers in, values out), used by the client in
``__init__``; nothing here sends a request.
"""

from __future__ import annotations

import email.utils
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from reka_sync.errors import (
    ApiStatusError,
    AuthError,
    BadReply,
    Conflict,
    NotFound,
    RateLimited,
    ServerError,
    ValidationFailed,
)

T = TypeVar("T")


@dataclass(frozen=True)
class ResponseInfo:
    """What every response tells besides its body."""

    method: str
    path: str
    status: int
    request_id: str | None
    limit: int | None
    remaining: int | None
    reset_after: float | None
    retry_after: float | None
    date: str | None = None  # the Date header, as sent

    @property
    def server_date(self) -> float | None:
        """Return the Date header as epoch seconds (None if absent or not a date)."""
        return _http_date(self.date)


@dataclass(frozen=True)
class Video:
    video_id: str
    status: str | None
    group_id: str | None
    error: str | None
    description: str | None
    video_name: str | None
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Video:
        meta = data.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        return cls(
            str(data["video_id"]),
            data.get("status"),
            data.get("group_id"),
            data.get("error"),
            meta.get("description"),
            meta.get("video_name"),
            data,
        )

    @property
    def features(self) -> dict[str, str]:
        """Return the video's feature statuses by name (none yet: empty)."""
        found = self.raw.get("features")
        if not isinstance(found, dict):
            return {}
        return {str(name): str(status) for name, status in found.items()}


@dataclass(frozen=True)
class Plan:
    """The API's plan for the features wanted of a video."""

    required: tuple[str, ...]  # all_required: the features wanted and their dependencies
    statuses: dict[str, str]
    actionable: frozenset[str]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        statuses, required, actionable = (
            data.get("statuses"),
            data.get("all_required") or [],
            data.get("actionable") or [],
        )
        if not isinstance(statuses, dict) or not isinstance(required, list):
            raise TypeError("statuses must be an object and all_required a list")
        if not isinstance(actionable, list):
            raise TypeError("actionable must be a list")
        return cls(
            tuple(str(f) for f in required),
            {str(k): str(v) for k, v in statuses.items()},
            frozenset(str(f) for f in actionable),
        )


HEAD_KEPT = 64 * 1024  # bytes of a listing kept to check an answer that listed nothing


class StreamedListing:
    """A listing (``{"results": [...], "next_page_token": ...}``) parsed as its bytes
    arrive: each result is handed out whole, and only one is held at a time."""

    def __init__(self, what: str) -> None:
        import ijson

        self._what = what
        self._error: type[Exception] = ijson.JSONError
        self._items: list[Any] = ijson.sendable_list()
        self._tokens: list[Any] = ijson.sendable_list()
        self._results = ijson.items_coro(self._items, "results.item")
        self._token = ijson.items_coro(self._tokens, "next_page_token")
        self._count = 0
        self._head = b""  # the body's start: an answer without results is checked whole

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        """Given the next bytes of the body, return the results they completed. Raise
        BadReply if the body is not a listing."""
        if len(self._head) < HEAD_KEPT:
            self._head += chunk[: HEAD_KEPT - len(self._head)]
        try:
            self._results.send(chunk)
            self._token.send(chunk)
        except self._error as exc:
            raise BadReply(f"{self._what}: the listing is not JSON ({exc})") from None
        done = [item for item in self._items if isinstance(item, dict)]
        if len(done) != len(self._items):
            raise BadReply(f"{self._what}: an item of results is not an object")
        del self._items[:]
        self._count += len(done)
        return done

    def close(self) -> str | None:
        """End the body; return its next_page_token, if any. Raise BadReply if it ended early,
        or is not a listing (no `results` list: an empty answer must say it is empty)."""
        try:
            self._results.close()
            self._token.close()
        except self._error as exc:
            raise BadReply(f"{self._what}: the listing ended early ({exc})") from None
        if self._count == 0:
            try:
                whole = json.loads(self._head)
            except ValueError:
                whole = None
            if not isinstance(whole, dict) or not isinstance(whole.get("results"), list):
                raise BadReply(f"{self._what}: the answer is not a listing (no results list)")
        token = self._tokens[0] if self._tokens else None
        return str(token) if token else None


def catalog_of(data: dict[str, Any], what: str) -> dict[str, tuple[str, ...]]:
    """Given the feature catalog's answer, return each feature's dependencies by name.
    Raise BadReply if it is malformed."""
    try:
        return {
            str(item["name"]): tuple(str(d) for d in item.get("depends_on") or ())
            for item in data["features"]
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise BadReply(f"{what}: the feature catalog is malformed ({exc!r})") from None


@dataclass(frozen=True)
class Group:
    group_id: str
    name: str
    metadata: dict[str, Any] | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Group:
        return cls(str(data["group_id"]), str(data["name"]), data.get("metadata"))


@dataclass(frozen=True)
class Accepted:
    """The answer to an upload: the video id, and what we sent."""

    video_id: str
    status: str
    digest: str | None
    sample_hash: str | None
    bytes_sent: int
    request_id: str | None


@dataclass(frozen=True)
class MoveResult:
    moved_count: int
    video_ids: list[str]


def reply_json(response: httpx.Response, what: str, required: tuple[str, ...]) -> dict[str, Any]:
    """Given a 2xx response, return its JSON object. Raise BadReply if it is not JSON, not an
    object, or lacks a `required` key."""
    try:
        data = json.loads(response.content)
    except ValueError:
        summary, _, _ = parse_error_body(response.content)
        raise BadReply(
            f"{what}: HTTP {response.status_code} with a reply that is not JSON: {summary}"
        ) from None
    if not isinstance(data, dict):
        raise BadReply(f"{what}: HTTP {response.status_code} with a reply that is not an object")
    missing = [key for key in required if key not in data]
    if missing:
        raise BadReply(f"{what}: HTTP {response.status_code} without {', '.join(missing)}")
    return data


def each_result(data: dict[str, Any], what: str, build: Callable[[dict[str, Any]], T]) -> list[T]:
    """Given a listing, build each of its `results`. Raise BadReply if one is malformed."""
    try:
        return [build(item) for item in data.get("results") or []]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise BadReply(f"{what}: an item of results is malformed ({exc!r})") from None


def response_info(method: str, path: str, response: httpx.Response) -> ResponseInfo:
    headers = response.headers
    return ResponseInfo(
        method,
        path,
        response.status_code,
        headers.get("x-request-id"),
        _int(headers.get("x-ratelimit-requests-limit")),
        _int(headers.get("x-ratelimit-requests-remaining")),
        _seconds(headers.get("x-ratelimit-requests-reset")),
        _seconds(headers.get("retry-after")),
        headers.get("date"),  # parsed when asked: `doctor` alone reads it
    )


def _http_date(value: str | None) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


_BY_STATUS: dict[int, type[ApiStatusError]] = {
    401: AuthError,
    403: AuthError,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}


def status_error(response: httpx.Response, info: ResponseInfo) -> ApiStatusError:
    message, error_type, param = parse_error_body(response.content)
    if response.status_code == 413 and not error_type:
        message = f"file too large for the API ({message})"
    if param:
        message = f"{message} (param {param})"
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else ValidationFailed
    return cls(
        response.status_code,
        message,
        error_type=error_type,
        param=param,
        request_id=info.request_id,
        retry_after=info.retry_after,
        reset_after=info.reset_after,
    )


def parse_error_body(content: bytes) -> tuple[str, str | None, str | None]:
    """Given an error response body, return (message, type, param), whatever its shape.

    Understands ``{"error": {"type"|"code", "message", "param"}}``, FastAPI's
    ``{"detail": ...}``, and falls back to the raw text.
    """
    text = content.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            kind = error.get("type") or error.get("code")
            message = error.get("message") or kind or text
            param = error.get("param")
            return str(message), str(kind) if kind else None, str(param) if param else None
        detail = data.get("detail")
        if isinstance(detail, str):
            return detail, None, None
        if isinstance(detail, list):
            parts = [
                f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                for d in detail
                if isinstance(d, dict)
            ]
            return "; ".join(parts) or text, None, None
    title = _html_title(text)
    if title is not None:
        return f"an HTML page: {title}", None, None
    line = " ".join(text.split())
    return (line[:200] + ("..." if len(line) > 200 else "")) or "(empty body)", None, None


def _html_title(text: str) -> str | None:
    """Given a body, return a one-line summary if it is an HTML page (a proxy's error page)."""
    if not re.match(r"\s*<(!doctype html|html|head|body|title)\b", text, re.IGNORECASE):
        return None
    found = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    shown = found.group(1) if found else re.sub(r"<[^>]*>", " ", text)
    return " ".join(html.unescape(shown).split())[:120] or "(empty page)"
