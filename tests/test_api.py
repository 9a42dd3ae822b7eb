"""Contract tests: the API client against the emulator over loopback, every endpoint and error."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reka_sync import emulator
from reka_sync.api import ApiClient, ResponseInfo, parse_error_body
from reka_sync.config import ApiConfig
from reka_sync.credentials import Secret
from reka_sync.errors import (
    AuthError,
    BadReply,
    Cancelled,
    Conflict,
    FileChanged,
    NotFound,
    NotSent,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    ValidationFailed,
)
from reka_sync.upload_body import UploadBody
from tests.conftest import API_KEY, digest_of, emulator_records, set_faults, wait_for


def make_client(url: str, key: str = API_KEY, **kwargs: Any) -> ApiClient:
    return ApiClient(ApiConfig(base_url=url, stall_timeout=10), Secret(key), **kwargs)


@pytest.fixture
def client(emu: emulator.RunningEmulator) -> ApiClient:
    return make_client(emu.url)


def video_file(tmp_path: Path, name: str = "clip.mp4", size: int = 300_000) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def upload(client: ApiClient, path: Path, **kwargs: Any) -> Any:
    return client.upload_file(path, video_name=path.name, size=path.stat().st_size, **kwargs)


def test_upload_streams_the_exact_bytes_and_the_video_becomes_uploaded(
    client: ApiClient, emu: emulator.RunningEmulator, tmp_path: Path
) -> None:
    path = video_file(tmp_path, size=3 * 1024 * 1024 + 17)
    accepted = upload(client, path, description="reka-sync:key=abc")
    expected = digest_of(path)
    assert accepted.status == "uploading" and accepted.digest == expected
    assert accepted.bytes_sent == path.stat().st_size and accepted.request_id
    [record] = emulator_records(emu.url)
    assert (record["digest"], record["size"]) == (expected, path.stat().st_size)
    assert record["description"] == "reka-sync:key=abc"
    video = wait_for(
        lambda: (v := client.get_video(accepted.video_id)).status == "uploaded" and v,
        message="uploaded status",
    )
    assert video.video_name == "clip.mp4" and video.description == "reka-sync:key=abc"


def test_upload_by_url_and_its_validation(client: ApiClient) -> None:
    video_id = client.upload_url("https://example.com/a.mp4", video_name="remote")
    assert client.get_video(video_id).video_id == video_id
    with pytest.raises(ValidationFailed) as caught:
        client.upload_url("not a url")
    assert caught.value.status == 422 and "video_url" in str(caught.value)


def test_emulator_rejects_what_the_documentation_rejects(emu: emulator.RunningEmulator) -> None:
    http = httpx.Client(base_url=emu.url, headers={"X-Api-Key": API_KEY})
    cases = [
        ({"files": {"file": ("a.mp4", b"x")}}, 400, "video_name"),
        (
            {
                "files": {"file": ("a.mp4", b"x")},
                "data": {"video_name": "a", "video_url": "https://x/y"},
            },
            400,
            "file",
        ),
        ({"files": {"video_name": (None, "a")}}, 400, "file"),
        (
            {
                "files": {"file": ("a.mp4", b"x")},
                "data": {"video_name": "a", "group_id": "00000000-0000-0000-0000-000000000000"},
            },
            404,
            "group_id",
        ),
    ]
    for kwargs, status, param in cases:
        response = http.post("/v2/videos", **kwargs)
        assert response.status_code == status, response.text
        assert response.json()["error"]["param"] == param
    assert emulator_records(emu.url) == []
    chunked = http.post(
        "/v2/videos",
        content=iter([b"--x\r\n"]),
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert chunked.status_code == 411
    anonymous = httpx.get(f"{emu.url}/v2/videos")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    bearer = httpx.get(f"{emu.url}/v2/videos", headers={"Authorization": f"Bearer {API_KEY}"})
    assert bearer.status_code == 200 and "x-request-id" in bearer.headers


def test_fixed_key_is_enforced_and_never_leaks(tmp_path: Path) -> None:
    running = emulator.start(settings=emulator.Settings(api_key="right-key"))
    try:
        wrong = make_client(running.url, key="wrong-key-123")
        with pytest.raises(AuthError) as caught:
            wrong.list_videos()
        assert caught.value.status == 401 and "wrong-key-123" not in str(caught.value)
        assert "wrong-key-123" not in repr(wrong)
        assert make_client(running.url, key="right-key").list_videos() == []
    finally:
        running.stop()


def test_get_list_update_delete_videos(client: ApiClient, tmp_path: Path) -> None:
    first = upload(client, video_file(tmp_path, "a.mp4")).video_id
    second = upload(client, video_file(tmp_path, "b.mp4")).video_id
    assert {v.video_id for v in client.list_videos()} == {first, second}
    assert [v.video_id for v in client.list_videos(ids=[second])] == [second]
    wait_for(lambda: client.get_video(first).status == "uploaded", message="stored")
    updated = client.update_video(first, title="Title", description="d2")
    assert updated.raw["metadata"]["title"] == "Title" and updated.description == "d2"
    client.delete_video(first)
    with pytest.raises(NotFound) as caught:
        client.get_video(first)
    assert caught.value.request_id and caught.value.param == "video_id"
    with pytest.raises(NotFound):
        client.delete_video(first)


def test_groups_lifecycle_conflict_and_moves(client: ApiClient, tmp_path: Path) -> None:
    group = client.create_group("Camera front", {"source": "reka-sync"})
    assert client.get_group(group.group_id) == group
    with pytest.raises(Conflict):
        client.create_group("Camera front")
    renamed = client.update_group(group.group_id, name="Front door")
    assert renamed.name == "Front door" and [g.name for g in client.list_groups()] == ["Front door"]
    video = upload(client, video_file(tmp_path), group_id=group.group_id).video_id
    assert [v.video_id for v in client.group_videos(group.group_id)] == [video]
    other = client.create_group("Other")
    moved = client.move_videos(other.group_id, [video, "00000000-0000-0000-0000-000000000001"])
    assert (moved.moved_count, moved.video_ids) == (1, [video])
    assert client.get_video(video).group_id == other.group_id
    client.delete_group(other.group_id)
    assert client.get_video(video).group_id is None
    with pytest.raises(NotFound):
        client.get_group(other.group_id)


def test_group_cap_is_a_validation_error_naming_the_limit(client: ApiClient) -> None:
    for index in range(10):
        client.create_group(f"G{index}")
    with pytest.raises(ValidationFailed, match="up to 10 video groups"):
        client.create_group("G10")


def test_features_catalog_plan_and_trigger(client: ApiClient, tmp_path: Path) -> None:
    video = upload(client, video_file(tmp_path)).video_id
    catalog = client.feature_catalog()
    assert set(catalog) >= {"transcript", "captions"} and catalog["captions"] == ("transcript",)
    wait_for(lambda: client.get_video(video).status == "uploaded", message="stored")
    plan = client.plan_features(video, ["embeddings"])
    assert plan.required == ("transcript", "captions", "embeddings")
    assert plan.actionable == {"transcript"} and set(plan.statuses.values()) == {"none"}
    with pytest.raises(ValidationFailed, match="needs transcript"):
        client.trigger_feature(video, "captions")
    assert client.trigger_feature(video, "transcript") == "pending"  # a new run starts pending


def test_rate_limit_headers_reach_the_caller_and_quota_429(tmp_path: Path) -> None:
    running = emulator.start(settings=emulator.Settings(upload_quota=2))
    seen: list[ResponseInfo] = []
    try:
        client = make_client(running.url, on_response=seen.append)
        upload(client, video_file(tmp_path, "a.mp4"))
        assert (seen[-1].limit, seen[-1].remaining) == (2, 1) and seen[-1].reset_after
        upload(client, video_file(tmp_path, "b.mp4"))
        with pytest.raises(RateLimited) as caught:
            upload(client, video_file(tmp_path, "c.mp4"))
        error = caught.value
        assert error.retry_after and error.retry_after > 80_000
        assert error.reset_after and error.reset_after > 80_000
        assert error.error_type == "rate_limit_exceeded"
        assert len(emulator_records(running.url)) == 2
    finally:
        running.stop()


def test_injected_429_and_500(
    client: ApiClient, emu: emulator.RunningEmulator, tmp_path: Path
) -> None:
    set_faults(emu.url, [{"kind": "rate_limit", "count": 1, "seconds": 7}])
    with pytest.raises(RateLimited) as limited:
        client.list_groups()
    assert limited.value.retry_after == 7.0 and limited.value.error_type == "rate_limit_error"
    set_faults(emu.url, [{"kind": "server_error", "scope": "upload", "count": 1}])
    with pytest.raises(ServerError) as failed:
        upload(client, video_file(tmp_path))
    assert failed.value.status == 500
    assert emulator_records(emu.url) == []
    assert upload(client, video_file(tmp_path)).video_id


def test_connection_dropped_mid_body_is_not_sent_and_stores_nothing(
    client: ApiClient, emu: emulator.RunningEmulator, tmp_path: Path
) -> None:
    set_faults(emu.url, [{"kind": "drop_mid_body", "count": 1}])
    big = tmp_path / "big.mp4"
    with big.open("wb") as handle:
        handle.truncate(256 * 1024 * 1024)  # far more than socket buffers can hold
    with pytest.raises(NotSent):
        upload(client, big)
    assert emulator_records(emu.url) == []


def test_body_stored_then_connection_dropped_is_outcome_unknown(
    client: ApiClient, emu: emulator.RunningEmulator, tmp_path: Path
) -> None:
    set_faults(emu.url, [{"kind": "drop_after_store", "count": 1}])
    path = video_file(tmp_path)
    with pytest.raises(OutcomeUnknown):
        upload(client, path, description="marker-1")
    [record] = emulator_records(emu.url)
    assert record["description"] == "marker-1"
    assert record["digest"] == digest_of(path)


def test_processing_failure_is_reported_on_the_video(
    client: ApiClient, emu: emulator.RunningEmulator, tmp_path: Path
) -> None:
    set_faults(emu.url, [{"kind": "processing_failure", "count": 1}])
    video_id = upload(client, video_file(tmp_path)).video_id
    video = wait_for(
        lambda: (v := client.get_video(video_id)).status != "uploading" and v,
        message="final status",
    )
    assert video.status == "failed" and "processing failed" in (video.error or "")


def test_oversized_upload_gets_a_clear_permanent_error(tmp_path: Path) -> None:
    running = emulator.start(settings=emulator.Settings(max_upload_bytes=1000))
    try:
        with pytest.raises(ValidationFailed, match="too large") as caught:
            upload(make_client(running.url), video_file(tmp_path, size=5000))
        assert caught.value.status == 413
    finally:
        running.stop()


def test_unreachable_server_is_not_sent(tmp_path: Path) -> None:
    client = make_client("http://127.0.0.1:9")
    with pytest.raises(NotSent, match="cannot connect"):
        upload(client, video_file(tmp_path))


def test_cancel_from_another_thread_stops_within_a_second(
    client: ApiClient, emu: emulator.RunningEmulator, tmp_path: Path
) -> None:
    big = tmp_path / "big.mp4"
    with big.open("wb") as handle:
        handle.truncate(8 * 1024**3)  # sparse: reads fast, uploads for a long while
    cancel = threading.Event()
    started = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            upload(client, big, cancel=cancel, on_progress=lambda n: started.set())
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    wait_for(lambda: started.is_set() or not worker.is_alive(), message="upload progress")
    assert started.is_set(), outcome
    cancelled_at = time.monotonic()
    cancel.set()
    worker.join(timeout=5)
    elapsed = time.monotonic() - cancelled_at
    assert not worker.is_alive() and elapsed < 1.0, f"took {elapsed:.2f}s"
    assert isinstance(outcome[0], Cancelled) and not outcome[0].body_complete


def test_a_file_that_shrinks_during_upload_is_refused(tmp_path: Path) -> None:
    path = video_file(tmp_path, size=3 * 1024 * 1024)
    body = UploadBody(
        path, 4 * 1024 * 1024, {"video_name": "x"}, filename="x.mp4", content_type="video/mp4"
    )
    with body, pytest.raises(FileChanged, match="shrank"):
        for _ in body.chunks():
            pass
    assert body.digest is None


def test_error_bodies_are_parsed_defensively() -> None:
    assert parse_error_body(
        b'{"error": {"type": "not_found_error", "message": "Video not found", "param": "video_id"}}'
    ) == ("Video not found", "not_found_error", "video_id")
    assert parse_error_body(b'{"error": {"code": "rate_limit_exceeded", "message": "slow"}}') == (
        "slow",
        "rate_limit_exceeded",
        None,
    )
    assert (
        parse_error_body(b'{"detail": [{"loc": ["body", "name"], "msg": "field required"}]}')[0]
        == "body.name: field required"
    )
    assert parse_error_body(b'{"detail": "Not Found"}')[0] == "Not Found"
    assert parse_error_body(b"<html>502 Bad Gateway</html>")[0] == "an HTML page: 502 Bad Gateway"
    page = b"<!DOCTYPE html>\n<html><head><title>503 Service\n Unavailable</title></head>" + (
        b"<body>" + b"<p>nginx</p>" * 500 + b"</body></html>"
    )
    assert parse_error_body(page)[0] == "an HTML page: 503 Service Unavailable"
    assert len(parse_error_body(b"x" * 5000)[0]) < 210  # a raw body is cut to one short line
    assert parse_error_body(b"")[0] == "(empty body)"


def test_state_survives_an_emulator_restart(tmp_path: Path) -> None:
    data = tmp_path / "emu"
    first = emulator.start(data_dir=data)
    path = video_file(tmp_path)
    try:
        client = make_client(first.url)
        group = client.create_group("Kept")
        video_id = upload(client, path, group_id=group.group_id).video_id
    finally:
        first.stop()
    second = emulator.start(data_dir=data)
    try:
        client = make_client(second.url)
        assert client.get_video(video_id).group_id == group.group_id
        [record] = emulator_records(second.url)
        assert record["digest"] == digest_of(path)
        assert (data / "blobs" / video_id).stat().st_size == path.stat().st_size
    finally:
        second.stop()


def test_concurrent_uploads(
    client: ApiClient, emu: emulator.RunningEmulator, tmp_path: Path
) -> None:
    paths = [video_file(tmp_path, f"c{i}.mp4", size=2 * 1024 * 1024) for i in range(6)]
    threads = [threading.Thread(target=upload, args=(client, p)) for p in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    digests = {r["digest"] for r in emulator_records(emu.url)}
    assert digests == {digest_of(p) for p in paths}


def test_the_request_log_can_be_read_again_and_again(emu: emulator.RunningEmulator) -> None:
    for _ in range(3):
        log = httpx.get(f"{emu.url}/_emulator/requests", timeout=5).json()["results"]
    assert [entry["path"] for entry in log] == ["/_emulator/requests"] * 2
    assert httpx.get(f"{emu.url}/v2/videos", headers={"X-Api-Key": API_KEY}, timeout=5).is_success


@pytest.mark.parametrize(
    "kind",
    ["html_after_store", "truncated_after_store", "no_id_after_store", "gateway_after_store"],
)
def test_an_unreadable_answer_after_the_whole_body_is_outcome_unknown(
    client: ApiClient, emu: emulator.RunningEmulator, tmp_path: Path, kind: str
) -> None:
    set_faults(emu.url, [{"kind": kind, "count": 1}])
    path = video_file(tmp_path)
    with pytest.raises(OutcomeUnknown, match=r"may have (been )?stored") as caught:
        upload(client, path, description="[reka-sync:k1]")
    assert "<" not in str(caught.value), "an HTML page pasted into the error"
    [record] = emulator_records(emu.url)  # stored all the same: only reconcile can tell
    assert record["digest"] == digest_of(path)


def test_a_garbled_reply_to_a_read_is_a_bad_reply_naming_the_endpoint(
    client: ApiClient, emu: emulator.RunningEmulator
) -> None:
    set_faults(emu.url, [{"kind": "garbled_reply", "count": 2}])
    with pytest.raises(BadReply, match=r"GET /v2/videos: HTTP 200 with a reply that is not JSON"):
        client.list_videos()
    with pytest.raises(BadReply, match="GET /v2/video-groups"):
        client.list_groups()
    assert client.list_videos() == []


def test_a_file_swapped_after_it_settled_is_never_sent(
    client: ApiClient, emu: emulator.RunningEmulator, tmp_path: Path
) -> None:
    from reka_sync.scanner import stat_file

    path = video_file(tmp_path, size=50_000)
    settled = stat_file(path)
    assert settled is not None
    other = video_file(tmp_path, "other.mp4", size=50_000)
    os.replace(other, path)  # same name and size, another file
    with pytest.raises(FileChanged, match="not the file that settled"):
        upload(client, path, expected=settled)
    secret = video_file(tmp_path, "secret.mp4", size=50_000)
    path.unlink()
    path.symlink_to(secret)  # swapped for a link between the check and the open
    with pytest.raises(FileChanged, match="symbolic link"):
        upload(client, path, expected=settled)
    assert emulator_records(emu.url) == []


# -- TLS: the CA bundle of api.ca_bundle is the one trusted ---------------------------------


@pytest.fixture
def tls_emulator(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The emulator behind TLS, with a certificate of its own for localhost; yield its URL
    and the certificate (the CA bundle that trusts it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a certificate with")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    server, cleanup = emulator.build()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    running = emulator.RunningEmulator(server, thread, cleanup)
    try:
        yield f"https://localhost:{server.server_address[1]}", cert
    finally:
        running.stop()


def test_an_upload_over_tls_verifies_the_server_and_sends_the_exact_bytes(
    tls_emulator: tuple[str, Path], tmp_path: Path
) -> None:
    url, cert = tls_emulator
    client = ApiClient(ApiConfig(base_url=url, ca_bundle=cert, stall_timeout=10), Secret(API_KEY))
    paths = [video_file(tmp_path, size=2 * 1024 * 1024 + 3), video_file(tmp_path, "b.mp4")]
    for path in paths:
        accepted = upload(client, path, description="reka-sync:key=k {digest}")
        assert accepted.digest == digest_of(path) and accepted.bytes_sent == path.stat().st_size
        assert client.get_video(accepted.video_id).video_id == accepted.video_id
    client.close()
    trusting = ssl.create_default_context(cafile=str(cert))
    stored = httpx.get(f"{url}/_emulator/videos", verify=trusting).json()["results"]
    assert sorted((r["digest"], r["size"]) for r in stored) == sorted(
        (digest_of(p), p.stat().st_size) for p in paths
    )
    untrusting = make_client(url)  # the usual CA store: the test certificate is not in it
    with pytest.raises(NotSent, match="cannot connect") as caught:
        upload(untrusting, video_file(tmp_path, "c.mp4"))
    assert caught.value.unreachable and "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
