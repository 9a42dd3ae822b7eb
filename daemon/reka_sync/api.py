"""The Reka Vision API client: the only module that speaks HTTP.

One shared ``httpx.Client`` (HTTP/1.1, explicit timeouts, a connection pool
sized to the workers, a swappable transport). Every foreign exception is
mapped at this edge into ``reka_sync.errors``; every response's request id and
rate-limit headers are handed to ``on_response``. The key is sent as
``X-Api-Key`` and lives only in the client's default headers.
"""

from __future__ import annotations

import email.utils
import json
import mimetypes
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from reka_sync.config import ApiConfig, Secret
from reka_sync.errors import (
    ApiStatusError,
    AuthError,
    Cancelled,
    Conflict,
    NotFound,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    ValidationFailed,
)
from reka_sync.upload_body import UploadBody

USER_AGENT = "reka-sync"
MIN_UPLOAD_RATE = 5 * 1024 * 1024  # bytes/s we still wait for the answer to an upload


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
    server_date: float | None = None  # the Date header, as epoch seconds


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
        meta = data.get("metadata") or {}
        return cls(
            str(data["video_id"]),
            data.get("status"),
            data.get("group_id"),
            data.get("error"),
            meta.get("description"),
            meta.get("video_name"),
            data,
        )


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


ResponseHook = Callable[[ResponseInfo], None]
RequestHook = Callable[[str, str], None]


