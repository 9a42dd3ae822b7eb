"""The emulator's HTTP layer: a threaded HTTP/1.1 server that streams uploads to disk.

Each connection gets a thread (stdlib ``ThreadingHTTPServer``); an upload is
read 1 MiB at a time into a blob file while its XXH3-128 digest is computed, so
several multi-GB uploads run side by side with flat memory (see uploads.py).
The API's view of time comes from ``Settings.clock``, so tests can step it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from reka_sync.emulator import control, features, multipart, uploads
from reka_sync.emulator.bodies import Drop
from reka_sync.emulator.errors import StoreError
from reka_sync.emulator.faults import Faults, Quota
from reka_sync.emulator.shapes import group_json, video_json
from reka_sync.emulator.store import Store

REQUEST_LOG_SIZE = 100_000


@dataclass
class Settings:
    api_key: str | None = None
    processing_delay: float = 1.0  # seconds a video stays "uploading"
    feature_delay: float = 2.0  # seconds a feature run takes (pending, then processing)
    max_upload_bytes: int | None = None
    group_cap: int = 10
    upload_quota: int | None = None
    clock: Callable[[], float] = field(default=time.time, repr=False)  # the API's "now"


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        store: Store,
        faults: Faults,
        quota: Quota,
        settings: Settings,
    ) -> None:
        self.store = store
        self.faults = faults
        self.quota = quota
        self.settings = settings
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.log_lock = threading.Lock()
        super().__init__(address, Handler)

    def now(self) -> float:
        """Return the API's current time (seconds since the epoch, from `Settings.clock`)."""
        return self.settings.clock()


class _Handled(Exception):
    """A fault already answered; stop handling (the connection may stay open)."""


