"""The Reka Vision API client: the only module that speaks HTTP.

One shared ``httpx.Client`` (HTTP/1.1, explicit timeouts, a connection pool
sized to the workers, a swappable transport). Every foreign exception is
mapped at this edge into ``reka_sync.errors``; every response's request id and
rate-limit headers are handed to ``on_response``. The key is sent as
``X-Api-Key`` and lives only in the client's default headers. What an answer
says (typed values, the error for a status) is parsed in ``replies``.
"""

from __future__ import annotations

import mimetypes
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from reka_sync.api.replies import (
    Accepted,
    Group,
    MoveResult,
    Plan,
    ResponseInfo,
    StreamedListing,
    Video,
    catalog_of,
    each_result,
    parse_error_body,
    reply_json,
    response_info,
    status_error,
)
from reka_sync.config import ApiConfig
from reka_sync.credentials import Secret
from reka_sync.errors import (
    BadReply,
    Cancelled,
    NotSent,
    OutcomeUnknown,
    ServerError,
    TransportError,
)
from reka_sync.stability import FileStat
from reka_sync.throttle import Throttle
from reka_sync.upload_body import UploadBody

__all__ = [
    "Accepted",
    "ApiClient",
    "Group",
    "MoveResult",
    "Plan",
    "ResponseInfo",
    "Transport",
    "Video",
    "parse_error_body",
]

USER_AGENT = "reka-sync"
GATEWAY_STATUSES = (502, 503, 504)  # answered by a proxy, whatever the API did
MIN_UPLOAD_RATE = 5 * 1024 * 1024  # bytes/s we still wait for the answer to an upload
URLS_KEPT = 32  # parsed URLs kept for reuse, at most (the first paths asked for)


ResponseHook = Callable[[ResponseInfo], None]
Transport = httpx.BaseTransport  # swappable: tests hand in an httpx.MockTransport
RequestHook = Callable[[str, str], None]
FailureHook = Callable[[TransportError], None]


