"""A fast fake Reka Vision API for the benchmarks: it reads and discards upload bodies.

  python -m tests.benchmarks.sink --port 0
  # prints: reka-sync benchmark sink on http://127.0.0.1:PORT

Raw sockets, one thread per connection, HTTP/1.1 keep-alive, TCP_NODELAY on every
accepted socket (no Nagle stall on the answer's second write). An upload
(`POST /v2/videos`) is answered 202 with the documented body and a fresh video id as
soon as its last byte is read; the body is never parsed as multipart. Only its first
few KiB are looked at, where reka-sync and curl put the text fields before the file
part, to keep `video_name`, `description` (the reconcile marker) and `group_id` of
each video, so that listing by marker and group membership answer truthfully.
Content-Length and `Transfer-Encoding: chunked` bodies are both read;
`Expect: 100-continue` is honoured.

Besides the upload it answers, cheaply and in the documented shapes, what a backfill
needs to finish: `GET /v2/videos[?ids=..]` (every video reported `uploaded` at once),
`GET|PATCH|DELETE /v2/videos/{id}`, `GET|POST /v2/video-groups`,
`GET /v2/video-groups/{id}`, `GET|POST /v2/video-groups/{id}/videos`.

Control endpoints (no key):
  GET  /_sink/stats  -> JSON: uploads, bytes, first_byte_at (wall clock of the first byte
                        of the first upload), last_accepted_at (wall clock when the last
                        202 was written), span, connections, requests by route, ...
  POST /_sink/reset  -> forget every video, group and figure
  GET  /_sink/timeline -> JSON, when started with --timeline (SinkProcess(timeline=True)):
                        every upload body as it arrived, measured here on the server side
                        at each socket read: {"bin": 0.1, "now": epoch, "received": bytes of
                        every body so far, "sends": [{"upload": n (in order of arrival),
                        "connection": n, "video_name", "first"/"last": epoch of its first
                        and last body byte, "bytes", "done", "bins": [[epoch at which the
                        100 ms bin starts, bytes read in it], ...]}]}. Without --timeline
                        nothing is recorded (no cost) and "sends" is empty.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

CHUNK = 1024 * 1024  # bytes read from the socket at a time while discarding a body
PEEK = 8192  # bytes of an upload body kept to find its text fields
MAX_HEAD = 64 * 1024
BIN = 0.1  # seconds: the timeline's bins (--timeline)
_FIELD = re.compile(
    rb'Content-Disposition: form-data; name="([^"]+)"\r\n(?:[^\r\n]+\r\n)*\r\n(.*?)\r\n--',
    re.DOTALL,
)
_ID = r"([0-9a-fA-F-]{36})"
_VIDEO = re.compile(rf"/v2/videos/{_ID}")
_GROUP = re.compile(rf"/v2/video-groups/{_ID}")
_GROUP_VIDEOS = re.compile(rf"/v2/video-groups/{_ID}/videos")


class Closed(Exception):
    """The peer closed the connection (or sent something we cannot frame)."""


class Reply(Exception):
    """An answer to send at once (an error, usually)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _error(status: int, kind: str, message: str) -> Reply:
    return Reply(status, {"error": {"type": kind, "message": message}})


REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
}


class Send:
    """One upload body as it arrives (--timeline): bytes per 100 ms bin, at each socket read.
    Changed by its connection's thread under the State's lock."""

    def __init__(self, upload: int, connection: int) -> None:
        self.upload = upload
        self.connection = connection
        self.video_name: str | None = None
        self.first: float | None = None
        self.last: float | None = None
        self.bytes = 0
        self.done = False
        self.bins: dict[int, int] = {}

    def got(self, count: int, at: float) -> None:
        """Given bytes of the body read from the socket and the time (epoch), count them."""
        if self.first is None:
            self.first = at
        self.last = at
        self.bytes += count
        index = int(at / BIN)
        self.bins[index] = self.bins.get(index, 0) + count

    def report(self) -> dict[str, Any]:
        return {
            "upload": self.upload,
            "connection": self.connection,
            "video_name": self.video_name,
            "first": self.first,
            "last": self.last,
            "bytes": self.bytes,
            "done": self.done,
            "bins": [[round(i * BIN, 3), n] for i, n in sorted(self.bins.items())],
        }


