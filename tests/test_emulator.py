"""Contract tests of the emulator itself over loopback: feature runs, plans, faults on the
feature endpoints, group metadata, URL uploads, and the requests Reka's own client sends.

Most tests step an explicit clock (`Settings.clock`) instead of waiting; the reka-mcp
test runs in real time with small delays and polls with a deadline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reka_sync import emulator
from tests.conftest import API_KEY, emulator_records, emulator_requests, set_faults, wait_for

DELAY = 1.0  # seconds of processing and of a feature run, on the explicit clock
MISSING = "00000000-0000-0000-0000-00000000beef"
OLD_GROUP = "00000000-0000-0000-0000-0000000000aa"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emu_at(clock: Clock, tmp_path: Path) -> Iterator[emulator.RunningEmulator]:
    settings = emulator.Settings(processing_delay=DELAY, feature_delay=DELAY, clock=clock)
    running = emulator.start(settings=settings)
    yield running
    running.stop()


@pytest.fixture
def api(emu_at: emulator.RunningEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu_at.url, headers={"X-Api-Key": API_KEY}, timeout=10) as client:
        yield client


def url_upload(api: httpx.Client, **fields: str) -> str:
    response = api.post("/v2/videos", data={"video_url": "https://example.com/a.mp4", **fields})
    assert response.status_code == 202, response.text
    return str(response.json()["video_id"])


def uploaded(api: httpx.Client, clock: Clock) -> str:
    """Upload a video by URL and step the clock until it is `uploaded`; return its id."""
    video_id = url_upload(api)
    clock.advance(DELAY)
    assert api.get(f"/v2/videos/{video_id}").json()["status"] == "uploaded"
    return video_id


def trigger(api: httpx.Client, video_id: str, feature: str, **body: Any) -> httpx.Response:
    return api.post(f"/v2/videos/{video_id}/features/{feature}", json={"force": False, **body})


def plan(api: httpx.Client, video_id: str, *desired: str) -> dict[str, Any]:
    response = api.post(f"/v2/videos/{video_id}/features/plan", json={"desired": list(desired)})
    assert response.status_code == 200, response.text
    return dict(response.json())


def features_of(api: httpx.Client, video_id: str) -> dict[str, str]:
    return dict(api.get(f"/v2/videos/{video_id}").json()["features"])


def runs_of(url: str, video_id: str) -> dict[str, int]:
    [record] = [r for r in emulator_records(url) if r["video_id"] == video_id]
    return dict(record["feature_runs"])


def triggers_logged(url: str) -> list[dict[str, Any]]:
    return [e for e in emulator_requests(url) if "was" in e]


def assert_error(response: httpx.Response, status: int, param: str | None, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "validation_error" and error.get("param") == param, error
    assert all(w in error["message"] for w in words), error


def test_a_feature_run_goes_pending_then_processing_then_ready(
    api: httpx.Client, emu_at: emulator.RunningEmulator, clock: Clock
) -> None:
    video = uploaded(api, clock)
    started = trigger(api, video, "transcript")
    assert started.status_code == 202
    assert started.json() == {"video_id": video, "feature": "transcript", "status": "pending"}
    seen = []
    for step in (0.05, 0.1, 0.8, 0.1):  # at 0, 0.05 (pending: the first tenth), 0.15, 0.95, 1.05
        planned = plan(api, video, "transcript")["statuses"]["transcript"]
        seen.append((features_of(api, video)["transcript"], planned))
        clock.advance(step)
    seen.append((features_of(api, video)["transcript"], "ready"))
    expected = ["pending", "pending", "processing", "processing", "ready"]
    assert seen == [(status, status) for status in expected]
    set_faults(emu_at.url, [], feature_delay=10.0)  # a long run: "pending" is capped at 0.5 s
    assert trigger(api, video, "objects").status_code == 202
    clock.advance(0.45)
    assert features_of(api, video)["objects"] == "pending"
    clock.advance(0.15)
    assert features_of(api, video)["objects"] == "processing"
    clock.advance(9.5)
    assert features_of(api, video) == {"transcript": "ready", "objects": "ready"}


def test_a_failed_run_blocks_what_depends_on_it_until_forced_again(
    api: httpx.Client, emu_at: emulator.RunningEmulator, clock: Clock
) -> None:
    video = uploaded(api, clock)
    set_faults(emu_at.url, [{"kind": "feature_failure", "rate": 1.0}])
    assert trigger(api, video, "transcript").status_code == 202
    clock.advance(DELAY / 2)
    assert features_of(api, video) == {"transcript": "processing"}  # fails only at its end
    clock.advance(DELAY / 2)
    assert features_of(api, video) == {"transcript": "failed"}  # blocked ones are not listed
    assert plan(api, video, "embeddings", "objects") == {
        "video_id": video,
        "all_required": ["transcript", "captions", "embeddings", "objects"],
        "statuses": {
            "transcript": "failed",
            "captions": "blocked",
            "embeddings": "blocked",
            "objects": "blocked",
        },
        "actionable": [],
        "blocked": ["captions", "embeddings", "objects"],
        "done": False,
    }
    again = trigger(api, video, "transcript")  # a failure is re-run only with force
    assert (again.status_code, again.json()["status"]) == (200, "failed")
    assert_error(trigger(api, video, "captions"), 400, "feature", "transcript is failed")
    assert runs_of(emu_at.url, video) == {"transcript": 1}
    set_faults(emu_at.url, [])
    forced = trigger(api, video, "transcript", force=True)
    assert (forced.status_code, forced.json()["status"]) == (202, "pending")
    clock.advance(DELAY)
    assert runs_of(emu_at.url, video) == {"transcript": 2}
    after = plan(api, video, "embeddings", "objects")
    assert after["statuses"]["transcript"] == "ready" and after["blocked"] == []
    assert after["actionable"] == ["captions", "objects"]
    set_faults(emu_at.url, [{"kind": "feature_failure", "count": 1}])  # captions fails once
    assert trigger(api, video, "captions").status_code == 202
    clock.advance(DELAY)
    blocked = plan(api, video, "embeddings", "objects")
    assert blocked["statuses"] == {
        "transcript": "ready",
        "captions": "failed",
        "embeddings": "blocked",
        "objects": "none",
    }
    assert (blocked["actionable"], blocked["blocked"]) == (["objects"], ["embeddings"])


def test_a_trigger_before_its_dependencies_are_ready_names_the_missing_one(
    api: httpx.Client, emu_at: emulator.RunningEmulator, clock: Clock
) -> None:
    early = url_upload(api)  # still uploading
    assert_error(trigger(api, early, "transcript"), 400, "video_id", "not uploaded")
    assert plan(api, early, "transcript")["actionable"] == []  # nothing can be triggered yet
    missing = api.post(f"/v2/videos/{MISSING}/features/transcript", json={"force": False})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    clock.advance(DELAY)
    video = early
    assert_error(trigger(api, video, "captions"), 400, "feature", "needs transcript")
    assert_error(trigger(api, video, "embeddings"), 400, "feature", "needs transcript, captions")
    assert_error(trigger(api, video, "captions", force=True), 400, "feature", "transcript is none")
    trigger(api, video, "transcript")
    clock.advance(DELAY / 2)
    assert_error(trigger(api, video, "objects"), 400, "feature", "transcript is processing")
    clock.advance(DELAY / 2)
    assert trigger(api, video, "captions").status_code == 202
    response = trigger(api, video, "embeddings")
    assert_error(response, 400, "feature", "needs captions", "captions is pending")
    assert "transcript" not in response.json()["error"]["message"]
    assert runs_of(emu_at.url, video) == {"transcript": 1, "captions": 1}
    for entry in triggers_logged(emu_at.url):  # what a client's own log check would read
        if entry["started"]:
            assert all(s == "ready" for s in entry["depends_on"].values()), entry
            assert entry["was"] == "none", entry
        assert entry["status"] == (202 if entry["started"] else 400), entry


def test_a_repeated_trigger_restarts_nothing_unless_forced(
    api: httpx.Client, emu_at: emulator.RunningEmulator, clock: Clock
) -> None:
    video = uploaded(api, clock)
    answers = []
    for step in (0.0, 0.05, 0.5, 0.5):  # sent at: start, pending, processing, ready
        clock.advance(step)
        response = trigger(api, video, "transcript")
        answers.append((response.status_code, response.json()["status"]))
    assert answers == [(202, "pending"), (200, "pending"), (200, "processing"), (200, "ready")]
    assert runs_of(emu_at.url, video) == {"transcript": 1}
    forced = trigger(api, video, "transcript", force=True)
    assert (forced.status_code, forced.json()["status"]) == (202, "pending")
    assert runs_of(emu_at.url, video) == {"transcript": 2}
    log = [(e["feature"], e["was"], e["force"], e["started"]) for e in triggers_logged(emu_at.url)]
    assert log == [
        ("transcript", "none", False, True),
        ("transcript", "pending", False, False),
        ("transcript", "processing", False, False),
        ("transcript", "ready", False, False),
        ("transcript", "ready", True, True),
    ]


def test_trigger_bodies_are_validated_and_the_chunking_config_is_kept(
    api: httpx.Client, emu_at: emulator.RunningEmulator, clock: Clock
) -> None:
    video = uploaded(api, clock)
    path = f"/v2/videos/{video}/features/transcript"
    assert_error(api.post(path), 400, None, "JSON object")
    assert_error(api.post(path, json=[True]), 400, None, "JSON object")
    assert_error(api.post(path, content=b"{nope"), 400, None, "not valid JSON")
    assert_error(api.post(path, data={"force": "false"}), 400, None, "application/json")
    assert_error(api.post(path, json={"force": "yes"}), 422, "force", "boolean")
    assert_error(api.post(path, json={"force": None}), 422, "force")
    assert_error(api.post(path, json={"chunking_config": True}), 422, "chunking_config")
    bad_flag = {"chunking_config": {"use_scene_detection": "no"}}
    assert_error(api.post(path, json=bad_flag), 422, "chunking_config", "use_scene_detection")
    assert runs_of(emu_at.url, video) == {}
    chunking = {"use_scene_detection": True}
    assert trigger(api, video, "transcript", chunking_config=chunking).status_code == 202
    [record] = emulator_records(emu_at.url)
    assert (record["feature_runs"], record["chunking_config"]) == ({"transcript": 1}, chunking)


def test_plan_answers_every_documented_field_and_rejects_unknown_names(
    api: httpx.Client, clock: Clock
) -> None:
    video = uploaded(api, clock)
    assert plan(api, video, "embeddings") == {
        "video_id": video,
        "all_required": ["transcript", "captions", "embeddings"],
        "statuses": {"transcript": "none", "captions": "none", "embeddings": "none"},
        "actionable": ["transcript"],
        "blocked": [],
        "done": False,
    }
    assert plan(api, video, "objects", "captions")["all_required"] == [
        "transcript",
        "objects",
        "captions",
    ]
    path = f"/v2/videos/{video}/features/plan"
    for body in ({"desired": "transcript"}, {"desired": ["transcript", "bogus"]}, {}):
        assert_error(api.post(path, json=body), 400, "desired", "transcript")
    missing = api.post(f"/v2/videos/{MISSING}/features/plan", json={"desired": []})
    assert missing.status_code == 404
    trigger(api, video, "transcript")
    clock.advance(DELAY)
    trigger(api, video, "captions")
    midway = plan(api, video, "captions")
    assert (midway["statuses"], midway["actionable"]) == (
        {"transcript": "ready", "captions": "pending"},
        [],
    )
    clock.advance(DELAY)
    assert plan(api, video, "captions")["done"] is True
    assert plan(api, video, "embeddings")["actionable"] == ["embeddings"]


def test_the_catalog_lists_the_four_features_and_their_dependencies(api: httpx.Client) -> None:
    catalog = api.get("/v2/features").json()["features"]
    assert {f["name"]: f["depends_on"] for f in catalog} == {
        "transcript": [],
        "captions": ["transcript"],
        "embeddings": ["transcript", "captions"],
        "objects": ["transcript"],
    }
    for feature in catalog:
        assert set(feature) == {"name", "description", "depends_on", "produces"}
        assert feature["description"] and feature["name"] in feature["produces"]


def test_the_features_map_shows_triggered_features_on_list_get_and_group_listing(
    api: httpx.Client, clock: Clock
) -> None:
    group = api.post("/v2/video-groups", json={"name": "G"}).json()["group_id"]
    first, second = url_upload(api, group_id=group), url_upload(api)
    clock.advance(DELAY)
    trigger(api, first, "transcript")
    listed = api.get("/v2/videos", params={"ids": [first, second]}).json()["results"]
    assert {v["video_id"]: v["features"] for v in listed} == {
        first: {"transcript": "pending"},
        second: {},
    }
    only = api.get("/v2/videos", params={"ids": [second]}).json()["results"]
    assert [v["video_id"] for v in only] == [second]
    clock.advance(DELAY)
    assert features_of(api, first) == {"transcript": "ready"}
    [in_group] = api.get(f"/v2/video-groups/{group}/videos").json()["results"]
    assert (in_group["video_id"], in_group["features"]) == (first, {"transcript": "ready"})


@pytest.mark.parametrize(
    ("kind", "status"), [("server_error", 500), ("rate_limit", 429), ("garbled_reply", 200)]
)
def test_faults_of_scope_all_hit_the_feature_endpoints(
    api: httpx.Client, emu_at: emulator.RunningEmulator, clock: Clock, kind: str, status: int
) -> None:
    video = uploaded(api, clock)
    set_faults(emu_at.url, [{"kind": kind, "count": 3}])
    answers = [
        api.get("/v2/features"),
        api.post(f"/v2/videos/{video}/features/plan", json={"desired": ["transcript"]}),
        trigger(api, video, "transcript"),
    ]
    assert [a.status_code for a in answers] == [status] * 3
    if kind == "garbled_reply":
        for answer in answers:
            with pytest.raises(ValueError):
                answer.json()
    assert runs_of(emu_at.url, video) == {}  # the faulted trigger started nothing
    assert trigger(api, video, "transcript").status_code == 202


def test_a_garbled_trigger_answer_comes_after_the_trigger_took_effect(
    api: httpx.Client, emu_at: emulator.RunningEmulator, clock: Clock
) -> None:
    video = uploaded(api, clock)
    set_faults(emu_at.url, [{"kind": "garbled_after_trigger", "count": 1}])
    answer = trigger(api, video, "transcript")
    assert answer.status_code == 200
    with pytest.raises(ValueError):
        answer.json()
    assert runs_of(emu_at.url, video) == {"transcript": 1}  # the run started all the same
    assert features_of(api, video) == {"transcript": "pending"}


def test_latency_hits_the_feature_endpoints_and_the_feature_delay_is_settable(
    api: httpx.Client, emu_at: emulator.RunningEmulator, clock: Clock
) -> None:
    video = uploaded(api, clock)
    set_faults(emu_at.url, [{"kind": "latency", "seconds": 0.01, "count": 3}], feature_delay=4)
    api.get("/v2/features")
    plan(api, video, "transcript")
    trigger(api, video, "transcript")
    faults = httpx.get(f"{emu_at.url}/_emulator/faults").json()
    assert faults["faults"][0]["fired"] == 3 and faults["feature_delay"] == 4.0
    clock.advance(3.8)
    assert features_of(api, video) == {"transcript": "processing"}
    clock.advance(0.3)
    assert features_of(api, video) == {"transcript": "ready"}
    for bad in ({"feature_delay": -1}, {"feature_delay": "2"}, {"processing_delay": True}):
        response = httpx.post(f"{emu_at.url}/_emulator/faults", json={"faults": [], **bad})
        assert response.status_code == 400, response.text
    scoped = {"faults": [{"kind": "feature_failure", "scope": "upload"}]}
    assert httpx.post(f"{emu_at.url}/_emulator/faults", json=scoped).status_code == 400


def test_group_metadata_is_an_object_never_null(api: httpx.Client) -> None:
    bare = api.post("/v2/video-groups", json={"name": "Bare"}).json()
    nulled = api.post("/v2/video-groups", json={"name": "Null", "metadata": None}).json()
    assert bare["metadata"] == {} and nulled["metadata"] == {}
    assert [g["metadata"] for g in api.get("/v2/video-groups").json()["results"]] == [{}, {}]
    assert api.get(f"/v2/video-groups/{bare['group_id']}").json()["metadata"] == {}
    renamed = api.patch(f"/v2/video-groups/{bare['group_id']}", json={"name": "B2"}).json()
    assert renamed["metadata"] == {}
    tagged = api.patch(f"/v2/video-groups/{bare['group_id']}", json={"metadata": {"k": "v"}})
    assert tagged.json()["metadata"] == {"k": "v"}
    kept = api.patch(f"/v2/video-groups/{bare['group_id']}", json={"metadata": None}).json()
    assert kept["metadata"] == {"k": "v"}  # null leaves it unchanged


def test_a_url_upload_may_be_url_encoded_and_gets_the_same_validation(
    api: httpx.Client, emu_at: emulator.RunningEmulator
) -> None:
    group = api.post("/v2/video-groups", json={"name": "G"}).json()["group_id"]
    fields = {"video_name": "n", "description": "d", "group_id": group}
    accepted = api.post("/v2/videos", data={"video_url": "https://example.com/v.mp4", **fields})
    assert accepted.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert accepted.status_code == 202 and accepted.json()["status"] == "uploading"
    cases = [
        ({"video_url": "ftp://example.com/v.mp4"}, 422, "video_url"),
        ({"video_url": ""}, 422, "video_url"),
        ({"video_name": "no url"}, 400, "file"),
        ({"video_url": "https://example.com/v.mp4", "file": "bytes"}, 400, "file"),
        ({"video_url": "https://example.com/v.mp4", "group_id": MISSING}, 404, "group_id"),
    ]
    for data, status, param in cases:
        response = api.post("/v2/videos", data=data)
        assert response.status_code == status, (data, response.text)
        assert response.json()["error"]["param"] == param, data
    too_big = api.post("/v2/videos", data={"video_url": "https://x.io/" + "a" * 70_000})
    assert_error(too_big, 413, "video_url", "65536")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    chunked = api.post(
        "/v2/videos", content=iter([b"video_url=https%3A%2F%2Fx.io%2Fv"]), headers=form
    )
    assert chunked.status_code == 411
    as_text = api.post("/v2/videos", content=b"video_url=x", headers={"Content-Type": "text/plain"})
    assert as_text.status_code == 400
    [record] = emulator_records(emu_at.url)
    assert (record["video_name"], record["description"], record["group_id"]) == ("n", "d", group)
    assert record["size"] == 0 and record["digest"] is None


def test_feature_runs_survive_a_restart_and_older_state_still_loads(
    tmp_path: Path, clock: Clock
) -> None:
    data = tmp_path / "emu"
    settings = emulator.Settings(processing_delay=DELAY, feature_delay=DELAY, clock=clock)
    first = emulator.start(data_dir=data, settings=settings)
    try:
        with httpx.Client(base_url=first.url, headers={"X-Api-Key": API_KEY}) as api:
            video = uploaded(api, clock)
            trigger(api, video, "transcript", chunking_config={"use_scene_detection": False})
    finally:
        first.stop()
    state = data / "state.jsonl"
    entries = [json.loads(line) for line in state.read_text().splitlines()]
    latest = [e["data"] for e in entries if e["op"] == "video"][-1]
    legacy = {**latest, "video_id": MISSING, "features": {"transcript": clock.now + DELAY}}
    del legacy["chunking_config"]  # an older emulator: a bare ready-at time per feature
    group = {"group_id": OLD_GROUP, "owner": latest["owner"], "name": "Old", "metadata": None}
    group |= {"created_at": clock.now, "updated_at": clock.now}
    with state.open("a") as log:
        log.write(json.dumps({"op": "video", "data": legacy}) + "\n")
        log.write(json.dumps({"op": "group", "data": group}) + "\n")
    second = emulator.start(data_dir=data, settings=settings)
    try:
        clock.advance(DELAY)
        with httpx.Client(base_url=second.url, headers={"X-Api-Key": API_KEY}) as api:
            assert features_of(api, video) == {"transcript": "ready"}
            assert features_of(api, MISSING) == {"transcript": "ready"}
            assert api.get(f"/v2/video-groups/{OLD_GROUP}").json()["metadata"] == {}
        [kept] = [r for r in emulator_records(second.url) if r["video_id"] == video]
        assert kept["feature_runs"] == {"transcript": 1}
        assert kept["chunking_config"] == {"use_scene_detection": False}
    finally:
        second.stop()


# -- Reka's own client (reka-ai/reka-mcp, src/reka_mcp/client.py and models.py) ----------

Check = Callable[[Any], bool]
Model = dict[str, tuple[bool, Check]]  # field -> (required, accepts its value)


def _opt(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _list(v: Any) -> bool:
    return isinstance(v, list)


def _strs(v: Any) -> bool:
    return isinstance(v, list) and all(map(_str, v))


def _str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(_str(k) and _str(x) for k, x in v.items())


def _model(model: Model) -> Check:
    def accepts(data: Any) -> bool:
        if not isinstance(data, dict):
            return False
        return all(
            (name in data or not required) and (name not in data or check(data[name]))
            for name, (required, check) in model.items()
        )

    return accepts


METADATA: Model = {
    **{k: (False, _opt(_int)) for k in ("width", "height")},
    **{k: (False, _opt(_num)) for k in ("avg_fps", "duration")},
    **{
        k: (False, _opt(_str))
        for k in ("video_name", "title", "thumbnail", "description", "source")
    },
}
VIDEO: Model = {
    "video_id": (True, _str),
    "url": (False, _opt(_str)),
    "status": (False, _opt(_str)),
    "metadata": (False, _opt(_model(METADATA))),
    "features": (False, _opt(_str_map)),
    "group_id": (False, _opt(_str)),
    "error": (False, _opt(_str)),
}
UPLOAD: Model = {
    "video_id": (True, _str),
    "status": (True, _str),
    "metadata": (False, _opt(_model(METADATA))),
}
DELETED: Model = {"status": (True, _str), "message": (False, _opt(_str))}
GROUP: Model = {
    "group_id": (True, _str),
    "name": (True, _str),
    "metadata": (False, _str_map),  # dict[str, str] with a default: null is rejected
    "created_at": (False, _opt(_str)),
    "updated_at": (False, _opt(_str)),
}
TRIGGERED: Model = {"video_id": (True, _str), "feature": (True, _str), "status": (True, _str)}
PLAN: Model = {
    "done": (True, lambda v: isinstance(v, bool)),
    "actionable": (True, _strs),
    "blocked": (False, _strs),
    "statuses": (True, _str_map),
}


def mcp_reply(response: httpx.Response, model: Model, content_type: str | None = None) -> Any:
    """Given a response to a request sent as reka-mcp sends it, check it as reka-mcp would
    (status < 400, JSON its pydantic model accepts); return the JSON."""
    sent = response.request.headers.get("content-type", "")
    assert content_type is None or sent.startswith(content_type), sent
    assert response.request.headers["x-api-key"] == API_KEY
    assert response.status_code < 400, (response.request.url, response.text)
    data = response.json()
    assert _model(model)(data), (response.request.url, data)
    return data


def test_every_request_reka_mcp_sends_is_answered_in_the_shape_it_validates(
    emu: emulator.RunningEmulator,
) -> None:
    JSON, FORM, MULTI = "application/json", "application/x-www-form-urlencoded", "multipart/"
    headers = {"x-api-key": API_KEY, "x-mcp-session-id": "sess-abc"}
    with httpx.Client(base_url=emu.url, headers=headers, timeout=60.0) as mcp:
        group = mcp_reply(mcp.post("/v2/video-groups", json={"name": "mcp"}), GROUP, JSON)
        gid = group["group_id"]
        groups = mcp_reply(mcp.get("/v2/video-groups"), {"results": (True, _list)})["results"]
        assert groups and all(_model(GROUP)(g) for g in groups), groups
        url_data = {"video_url": "https://example.com/v.mp4", "video_name": "by url"}
        url_data |= {"description": "d", "group_id": gid}
        by_url = mcp_reply(mcp.post("/v2/videos", data=url_data), UPLOAD, FORM)
        file_data = {"video_name": "clip", "description": "d", "group_id": gid}
        files = {"file": ("clip.mp4", b"fake video bytes", "application/octet-stream")}
        by_file = mcp_reply(mcp.post("/v2/videos", data=file_data, files=files), UPLOAD, MULTI)
        ids = [by_url["video_id"], by_file["video_id"]]
        listed = mcp.get("/v2/videos", params={"ids": ids})
        assert listed.request.url.query.decode().count("ids=") == 2
        videos = mcp_reply(listed, {"results": (True, _list)})["results"]
        assert len(videos) == 2 and all(_model(VIDEO)(v) for v in videos), videos
        assert len(mcp.get("/v2/videos", params={}).json()["results"]) == 2
        in_group = mcp.get(f"/v2/video-groups/{gid}/videos").json()["results"]
        assert sorted(v["video_id"] for v in in_group) == sorted(ids)
        assert all(_model(VIDEO)(v) for v in in_group)
        vid = ids[1]
        wait_for(
            lambda: mcp_reply(mcp.get(f"/v2/videos/{vid}"), VIDEO)["status"] == "uploaded",
            timeout=10,
            message="uploaded",
        )
        changes = {"name": "renamed", "title": "T", "description": "D", "group_id": gid}
        patched = mcp_reply(mcp.patch(f"/v2/videos/{vid}", json=changes), VIDEO, JSON)
        assert patched["metadata"]["title"] == "T"
        catalog = mcp.get("/v2/features").json()
        assert {f["name"] for f in catalog.get("features", [])} >= {"transcript", "captions"}

        desired = sorted(["transcript", "captions", "embeddings"])  # its search_only pipeline

        def index_step() -> bool:
            step = mcp.post(f"/v2/videos/{vid}/features/plan", json={"desired": desired})
            answer = mcp_reply(step, PLAN, JSON)
            statuses = {f: answer["statuses"].get(f, "none") for f in desired}
            assert "failed" not in statuses.values(), statuses
            if all(s == "ready" for s in statuses.values()):
                return True
            for feature in answer["actionable"]:
                body: dict[str, Any] = {"force": False}
                if feature == "transcript":
                    body |= {"chunking_config": {"use_scene_detection": True}}
                sent = mcp.post(f"/v2/videos/{vid}/features/{feature}", json=body)
                assert mcp_reply(sent, TRIGGERED, JSON)["feature"] == feature
            return False

        wait_for(index_step, timeout=20, message="indexing")
        [record] = [r for r in emulator_records(emu.url) if r["video_id"] == vid]
        assert record["feature_runs"] == {"transcript": 1, "captions": 1, "embeddings": 1}
        assert record["chunking_config"] == {"use_scene_detection": True}
        for entry in triggers_logged(emu.url):  # planned triggers: never early, never twice
            assert entry["was"] == "none" and entry["started"], entry
            assert all(s == "ready" for s in entry["depends_on"].values()), entry
        # Calls reka-mcp's client does not make, sent in its style (JSON bodies):
        mcp_reply(mcp.get(f"/v2/video-groups/{gid}"), GROUP)
        mcp_reply(mcp.patch(f"/v2/video-groups/{gid}", json={"name": "mcp 2"}), GROUP, JSON)
        other = mcp_reply(mcp.post("/v2/video-groups", json={"name": "other"}), GROUP)
        move = mcp.post(f"/v2/video-groups/{other['group_id']}/videos", json={"video_ids": ids})
        assert mcp_reply(move, {"moved_count": (True, _int)}, JSON)["moved_count"] == 2
        for path in (f"/v2/videos/{i}" for i in ids):
            assert mcp_reply(mcp.delete(path), DELETED)["status"] == "success"
        for group_id in (gid, other["group_id"]):
            assert mcp_reply(mcp.delete(f"/v2/video-groups/{group_id}"), DELETED)["status"]
