"""Scale, reduced for CI (issue 14): ratios measured in the same run, never absolute times.

The full benchmarks are `python -m tests.benchmarks.bench_scale small|large|many|rescan|status`.
Here, against the benchmark sink (a subprocess that discards bodies and answers 202 at once):

* peak RSS of a backfill over 5,000 files of 1 KiB is within 15% of the same over 500
  (a fresh journal each): memory stays flat in the file count;
* small files (256 KiB) go faster than `xargs -P4 curl -F` to the same sink (at least 1.3x),
  by files/s over the transfer span the sink measures (first byte of the first upload to the
  last 202), pairs interleaved (either first in turn), the median pair ratio asserted.

Every figure is printed (`pytest -s tests/test_scale.py` shows them) and is in the assertion
message. The backfills are whole processes running reka_sync.cli:main (what the `reka-sync`
script runs); peak RSS is each one's own VmHWM, noted as it ends.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.benchmarks.bench_scale import (
    KIB,
    UploadRun,
    against_sink,
    backfill,
    config,
    curl_all,
    rss,
    write_list,
    write_tree,
)
from tests.benchmarks.sink import SinkProcess

RSS_SMALL, RSS_LARGE = 500, 5000
RSS_GROWTH = 1.15  # the bound: within 15%
SPEED_FILES, SPEED_SIZE, SPEED_PAIRS = 600, 256 * KIB, 5
# The target is 1.5x curl's files/s; the full benchmark (bench_scale small, 1,500
# files) measures it and says whether it is met. Measured on a 2-core machine: medians of
# 1.48x (pairs 1.29x-1.61x) at 1,500 files and 1.68x-1.69x at 600. CI asserts 1.3x, below
# every median seen and well above curl's own pace, so that a neighbour slowing one run does
# not fail it but a change that costs a fifth of the speed does.
SPEED_RATIO = 1.3
pytestmark = pytest.mark.alone  # ratios against curl and RSS: no other test beside them


@pytest.fixture(scope="module")
def sink() -> Iterator[SinkProcess]:
    with SinkProcess() as running:
        yield running


def test_the_sink_answers_what_a_backfill_asks(sink: SinkProcess) -> None:
    sink.reset()
    with httpx.Client(base_url=sink.url, headers={"X-Api-Key": "k"}) as api:
        group = api.post("/v2/video-groups", json={"name": "Camera front"}).json()
        assert api.post("/v2/video-groups", json={"name": "Camera front"}).status_code == 409
        assert api.get("/v2/video-groups").json()["results"] == [group]

        def chunked() -> Iterator[bytes]:  # no Content-Length: sent chunked
            yield b'--b\r\nContent-Disposition: form-data; name="video_name"\r\n\r\nclip\r\n'
            yield b'--b\r\nContent-Disposition: form-data; name="description"\r\n\r\nm:1\r\n'
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
            yield bytes(300_000)
            yield b"\r\n--b--\r\n"

        up = api.post(
            "/v2/videos",
            content=chunked(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert up.status_code == 202
        assert up.request.headers["transfer-encoding"] == "chunked"
        video_id = up.json()["video_id"]
        assert up.json()["status"] == "uploading"
        assert "x-request-id" in up.headers
        polled = api.get("/v2/videos", params=[("ids", video_id), ("ids", "x")]).json()
        assert [(v["video_id"], v["status"]) for v in polled["results"]] == [(video_id, "uploaded")]
        listed = api.get("/v2/videos").json()["results"]
        assert [v["metadata"]["description"] for v in listed] == ["m:1"]
        moved = api.post(
            f"/v2/video-groups/{group['group_id']}/videos", json={"video_ids": [video_id]}
        ).json()
        assert (moved["moved_count"], moved["video_ids"]) == (1, [video_id])
        assert api.get(f"/v2/videos/{video_id}").json()["group_id"] == group["group_id"]
        assert api.get("/v2/videos/" + "0" * 36).status_code == 404
    stats = sink.stats()
    assert stats["uploads"] == 1
    assert stats["upload_bytes"] > 300_000
    assert stats["span"] is not None and stats["span"] >= 0


def _peak_rss(tmp: Path, sink: SinkProcess, count: int) -> tuple[float, UploadRun]:
    base = tmp / f"rss{count}"
    media = base / "media"
    write_tree(media, count, KIB)
    cfg = config(base, media, sink.url, "rss", None)
    run = against_sink(sink, lambda: backfill(cfg))
    assert run.uploads == count, f"{run.uploads} uploads for {count} files"
    shutil.rmtree(base)
    return rss(run.proc), run


def test_peak_rss_is_flat_in_the_file_count(tmp_path: Path, sink: SinkProcess) -> None:
    small, small_run = _peak_rss(tmp_path, sink, RSS_SMALL)
    large, large_run = _peak_rss(tmp_path, sink, RSS_LARGE)
    figures = (
        f"peak RSS {small:.1f} MiB for {RSS_SMALL} files ({small_run.proc.wall:.1f}s),"
        f" {large:.1f} MiB for {RSS_LARGE} files ({large_run.proc.wall:.1f}s,"
        f" {RSS_LARGE / large_run.proc.wall:.0f} files/s,"
        f" {1000 * large_run.proc.cpu / RSS_LARGE:.2f} ms CPU/file): {large / small:.3f}x"
    )
    print(figures)
    assert large <= RSS_GROWTH * small, figures


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.skipif(shutil.which("xargs") is None, reason="needs xargs")
def test_small_files_go_faster_than_curl(tmp_path: Path, sink: SinkProcess) -> None:
    media = tmp_path / "media"
    listing = write_list(write_tree(media, SPEED_FILES, SPEED_SIZE), tmp_path / "files.txt")
    against_sink(sink, lambda: curl_all(listing, sink.url))  # warm-up: page cache, sink
    ratios, lines = [], []
    for index in range(SPEED_PAIRS):
        cfg = config(tmp_path, media, sink.url, f"speed{index}", None)
        runs = [lambda: curl_all(listing, sink.url), lambda cfg=cfg: backfill(cfg)]
        if index % 2:  # either goes first in turn: a drift in the machine's pace hits both
            runs.reverse()
        done = [against_sink(sink, run) for run in runs]
        curl, ours = done if index % 2 == 0 else done[::-1]
        assert ours.uploads == SPEED_FILES, f"{ours.uploads} uploads for {SPEED_FILES} files"
        ratios.append(curl.span / ours.span)
        lines.append(
            f"curl {SPEED_FILES / curl.span:.0f} files/s, reka-sync"
            f" {SPEED_FILES / ours.span:.0f} files/s: {ratios[-1]:.2f}x"
            f" (whole command {curl.proc.wall:.1f}s vs {ours.proc.wall:.1f}s)"
        )
    ratio = statistics.median(ratios)
    figures = f"median {ratio:.2f}x (want >= {SPEED_RATIO}x); " + "; ".join(lines)
    print(figures)
    assert ratio >= SPEED_RATIO, figures