class State:
    """Videos, groups and figures, shared by the connection threads (one lock)."""

    def __init__(self, timeline: bool = False) -> None:
        self.lock = threading.Lock()
        self.timeline = timeline  # record every upload body's arrival (Send); kept at reset
        self.reset()

    def reset(self) -> None:
        self.videos: dict[str, list[Any]] = {}  # id -> [name, description, group_id, created]
        self.groups: dict[str, dict[str, Any]] = {}
        self.uploads = 0
        self.upload_bytes = 0
        self.first_byte_at: float | None = None
        self.last_accepted_at: float | None = None
        self.last_request_at: float | None = None
        self.connections = 0
        self.requests: dict[str, int] = {}
        self.polled_ids = 0
        self.last_poll_at: float | None = None
        self.sends: list[Send] = []
        self.received = 0  # body bytes of every upload, as read (--timeline)

    def timeline_report(self) -> dict[str, Any]:
        return {
            "bin": BIN,
            "enabled": self.timeline,
            "now": time.time(),
            "received": self.received,
            "sends": [send.report() for send in self.sends],
        }

    def stats(self) -> dict[str, Any]:
        span = (
            self.last_accepted_at - self.first_byte_at
            if self.first_byte_at is not None and self.last_accepted_at is not None
            else None
        )
        return {
            "uploads": self.uploads,
            "upload_bytes": self.upload_bytes,
            "first_byte_at": self.first_byte_at,
            "last_accepted_at": self.last_accepted_at,
            "span": span,
            "last_request_at": self.last_request_at,
            "last_poll_at": self.last_poll_at,
            "polled_ids": self.polled_ids,
            "connections": self.connections,
            "videos": len(self.videos),
            "groups": len(self.groups),
            "requests": dict(self.requests),
        }


class _Date:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.value = email.utils.formatdate(now, usegmt=True).encode()
            self.second = now
        return self.value


