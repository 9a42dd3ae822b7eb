"""The emulator's Upload Video endpoint (``POST /v2/videos``), called by its request handler.

A file upload is multipart/form-data, streamed 1 MiB at a time into a blob while
its XXH3-128 digest is computed. A URL upload (``video_url``, no file) may also
be ``application/x-www-form-urlencoded``, as Reka's own client sends it; both
get the same validation. Every upload needs a Content-Length (411 otherwise).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from reka_sync.emulator import multipart
from reka_sync.emulator.bodies import Drop, HalfReader, Sink, SlowReader
from reka_sync.emulator.errors import StoreError
from reka_sync.emulator.store import VideoRecord

if TYPE_CHECKING:
    from reka_sync.emulator.server import Handler

FORM_LIMIT = 64 * 1024  # bytes of a url-encoded upload form (it carries no file)
MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"


def upload(handler: Handler) -> None:
    """Given the request handler of an Upload Video request, store the video and answer."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower() or (
        handler.headers.get("Content-Length") is None
    ):
        handler.close_connection = True
        raise StoreError(411, "validation_error", "Content-Length is required for uploads")
    length = int(handler.headers["Content-Length"])
    cap = handler.server.settings.max_upload_bytes
    if cap is not None and length > cap:
        handler.close_connection = True
        handler._send(413, b"413 Request Entity Too Large\n", content_type="text/plain")
        return
    form_type = _form_type(handler.headers.get("Content-Type") or "")
    if form_type == URLENCODED and length > FORM_LIMIT:
        raise StoreError(
            413,
            "validation_error",
            f"a form without a file must be at most {FORM_LIMIT} bytes",
            "video_url",
        )
    if (reset := handler.server.quota.take(handler.owner, handler.server.now())) is not None:
        handler._drain()
        wait = str(int(reset) + 1)
        handler._error(
            429,
            "rate_limit_error",
            "Daily upload quota exceeded",
            headers={"retry-after": wait},
            retry_after=float(wait),
            code_variant=True,
        )
        return
    if form_type == URLENCODED:
        _receive_form(handler, length)
    else:
        _receive_upload(handler, length)


def _body_reader(handler: Handler, length: int) -> multipart.Reader:
    """Given an upload of `length` bytes, return its body reader, slowed or cut by faults."""
    reader: multipart.Reader = handler.rfile
    if slow := handler.server.faults.draw("slow_body", True):
        reader = SlowReader(reader, slow.bytes_per_second)
    if handler.server.faults.draw("drop_mid_body", True):
        reader = HalfReader(reader, length)
    return reader


def _receive_form(handler: Handler, length: int) -> None:
    """Given a url-encoded upload of `length` bytes, store its URL video and answer.

    Raise StoreError if the form is malformed, carries a `file`, or breaks the rules
    multipart uploads follow; raise Drop if the client goes away mid-body.
    """
    reader = _body_reader(handler, length)
    raw = bytearray(length)
    view, got = memoryview(raw), 0
    while got < length:
        piece = reader.readinto(view[got:])
        if not piece:
            raise Drop  # the client went away mid-body: nothing to answer
        got += piece
    handler.body_read = True
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise StoreError(400, "validation_error", "malformed url-encoded form") from None
    fields = dict(pairs)  # a repeated field keeps its last value, as form parsers do
    if "file" in fields:
        raise StoreError(
            400,
            "validation_error",
            f"a file upload must be sent as {MULTIPART}, not {URLENCODED}",
            "file",
        )
    video_id = str(uuid.uuid4())
    handler.server.store.add_video(
        _validated_record(handler, video_id, multipart.Form(fields=fields), [])
    )
    if handler.server.faults.draw("drop_after_store", True):
        raise Drop
    _answer_upload(handler, video_id)