class ApiClient:
    """Typed calls to the Reka Vision API v2. Safe to share between threads.

    `before_request(method, path)` runs before anything is sent and may raise to hold a
    request back; `on_response(info)` sees every answer, errors included.
    """

    def __init__(
        self,
        config: ApiConfig,
        key: Secret,
        *,
        max_connections: int = 8,
        transport: httpx.BaseTransport | None = None,
        on_response: ResponseHook | None = None,
        before_request: RequestHook | None = None,
    ) -> None:
        self._config = config
        self._on_response = on_response
        self._before_request = before_request
        verify: Any = True
        if config.ca_bundle is not None:
            import ssl

            verify = ssl.create_default_context(cafile=str(config.ca_bundle))
        # TCP_NODELAY: the closing boundary of an upload is a small write after a large one;
        # with Nagle on, it waits for a delayed ACK (40 ms per request on Linux).
        transport = transport or httpx.HTTPTransport(
            verify=verify,
            http1=True,
            http2=False,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        self._http = httpx.Client(
            base_url=config.base_url,
            headers={"X-Api-Key": key.reveal(), "User-Agent": USER_AGENT},
            timeout=httpx.Timeout(
                config.read_timeout,
                connect=config.connect_timeout,
                write=config.stall_timeout,
                pool=config.read_timeout,
            ),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"ApiClient({self._config.base_url!r})"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- videos --------------------------------------------------------------------------

    def answer_wait(self, size: int) -> float:
        """Given an upload's size, return how long we wait for the answer once it is sent."""
        return self._config.read_timeout + size / MIN_UPLOAD_RATE

    def upload_file(
        self,
        path: Path,
        *,
        video_name: str,
        size: int,
        description: str | None = None,
        group_id: str | None = None,
        cancel: threading.Event | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> Accepted:
        """Given a file and its expected size, stream it as a new video and return the 202 answer.

        Raise Cancelled if the body was stopped (cancel, stall, changing file), NotSent if the
        server cannot have stored it, OutcomeUnknown if it may have, or an ApiStatusError.
        """
        fields = {"video_name": video_name, "description": description, "group_id": group_id}
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        body = UploadBody(
            path,
            size,
            {k: v for k, v in fields.items() if v is not None},
            filename=path.name,
            content_type=content_type,
            cancel=cancel,
            on_progress=on_progress,
        )
        timeout = httpx.Timeout(
            self.answer_wait(size),
            connect=self._config.connect_timeout,
            write=self._config.stall_timeout,
            pool=None,
        )
        with body:
            response = self._send(
                "POST",
                "/v2/videos",
                content=body.chunks(),
                headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
                timeout=timeout,
                body=body,
            )
        data = response.json()
        return Accepted(
            str(data["video_id"]),
            str(data.get("status") or "uploading"),
            body.digest,
            body.sample_hash,
            body.bytes_sent,
            response.headers.get("x-request-id"),
        )

    def upload_url(
        self,
        url: str,
        *,
        video_name: str | None = None,
        description: str | None = None,
        group_id: str | None = None,
    ) -> str:
        """Given a public URL, ask the API to fetch it as a new video; return the video id."""
        fields = {
            "video_url": url,
            "video_name": video_name,
            "description": description,
            "group_id": group_id,
        }
        data = {k: v for k, v in fields.items() if v is not None}
        response = self._send("POST", "/v2/videos", files={k: (None, v) for k, v in data.items()})
        return str(response.json()["video_id"])

    def get_video(self, video_id: str) -> Video:
        """Given a video id, return the video. Raise NotFound if it does not exist."""
        return Video.from_json(self._send("GET", f"/v2/videos/{video_id}").json())

    def list_videos(self, ids: Iterable[str] | None = None) -> list[Video]:
        """Return every video of the key (or those among `ids`), following page tokens if any."""
        params: list[tuple[str, str]] = [("ids", i) for i in ids or ()]
        videos: list[Video] = []
        while True:
            data = self._send("GET", "/v2/videos", params=params).json()
            videos.extend(Video.from_json(v) for v in data.get("results") or [])
            token = data.get("next_page_token")
            if not token:
                return videos
            params = [*(p for p in params if p[0] != "page_token"), ("page_token", str(token))]

    def update_video(self, video_id: str, **changes: Any) -> Video:
        """Given a video id and fields (name, title, description, group_id), return the video."""
        return Video.from_json(self._send("PATCH", f"/v2/videos/{video_id}", json=changes).json())

    def delete_video(self, video_id: str) -> None:
        """Given a video id, delete the video and everything indexed from it."""
        self._send("DELETE", f"/v2/videos/{video_id}")

    # -- groups --------------------------------------------------------------------------

    def list_groups(self) -> list[Group]:
        """Return every video group of the key."""
        data = self._send("GET", "/v2/video-groups").json()
        return [Group.from_json(g) for g in data.get("results") or []]

    def create_group(self, name: str, metadata: dict[str, Any] | None = None) -> Group:
        """Given a name, create a group. Raise Conflict if one by that name exists."""
        payload: dict[str, Any] = {"name": name}
        if metadata is not None:
            payload["metadata"] = metadata
        return Group.from_json(self._send("POST", "/v2/video-groups", json=payload).json())

    def get_group(self, group_id: str) -> Group:
        """Given a group id, return the group. Raise NotFound if it does not exist."""
        return Group.from_json(self._send("GET", f"/v2/video-groups/{group_id}").json())

    def update_group(
        self, group_id: str, *, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Group:
        """Given a group id and a new name or metadata, return the updated group."""
        payload = {k: v for k, v in (("name", name), ("metadata", metadata)) if v is not None}
        return Group.from_json(
            self._send("PATCH", f"/v2/video-groups/{group_id}", json=payload).json()
        )

    def delete_group(self, group_id: str) -> None:
        """Given a group id, delete the group; its videos stay, detached."""
        self._send("DELETE", f"/v2/video-groups/{group_id}")

    def group_videos(self, group_id: str) -> list[Video]:
        """Given a group id, return the videos in it."""
        data = self._send("GET", f"/v2/video-groups/{group_id}/videos").json()
        return [Video.from_json(v) for v in data.get("results") or []]

    def move_videos(self, group_id: str, video_ids: list[str]) -> MoveResult:
        """Given a group and video ids, move them there; return how many moved."""
        data = self._send(
            "POST", f"/v2/video-groups/{group_id}/videos", json={"video_ids": video_ids}
        ).json()
        return MoveResult(int(data.get("moved_count", 0)), list(data.get("video_ids") or []))

    # -- features (optional indexing) -----------------------------------------------------

    def feature_catalog(self) -> list[dict[str, Any]]:
        """Return the features the API can produce, with their dependencies."""
        return list(self._send("GET", "/v2/features").json().get("features") or [])

    def plan_features(self, video_id: str, desired: list[str]) -> dict[str, Any]:
        """Given a video and the features wanted, return the API's plan (statuses, actionable)."""
        data: dict[str, Any] = self._send(
            "POST", f"/v2/videos/{video_id}/features/plan", json={"desired": desired}
        ).json()
        return data

    def trigger_feature(self, video_id: str, feature: str, **options: Any) -> str:
        """Given a video and a feature, start it; return the feature's status."""
        body = {"force": False, **options}
        data = self._send("POST", f"/v2/videos/{video_id}/features/{feature}", json=body).json()
        return str(data.get("status"))

    # -- plumbing ------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, *, body: UploadBody | None = None, **kwargs: Any
    ) -> httpx.Response:
        if self._before_request is not None:
            self._before_request(method, path)
        try:
            response = self._http.request(method, path, **kwargs)
        except Cancelled:
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise NotSent(
                f"{method} {path}: cannot connect to {self._config.base_url}: {_reason(exc)}"
            ) from None
        except httpx.TransportError as exc:
            sent_all = body.finished if body is not None else method != "GET"
            if body is not None and not sent_all:
                raise NotSent(
                    f"{method} {path}: connection failed after "
                    f"{body.bytes_sent} of {body.length} bytes: {_reason(exc)}"
                ) from None
            kind = OutcomeUnknown if sent_all else NotSent
            raise kind(f"{method} {path}: no answer: {_reason(exc)}") from None
        info = _info(method, path, response)
        if self._on_response is not None:
            self._on_response(info)
        if response.status_code >= 400:
            raise _status_error(response, info)
        return response


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _info(method: str, path: str, response: httpx.Response) -> ResponseInfo:
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
        _http_date(headers.get("date")),
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


def _status_error(response: httpx.Response, info: ResponseInfo) -> ApiStatusError:
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
    return (text[:300] or "(empty body)"), None, None