class ApiClient:
    """Typed calls to the Reka Vision API v2. Safe to share between threads.

    `before_request(method, path)` runs before anything is sent and may raise to hold a
    request back; `on_response(info)` sees every answer, errors included;
    `on_failure(error)` sees every request that got no answer (the error it raises).
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
        on_failure: FailureHook | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self._config = config
        self._throttle = throttle
        self._on_response = on_response
        self._before_request = before_request
        self._on_failure = on_failure
        verify: Any = True
        if config.ca_bundle is not None:
            verify = ssl.create_default_context(cafile=str(config.ca_bundle))
        elif httpx.URL(config.base_url).scheme == "http":
            # Plain HTTP never makes a TLS connection (every request is a path under
            # base_url; redirects are not followed), so the CA store, which takes tens of
            # ms to load at every start, is not loaded: a context that trusts nothing
            # stands in for the one the transport insists on.
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
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
        timeout = httpx.Timeout(
            config.read_timeout,
            connect=config.connect_timeout,
            write=config.stall_timeout,
            pool=config.read_timeout,
        )
        headers = {"X-Api-Key": key.reveal(), "User-Agent": USER_AGENT}
        self._http = httpx.Client(
            base_url=config.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )
        # Requests that are read whole go straight to the transport (`_send`): the
        # client's cookies, auth flow, redirect loop and URL merging cost more CPU than
        # an upload of a small file, and the API uses none of them.
        self._transport = transport
        self._base_url = config.base_url.rstrip("/")
        self._urls: dict[str, httpx.URL] = {}  # parsed once: a parse costs more than a send
        self._header_items = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in self._http.headers.raw
        }
        self._headers = httpx.Headers(self._header_items)
        self._timeout = timeout.as_dict()

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
        path: str | os.PathLike[str],
        *,
        video_name: str,
        size: int,
        description: str | None = None,
        group_id: str | None = None,
        cancel: threading.Event | None = None,
        on_progress: Callable[[int], None] | None = None,
        expected: FileStat | None = None,
    ) -> Accepted:
        """Given a file and its expected size, stream it as a new video and return the 202 answer.

        The description is sent after the file, so it may carry the digest of the bytes
        sent (upload_body.DIGEST_SLOT). Raise Cancelled if the body was stopped (cancel,
        stall, changing file), NotSent if the server cannot have stored it, OutcomeUnknown
        if it may have, or an ApiStatusError.
        """
        fields = {"video_name": video_name, "group_id": group_id}
        filename = os.path.basename(path)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        body = UploadBody(
            path,
            size,
            {k: v for k, v in fields.items() if v is not None},
            trailing={"description": description} if description is not None else None,
            filename=filename,
            content_type=content_type,
            cancel=cancel,
            on_progress=on_progress,
            expected=expected,
            throttle=self._throttle,
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
        try:
            data = reply_json(response, "POST /v2/videos", ("video_id",))
        except BadReply as exc:  # the body went out whole: the API may have stored it
            raise OutcomeUnknown(f"{exc}; the video may have been stored") from None
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
        try:
            response = self._send(
                "POST", "/v2/videos", files={k: (None, v) for k, v in data.items()}
            )
        except ServerError as exc:  # a gateway answered: the API may have taken it
            if exc.status in GATEWAY_STATUSES:
                raise OutcomeUnknown(f"{exc}; the video may have been created") from None
            raise
        try:
            return str(reply_json(response, "POST /v2/videos", ("video_id",))["video_id"])
        except BadReply as exc:
            raise OutcomeUnknown(f"{exc}; the video may have been created") from None

    def get_video(self, video_id: str) -> Video:
        """Given a video id, return the video. Raise NotFound if it does not exist."""
        return Video.from_json(self._get_json("GET", f"/v2/videos/{video_id}", ("video_id",)))

    def list_videos(self, ids: Iterable[str] | None = None) -> list[Video]:
        """Return every video of the key (or those among `ids`), following page tokens if any."""
        params: list[tuple[str, str]] = [("ids", i) for i in ids or ()]
        videos: list[Video] = []
        while True:
            data = self._get_json("GET", "/v2/videos", ("results",), params=params)
            videos.extend(each_result(data, "GET /v2/videos", Video.from_json))
            token = data.get("next_page_token")
            if not token:
                return videos
            params = [*(p for p in params if p[0] != "page_token"), ("page_token", str(token))]

    def iter_videos(self) -> Iterator[Video]:
        """Yield every video of the key as the listing streams in (a 100,000-video account
        never sits in memory), following page tokens if any. Raise BadReply if the
        listing is malformed."""
        params: list[tuple[str, str]] = []
        while True:
            with self._streamed("GET", "/v2/videos", params=params) as response:
                listing = StreamedListing("GET /v2/videos")
                for chunk in response.iter_bytes():
                    yield from each_result(
                        {"results": listing.feed(chunk)}, "GET /v2/videos", Video.from_json
                    )
                token = listing.close()
            if not token:
                return
            params = [("page_token", token)]

    def update_video(self, video_id: str, **changes: Any) -> Video:
        """Given a video id and fields (name, title, description, group_id), return the video."""
        path = f"/v2/videos/{video_id}"
        return Video.from_json(self._get_json("PATCH", path, ("video_id",), json=changes))

    def delete_video(self, video_id: str) -> None:
        """Given a video id, delete the video and everything indexed from it."""
        self._send("DELETE", f"/v2/videos/{video_id}")

    # -- groups --------------------------------------------------------------------------

    def list_groups(self) -> list[Group]:
        """Return every video group of the key."""
        data = self._get_json("GET", "/v2/video-groups", ("results",))
        return each_result(data, "GET /v2/video-groups", Group.from_json)

    def create_group(self, name: str, metadata: dict[str, Any] | None = None) -> Group:
        """Given a name, create a group. Raise Conflict if one by that name exists."""
        payload: dict[str, Any] = {"name": name}
        if metadata is not None:
            payload["metadata"] = metadata
        return Group.from_json(
            self._get_json("POST", "/v2/video-groups", ("group_id", "name"), json=payload)
        )

    def get_group(self, group_id: str) -> Group:
        """Given a group id, return the group. Raise NotFound if it does not exist."""
        path = f"/v2/video-groups/{group_id}"
        return Group.from_json(self._get_json("GET", path, ("group_id", "name")))

    def update_group(
        self, group_id: str, *, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Group:
        """Given a group id and a new name or metadata, return the updated group."""
        payload = {k: v for k, v in (("name", name), ("metadata", metadata)) if v is not None}
        path = f"/v2/video-groups/{group_id}"
        return Group.from_json(self._get_json("PATCH", path, ("group_id", "name"), json=payload))

    def delete_group(self, group_id: str) -> None:
        """Given a group id, delete the group; its videos stay, detached."""
        self._send("DELETE", f"/v2/video-groups/{group_id}")

    def group_videos(self, group_id: str) -> list[Video]:
        """Given a group id, return the videos in it."""
        path = f"/v2/video-groups/{group_id}/videos"
        data = self._get_json("GET", path, ("results",))
        return each_result(data, f"GET {path}", Video.from_json)

    def move_videos(self, group_id: str, video_ids: list[str]) -> MoveResult:
        """Given a group and video ids, move them there; return how many moved."""
        path = f"/v2/video-groups/{group_id}/videos"
        data = self._get_json("POST", path, ("video_ids",), json={"video_ids": video_ids})
        moved = data["video_ids"]
        if not isinstance(moved, list):
            raise BadReply(f"POST {path}: video_ids is not a list")
        return MoveResult(int(data.get("moved_count") or len(moved)), [str(v) for v in moved])

    # -- features (optional indexing) -----------------------------------------------------

    def feature_catalog(self) -> dict[str, tuple[str, ...]]:
        """Return the features the API can produce, each with the features it depends on."""
        return catalog_of(self._get_json("GET", "/v2/features", ("features",)), "GET /v2/features")

    def plan_features(self, video_id: str, desired: list[str]) -> Plan:
        """Given a video and the features wanted, return the API's plan: what is required,
        each one's status, what can be triggered now. Raise BadReply if it is malformed."""
        path = f"/v2/videos/{video_id}/features/plan"
        data = self._get_json("POST", path, ("statuses",), json={"desired": desired})
        try:
            return Plan.from_json(data)
        except TypeError as exc:
            raise BadReply(f"POST {path}: {exc}") from None

    def trigger_feature(self, video_id: str, feature: str, **options: Any) -> str:
        """Given a video and a feature, start it; return the feature's status."""
        body = {"force": False, **options}
        path = f"/v2/videos/{video_id}/features/{feature}"
        response = self._send("POST", path, json=body)
        try:  # triggers are metered: an unreadable answer is followed by a fresh plan
            return str(reply_json(response, f"POST {path}", ("status",))["status"])
        except BadReply as exc:
            raise OutcomeUnknown(f"{exc}; plan again before triggering") from None

    # -- plumbing ------------------------------------------------------------------------

    def _get_json(
        self, method: str, path: str, required: tuple[str, ...], **kwargs: Any
    ) -> dict[str, Any]:
        """Send an idempotent (or not metered) request; return its JSON object. Raise
        BadReply if the answer is not the documented JSON (safe to send again)."""
        return reply_json(self._send(method, path, **kwargs), f"{method} {path}", required)

    @contextmanager
    def _streamed(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """Send a request whose answer is read as it streams in (an error status is read
        whole and raised); yield the response."""
        if self._before_request is not None:
            self._before_request(method, path)
        try:
            with self._http.stream(method, path, **kwargs) as response:
                info = response_info(method, path, response)
                if self._on_response is not None:
                    self._on_response(info)
                if response.status_code >= 400:
                    response.read()
                    raise status_error(response, info)
                yield response
        except httpx.TransportError as exc:
            error = self._transport_error(exc, method, path, None)
            if self._on_failure is not None:
                self._on_failure(error)
            raise error from None

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: UploadBody | None = None,
        timeout: httpx.Timeout | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        if self._before_request is not None:
            self._before_request(method, path)
        request = httpx.Request(
            method,
            self._url(path),
            headers={**self._header_items, **headers} if headers else self._headers,
            extensions={"timeout": timeout.as_dict() if timeout else self._timeout},
            **kwargs,
        )
        try:
            response = self._transport.handle_request(request)
            response.request = request
            try:
                response.read()
            finally:
                response.close()
        except Cancelled:
            raise
        except httpx.TransportError as exc:
            error = self._transport_error(exc, method, path, body)
            if self._on_failure is not None:
                self._on_failure(error)
            raise error from None
        info = response_info(method, path, response)
        if self._on_response is not None:
            self._on_response(info)
        if body is not None and body.finished and response.status_code in GATEWAY_STATUSES:
            message, _, _ = parse_error_body(response.content)
            raise OutcomeUnknown(
                f"{method} {path}: HTTP {response.status_code} from a gateway after the whole "
                f"body was sent ({message}); the API may have stored it"
            )
        if response.status_code >= 400:
            raise status_error(response, info)
        return response

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = httpx.URL(self._base_url + path)
            if len(self._urls) < URLS_KEPT:  # the fixed paths; ids in paths vary
                self._urls[path] = url
        return url

    def _transport_error(
        self, exc: httpx.TransportError, method: str, path: str, body: UploadBody | None
    ) -> TransportError:
        """Map a failed exchange: not sent (safe again), or sent with the outcome unknown."""
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return NotSent(
                f"{method} {path}: cannot connect to {self._config.base_url}: {_reason(exc)}",
                unreachable=True,
            )
        if isinstance(exc, httpx.PoolTimeout):
            return NotSent(f"{method} {path}: no free connection: {_reason(exc)}")
        sent_all = body.finished if body is not None else method != "GET"
        if body is not None and not sent_all:
            return NotSent(
                f"{method} {path}: connection failed after "
                f"{body.bytes_sent} of {body.length} bytes: {_reason(exc)}"
            )
        kind = OutcomeUnknown if sent_all else NotSent
        return kind(f"{method} {path}: no answer: {_reason(exc)}")


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