def _receive_upload(handler: Handler, length: int) -> None:
    """Given a multipart upload of `length` bytes, stream it in, store it and answer.

    Raise StoreError if it is malformed or breaks the rules; raise Drop if the client
    goes away mid-body.
    """
    store = handler.server.store
    boundary = _boundary(handler.headers.get("Content-Type") or "")
    video_id = str(uuid.uuid4())
    sinks: list[Sink] = []

    def open_sink(part: multipart.FilePart) -> Sink:
        sinks.append(Sink(store.blobs / f"{video_id}.{len(sinks)}"))
        return sinks[-1]

    reader = _body_reader(handler, length)
    try:
        try:
            form = multipart.parse(reader, length, boundary, open_sink)
        except multipart.BodyEnded:
            raise Drop from None  # the client went away mid-body: nothing to answer
        except multipart.MultipartError as exc:
            handler.close_connection = True
            raise StoreError(
                400, "validation_error", f"malformed multipart body: {exc}", "file"
            ) from None
        handler.body_read = True
        for sink in sinks:
            sink.close()
        record = _validated_record(handler, video_id, form, sinks)
        store.add_video(record)
        if sinks:
            sinks[0].path.rename(store.blobs / video_id)
    finally:
        for sink in sinks:
            sink.close()
            sink.path.unlink(missing_ok=True)
    if handler.server.faults.draw("drop_after_store", True):
        raise Drop
    _answer_upload(handler, video_id)


def _answer_upload(handler: Handler, video_id: str) -> None:
    """Answer a stored upload: 202, or what a fault puts in its place."""
    faults = handler.server.faults
    page = "<html><head><title>{0}</title></head><body><h1>{0}</h1><hr>nginx</body></html>"
    if faults.draw("html_after_store", True):
        body = page.format("200 OK").encode()
        handler._send(202, body, content_type="text/html")
    elif faults.draw("truncated_after_store", True):
        handler._send(202, json.dumps({"video_id": video_id, "status": "uploading"})[:20].encode())
    elif faults.draw("no_id_after_store", True):
        handler._send(202, {"status": "uploading", "metadata": None})
    elif faults.draw("gateway_after_store", True):
        handler._send(502, page.format("502 Bad Gateway").encode(), content_type="text/html")
    else:
        handler._send(202, {"video_id": video_id, "status": "uploading", "metadata": None})


def _validated_record(
    handler: Handler, video_id: str, form: multipart.Form, sinks: list[Sink]
) -> VideoRecord:
    """Given a parsed upload form, return the video to store. Raise StoreError if the
    form breaks the documented rules (exactly one of file / http(s) video_url, a
    video_name for files, an existing group of the key)."""
    fields = form.fields
    file_part = form.files.get("file")
    url = fields.get("video_url")
    if (file_part is None) == (url is None):
        raise StoreError(
            400, "validation_error", "send exactly one of `file` or `video_url`", "file"
        )
    if url is not None and not re.match(r"https?://[^/\s]+", url):
        raise StoreError(422, "validation_error", "video_url must be an http(s) URL", "video_url")
    name = fields.get("video_name") or ""
    if file_part is not None and not name.strip():
        raise StoreError(
            400, "validation_error", "video_name is required for file uploads", "video_name"
        )
    group_id = fields.get("group_id") or None
    if group_id is not None:
        handler.server.store.check_group(handler.owner, group_id)
    now = handler.server.now()
    failure = handler.server.faults.draw("processing_failure", True)
    return VideoRecord(
        video_id=video_id,
        owner=handler.owner,
        video_name=name or (url or ""),
        description=fields.get("description"),
        created_at=now,
        ready_at=now + handler.server.settings.processing_delay,
        size=file_part.size if file_part else 0,
        digest=f"xxh3-128:{sinks[0].hash.hexdigest()}" if sinks else None,
        video_url=url,
        group_id=group_id,
        failure="Video processing failed: unsupported or corrupt file (injected)"
        if failure
        else None,
    )


def _form_type(content_type: str) -> str:
    """Given an upload's Content-Type, return its form type. Raise StoreError if it is
    neither multipart/form-data nor application/x-www-form-urlencoded."""
    kind = content_type.partition(";")[0].strip().lower()
    if kind not in (MULTIPART, URLENCODED):
        raise StoreError(
            400, "validation_error", f"Content-Type must be {MULTIPART} (or {URLENCODED} for a URL)"
        )
    return kind


def _boundary(content_type: str) -> bytes:
    try:
        return multipart.boundary_of(content_type)
    except multipart.MultipartError as exc:
        raise StoreError(400, "validation_error", str(exc)) from None