Route = tuple[str, re.Pattern[str], str]
_ID = r"(?P<ident>[0-9a-fA-F-]{36})"
ROUTES: list[Route] = [
    ("GET", re.compile(r"/v2/videos"), "list_videos"),
    ("POST", re.compile(r"/v2/videos"), "upload"),
    ("GET", re.compile(rf"/v2/videos/{_ID}"), "get_video"),
    ("PATCH", re.compile(rf"/v2/videos/{_ID}"), "update_video"),
    ("DELETE", re.compile(rf"/v2/videos/{_ID}"), "delete_video"),
    ("GET", re.compile(r"/v2/video-groups"), "list_groups"),
    ("POST", re.compile(r"/v2/video-groups"), "create_group"),
    ("GET", re.compile(rf"/v2/video-groups/{_ID}"), "get_group"),
    ("PATCH", re.compile(rf"/v2/video-groups/{_ID}"), "update_group"),
    ("DELETE", re.compile(rf"/v2/video-groups/{_ID}"), "delete_group"),
    ("GET", re.compile(rf"/v2/video-groups/{_ID}/videos"), "group_videos"),
    ("POST", re.compile(rf"/v2/video-groups/{_ID}/videos"), "move_videos"),
    ("GET", re.compile(r"/v2/features"), "feature_catalog"),
    ("POST", re.compile(rf"/v2/videos/{_ID}/features/plan"), "plan_features"),
    (
        "POST",
        re.compile(rf"/v2/videos/{_ID}/features/(?P<feature>{'|'.join(features.FEATURES)})"),
        "trigger_feature",
    ),
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorServer
    rbufsize = 1024 * 1024
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the console quiet; requests are in the request log."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing -------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self.request_id = f"req_{uuid.uuid4().hex}"
        self.arrived = time.time()
        self.owner = ""
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.body_read = False
        self.log_notes: dict[str, Any] = {}
        try:
            if url.path.startswith("/_emulator/"):
                control.answer(self, method, url.path)
                return
            self._authenticate()
            action, params = _route(method, url.path)
            if "feature" in params:
                self.log_notes["feature"] = params["feature"]
            self._inject_faults(action)
            getattr(self, f"api_{action}")(**params)
        except StoreError as exc:
            self._error(exc.status, exc.error_type, exc.message, exc.param)
        except _Handled:
            pass
        except Drop:
            self._record(0)
            self.close_connection = True
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _authenticate(self) -> None:
        key = self.headers.get("X-Api-Key") or ""
        bearer = self.headers.get("Authorization") or ""
        if not key and bearer.lower().startswith("bearer "):
            key = bearer[7:]
        key = key.strip()
        expected = self.server.settings.api_key
        if not key or (expected is not None and key != expected):
            raise StoreError(401, "authentication_error", "Invalid or missing API key")
        self.owner = hashlib.sha256(key.encode()).hexdigest()[:16]

    def _inject_faults(self, action: str) -> None:
        faults = self.server.faults
        is_upload = action == "upload"
        latency = faults.draw("latency", is_upload)
        if latency:
            time.sleep(latency.seconds)  # the fault itself: a slow server
        if limited := faults.draw("rate_limit", is_upload):
            self._drain()
            headers = {
                "retry-after": str(int(limited.seconds))
                if limited.seconds >= 1
                else f"{limited.seconds:g}"
            }
            self._error(
                429,
                "rate_limit_error",
                "Too many requests",
                headers=headers,
                retry_after=limited.seconds,
            )
            raise _Handled
        if faults.draw("server_error", is_upload):
            self._drain()
            self._error(500, "server_error", "Internal server error (injected)")
            raise _Handled
        if not is_upload and faults.draw("garbled_reply", False, self.query):
            self._drain()
            self._send(200, b'{"results": [{"video_id": "')
            raise _Handled

    def _json_body(self, required: bool = False) -> dict[str, Any]:
        """Return the request's JSON object body ({} if none and not `required`).

        Raise StoreError if it is missing but `required`, not JSON, not an object, or
        sent with a Content-Type other than JSON (absent counts as JSON, as in FastAPI).
        """
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.body_read = True
        content_type = Message()
        content_type["content-type"] = self.headers.get("Content-Type") or "application/json"
        subtype = content_type.get_content_subtype()
        if raw and (
            content_type.get_content_maintype() != "application"
            or (subtype != "json" and not subtype.endswith("+json"))
        ):
            raise StoreError(400, "validation_error", "body must be JSON (application/json)")
        if not raw:
            if required:
                raise StoreError(400, "validation_error", "body must be a JSON object")
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise StoreError(400, "validation_error", "body is not valid JSON") from None
        if not isinstance(data, dict):
            raise StoreError(400, "validation_error", "body must be a JSON object")
        return data

    def _drain(self) -> None:
        if self.body_read:
            return
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(left, multipart.CHUNK))
            if not chunk:
                break
            left -= len(chunk)
        self.body_read = True

    def _send(
        self,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-ID", self.request_id)
        limits = self.server.quota.headers(self.owner, self.server.now()) if self.owner else {}
        for name, value in {**limits, **(headers or {})}.items():
            self.send_header(name, value)
        if not self.body_read and int(self.headers.get("Content-Length") or 0) > 0:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self._record(status)

    def _error(
        self,
        status: int,
        error_type: str,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        retry_after: float | None = None,
        code_variant: bool = False,
    ) -> None:
        error: dict[str, Any] = (
            {"code": "rate_limit_exceeded"} if code_variant else {"type": error_type}
        )
        error["message"] = message
        if param:
            error["param"] = param
        self._send(status, {"error": error}, headers)
        if retry_after is not None:
            self.server.request_log[-1]["retry_after"] = retry_after

    def _record(self, status: int) -> None:
        with self.server.log_lock:
            self.server.request_log.append(
                {
                    "at": self.arrived,
                    "done": time.time(),
                    "method": self.command,
                    "path": urlsplit(self.path).path,
                    "status": status,
                    "request_id": self.request_id,
                    **self.log_notes,
                }
            )

    # -- the API --------------------------------------------------------------------------

    def api_upload(self) -> None:
        uploads.upload(self)

    def api_list_videos(self) -> None:
        ids = self.query.get("ids")
        now = self.server.now()
        videos = self.server.store.list_videos(self.owner, ids)
        self._send(200, {"results": [video_json(v, now) for v in videos]})

    def api_get_video(self, ident: str) -> None:
        self._send(200, video_json(self.server.store.video(self.owner, ident), self.server.now()))

    def api_update_video(self, ident: str) -> None:
        body = self._json_body()
        changes = {
            "video_name": body.get("name"),
            "title": body.get("title"),
            "description": body.get("description"),
            "group_id": body.get("group_id"),
        }
        video = self.server.store.update_video(self.owner, ident, changes)
        self._send(200, video_json(video, self.server.now()))

    def api_delete_video(self, ident: str) -> None:
        self.server.store.delete_video(self.owner, ident)
        self._send(200, {"status": "success", "message": "Video deleted successfully"})

    def api_list_groups(self) -> None:
        groups = self.server.store.list_groups(self.owner)
        self._send(200, {"results": [group_json(g) for g in groups]})

    def api_create_group(self) -> None:
        body = self._json_body()
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise StoreError(400, "validation_error", "name is required", "name")
        metadata = _metadata(body.get("metadata"))
        group = self.server.store.create_group(self.owner, name, metadata, self.server.now())
        self._send(200, group_json(group))

    def api_get_group(self, ident: str) -> None:
        self._send(200, group_json(self.server.store.group(self.owner, ident)))

    def api_update_group(self, ident: str) -> None:
        body = self._json_body()
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise StoreError(400, "validation_error", "name must be a non-empty string", "name")
        group = self.server.store.update_group(
            self.owner, ident, name, _metadata(body.get("metadata")), self.server.now()
        )
        self._send(200, group_json(group))

    def api_delete_group(self, ident: str) -> None:
        self.server.store.delete_group(self.owner, ident)
        self._send(200, {"status": "success", "message": "Video group deleted"})

    def api_group_videos(self, ident: str) -> None:
        self.server.store.group(self.owner, ident)
        videos = self.server.store.list_videos(self.owner, group_id=ident)
        self._send(200, {"results": [video_json(v, self.server.now()) for v in videos]})

    def api_move_videos(self, ident: str) -> None:
        ids = self._json_body().get("video_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise StoreError(
                400, "validation_error", "video_ids must be a list of strings", "video_ids"
            )
        moved = self.server.store.move_videos(self.owner, ident, ids)
        self._send(
            200,
            {"status": "success", "moved_count": len(moved), "group_id": ident, "video_ids": moved},
        )

    def api_feature_catalog(self) -> None:
        self._send(200, features.catalog_json())

    def api_plan_features(self, ident: str) -> None:
        desired = self._json_body().get("desired")
        video = self.server.store.video(self.owner, ident)
        now = self.server.now()
        uploaded = video.status(now) == "uploaded"
        self._send(200, features.plan_json(ident, video.features.copy(), desired, uploaded, now))

    def api_trigger_feature(self, ident: str, feature: str) -> None:
        options = features.trigger_options(feature, self._json_body(required=True))
        self.log_notes["force"] = options.force
        server = self.server
        code, status = server.store.trigger_feature(
            self.owner,
            ident,
            feature,
            options,
            server.now(),
            server.settings.feature_delay,
            lambda: server.faults.draw("feature_failure", False) is not None,
            self.log_notes,
        )
        answer = json.dumps({"video_id": ident, "feature": feature, "status": status})
        if server.faults.draw("garbled_after_trigger", False):
            self._send(200, answer[: len(answer) // 2].encode())  # the trigger took effect
            return
        self._send(code, answer.encode())


def _route(method: str, path: str) -> tuple[str, dict[str, str]]:
    path = path.rstrip("/") or "/"
    allowed = False
    for verb, pattern, action in ROUTES:
        match = pattern.fullmatch(path)
        if match:
            if verb == method:
                return action, match.groupdict()
            allowed = True
    if allowed:
        raise StoreError(405, "validation_error", f"{method} is not allowed on {path}")
    raise StoreError(404, "not_found_error", f"no endpoint {path}")


def _metadata(value: Any) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise StoreError(400, "validation_error", "metadata must be an object", "metadata")
    return value