class Connection:
    """One accepted socket: buffered reads, discarding reads, answers."""

    def __init__(self, sock: socket.socket, state: State, date: _Date, number: int = 0) -> None:
        self.sock = sock
        self.state = state
        self.date = date
        self.number = number
        self.buf = bytearray()
        self.scratch = bytearray(CHUNK)
        self.view = memoryview(self.scratch)
        self.send: Send | None = None  # the upload body being read, when --timeline

    def _arrived(self, count: int) -> None:
        """Given body bytes just read from the socket, put them on the timeline."""
        send = self.send
        if send is not None and count > 0:
            state = self.state
            with state.lock:
                send.got(count, time.time())
                state.received += count

    # -- reading --------------------------------------------------------------------------

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise Closed
        self.buf += data

    def _head(self) -> tuple[bytes, float]:
        """Return the request head (without the blank line) and when its first byte came."""
        first = time.time() if self.buf else None
        start = 0
        while True:
            end = self.buf.find(b"\r\n\r\n", max(0, start - 3))
            if end >= 0:
                break
            if len(self.buf) > MAX_HEAD:
                raise Closed
            start = len(self.buf)
            self._fill()
            if first is None:
                first = time.time()
        head = bytes(self.buf[:end])
        del self.buf[: end + 4]
        assert first is not None
        return head, first

    def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > MAX_HEAD:
                raise Closed
            self._fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    def _take(self, count: int, keep: int) -> bytes:
        """Read `count` body bytes; return the first `keep` of them, discard the rest."""
        kept = bytearray()
        if self.buf:  # what came with the head first
            n = min(count, len(self.buf))
            if keep > 0:
                kept += self.buf[: min(n, keep)]
            del self.buf[:n]
            count -= n
            self._arrived(n)
        while count > 0 and len(kept) < keep:
            got = self.sock.recv_into(self.view, min(count, CHUNK))
            if not got:
                raise Closed
            kept += self.view[: min(got, keep - len(kept))]
            count -= got
            self._arrived(got)
        while count > 0:
            got = self.sock.recv_into(self.view, min(count, CHUNK))
            if not got:
                raise Closed
            count -= got
            self._arrived(got)
        return bytes(kept)

    def _body(self, headers: dict[bytes, bytes], keep: int) -> tuple[bytes, int]:
        """Read the whole request body; return its first `keep` bytes and its length."""
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            kept = bytearray()
            total = 0
            while True:
                size_line = self._line().split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    raise Closed from None
                if size == 0:
                    while self._line():  # trailers, then the blank line
                        pass
                    return bytes(kept), total
                part = self._take(size, max(0, keep - len(kept)))
                kept += part
                total += size
                if self._line() != b"":
                    raise Closed
        length = int(headers.get(b"content-length", b"0") or 0)
        return self._take(length, keep), length

    # -- serving --------------------------------------------------------------------------

    def serve(self) -> None:
        try:
            while self._one():
                pass
        except (Closed, ConnectionError, OSError):
            pass
        finally:
            self.sock.close()

    def _one(self) -> bool:
        head, first_byte = self._head()
        request_line, *lines = head.split(b"\r\n")
        try:
            method_b, target_b, version = request_line.split(b" ", 2)
        except ValueError:
            raise Closed from None
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        method, target = method_b.decode(), target_b.decode()
        if b"100-continue" in headers.get(b"expect", b"").lower():
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        url = urlsplit(target)
        path = url.path
        upload = method == "POST" and path == "/v2/videos"
        state = self.state
        if upload and state.timeline:
            with state.lock:
                self.send = Send(len(state.sends) + 1, self.number)
                state.sends.append(self.send)
        try:
            peek, length = self._body(headers, PEEK if upload else (1 << 20))
        finally:
            send, self.send = self.send, None
        if send is not None:
            names = [m.group(2) for m in _FIELD.finditer(peek) if m.group(1) == b"video_name"]
            with state.lock:
                send.done = True
                send.video_name = names[0].decode("utf-8", "replace") if names else None
        close = headers.get(b"connection", b"").lower() == b"close" or version == b"HTTP/1.0"
        try:
            if not path.startswith("/_sink/") and not (
                headers.get(b"x-api-key") or headers.get(b"authorization")
            ):
                raise _error(401, "authentication_error", "Invalid or missing API key")
            if upload:
                status, body = 202, self._upload(peek, length, first_byte)
            else:
                status, body = 200, self._route(method, path, url.query, peek)
        except Reply as reply:
            status, body = reply.status, reply.body
        self._send(status, body, close)
        with state.lock:
            now = time.time()
            state.last_request_at = now
            route = f"{method} {_shape(path)}"
            state.requests[route] = state.requests.get(route, 0) + 1
            if upload and status == 202:
                state.last_accepted_at = now
        return not close

    def _send(self, status: int, payload: Any, close: bool) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Date: %s\r\nX-Request-ID: req_%s\r\n%s\r\n"
            % (
                status,
                REASONS.get(status, "OK").encode(),
                len(body),
                self.date.get(),
                uuid.uuid4().hex.encode(),
                b"Connection: close\r\n" if close else b"",
            )
        )
        self.sock.sendall(head + body)

    # -- the API ----------------------------------------------------------------------

    def _upload(self, peek: bytes, length: int, first_byte: float) -> dict[str, Any]:
        fields = {m.group(1).decode(): m.group(2) for m in _FIELD.finditer(peek)}
        video_id = str(uuid.uuid4())
        text = {k: v.decode("utf-8", "replace") for k, v in fields.items() if k != "file"}
        state = self.state
        group_id = text.get("group_id") or None
        with state.lock:
            if group_id is not None and group_id not in state.groups:
                raise _error(404, "not_found_error", "Video group not found")
            if state.first_byte_at is None or first_byte < state.first_byte_at:
                state.first_byte_at = first_byte
            state.uploads += 1
            state.upload_bytes += length
            state.videos[video_id] = [
                text.get("video_name") or text.get("video_url") or "",
                text.get("description"),
                group_id,
                time.time(),
            ]
        return {"video_id": video_id, "status": "uploading", "metadata": None}

    def _route(self, method: str, path: str, query: str, body: bytes) -> Any:
        state = self.state
        if path == "/_sink/stats" and method == "GET":
            with state.lock:
                return state.stats()
        if path == "/_sink/timeline" and method == "GET":
            with state.lock:
                return state.timeline_report()
        if path == "/_sink/reset" and method == "POST":
            with state.lock:
                state.reset()
            return {"status": "reset"}
        if path == "/v2/videos" and method == "GET":
            return self._list_videos(parse_qs(query).get("ids"))
        if m := _VIDEO.fullmatch(path):
            return self._one_video(method, m.group(1), body)
        if path == "/v2/video-groups" and method in ("GET", "POST"):
            return self._groups(method, body)
        if m := _GROUP.fullmatch(path):
            with state.lock:
                group = state.groups.get(m.group(1))
            if group is None:
                raise _error(404, "not_found_error", "Video group not found")
            if method == "GET":
                return group
        if (m := _GROUP_VIDEOS.fullmatch(path)) and method in ("GET", "POST"):
            return self._group_videos(method, m.group(1), body)
        raise _error(404, "not_found_error", f"no route {method} {unquote(path)}")

    def _list_videos(self, ids: list[str] | None) -> Any:
        state = self.state
        with state.lock:
            if ids is None:
                found = list(state.videos.items())
            else:
                found = [(i, state.videos[i]) for i in ids if i in state.videos]
                state.polled_ids += len(ids)
                state.last_poll_at = time.time()
            return {"results": [_video(i, v) for i, v in found]}

    def _groups(self, method: str, body: bytes) -> Any:
        state = self.state
        if method == "GET":
            with state.lock:
                return {"results": list(state.groups.values())}
        data = _json(body)
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise _error(400, "validation_error", "name is required")
        with state.lock:
            if any(g["name"] == name for g in state.groups.values()):
                raise _error(409, "conflict_error", "Already exists")
            group_id = str(uuid.uuid4())
            stamp = _iso(time.time())
            state.groups[group_id] = {
                "group_id": group_id,
                "name": name,
                "metadata": data.get("metadata") or {},
                "created_at": stamp,
                "updated_at": stamp,
            }
            return state.groups[group_id]

    def _group_videos(self, method: str, group_id: str, body: bytes) -> Any:
        state = self.state
        wanted = _json(body).get("video_ids") if method == "POST" else None
        if method == "POST" and not isinstance(wanted, list):
            raise _error(400, "validation_error", "video_ids is required")
        with state.lock:
            if group_id not in state.groups:
                raise _error(404, "not_found_error", "Video group not found")
            if wanted is None:
                mine = [_video(i, v) for i, v in state.videos.items() if v[2] == group_id]
                return {"results": mine}
            moved = [i for i in wanted if i in state.videos]
            for i in moved:
                state.videos[i][2] = group_id
        return {
            "status": "success",
            "moved_count": len(moved),
            "group_id": group_id,
            "video_ids": moved,
        }

    def _one_video(self, method: str, video_id: str, body: bytes) -> Any:
        state = self.state
        with state.lock:
            video = state.videos.get(video_id)
            if video is None:
                raise _error(404, "not_found_error", "Video not found")
            if method == "GET":
                return _video(video_id, video)
            if method == "DELETE":
                del state.videos[video_id]
                return {"status": "success", "message": "Video deleted successfully"}
            if method == "PATCH":
                data = _json(body)
                if data.get("name") is not None:
                    video[0] = data["name"]
                if data.get("description") is not None:
                    video[1] = data["description"]
                if data.get("group_id") is not None:
                    if data["group_id"] not in state.groups:
                        raise _error(404, "not_found_error", "Video group not found")
                    video[2] = data["group_id"]
                return _video(video_id, video)
        raise _error(405, "validation_error", f"{method} not allowed here")


def _video(video_id: str, video: list[Any]) -> dict[str, Any]:
    name, description, group_id, _created = video
    return {
        "video_id": video_id,
        "url": None,
        "status": "uploaded",
        "metadata": {"video_name": name, "description": description},
        "features": {},
        "group_id": group_id,
        "error": None,
    }


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        raise _error(400, "validation_error", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _error(400, "validation_error", "body must be a JSON object")
    return data


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(at))


def _shape(path: str) -> str:
    return re.sub(_ID, "{id}", path)


def serve(host: str, port: int, ready: Any = None, timeline: bool = False) -> None:
    """Listen on host:port (0: a free one), print the URL line, serve until killed;
    `timeline`: record every upload body's arrival (GET /_sink/timeline)."""
    server = socket.create_server((host, port), backlog=1024)
    state = State(timeline)
    date = _Date()
    bound = server.getsockname()
    line = f"reka-sync benchmark sink on http://{bound[0]}:{bound[1]}"
    print(line, flush=True)
    if ready is not None:
        ready(bound[1], state)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with state.lock:
            state.connections += 1
            number = state.connections
        threading.Thread(
            target=Connection(conn, state, date, number).serve, daemon=True, name="sink-conn"
        ).start()


class SinkProcess:
    """The sink as a subprocess on a free port (so its CPU is not the client's);
    `timeline`: it records every upload body's arrival (`timeline()`)."""

    def __init__(self, timeline: bool = False) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.benchmarks.sink",
                "--port",
                "0",
                *(["--timeline"] if timeline else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if " on " not in line:
            self.proc.kill()
            raise RuntimeError(f"the sink did not start: {line!r}")
        self.url = line.split(" on ")[1].split()[0]
        self._http = httpx.Client(base_url=self.url, timeout=30)

    def stats(self) -> dict[str, Any]:
        return dict(self._http.get("/_sink/stats").json())

    def reset(self) -> None:
        self._http.post("/_sink/reset").raise_for_status()

    def timeline(self) -> dict[str, Any]:
        """Return GET /_sink/timeline: each upload body's bytes as they arrived (--timeline)."""
        response = self._http.get("/_sink/timeline")
        response.raise_for_status()
        return dict(response.json())

    def cpu_seconds(self) -> float:
        """User+system CPU seconds the sink has used so far (from /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self._http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="record each upload body's bytes as they arrive (GET /_sink/timeline)",
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.host, args.port, timeline=args.timeline)


if __name__ == "__main__":
    main()
