"""Indexing cost in API requests: reka-sync against the naive loop of Reka's MCP, in one run.

  python -m tests.benchmarks.bench_index                # 1,000 stored videos, features take 10 s
  python -m tests.benchmarks.bench_index --quick        # 100 videos, 2 s: a smoke run
  python -m tests.benchmarks.bench_index --videos 300 --feature-delay 5 --poll-interval 5

Every video wants `embeddings`, so three features in a chain (transcript, then captions, then
embeddings), each taking --feature-delay seconds on the emulator. Each contender gets its own
emulator (`reka-sync emulator` as a subprocess, processing_delay 0.2 s, the same feature_delay)
holding the same N small videos (4 KiB, distinct bytes), stored and not indexed:

* reka-sync: a config without features, `reka-sync backfill` uploads and files them; then the
  config asks for `[index] features = ["embeddings"]` (no group, no rules, index.poll_interval
  --poll-interval, 5 s by default) and a second `reka-sync backfill` brings the done videos back
  to indexing and waits until they are indexed. Counted: every API request the emulator logged
  during that second backfill (catalog, plans, triggers, batched listings).
* the naive loop, as Reka's MCP indexes one video (reka-vision-api.md section 5), run here over
  all of them, one video after another with httpx: a round plans each unfinished video with the
  desired set (POST .../features/plan), drops it once every desired feature is ready, else
  triggers every feature the plan calls actionable; then it sleeps 5 s. Counted: every API
  request the emulator logged from the first plan on. A fixed 5 s sleep after a round that
  itself takes seconds spaces each video's plans more than 5 s apart: the loop is favoured.

Both must end with every video's three features ready, each run once; else the benchmark fails.
Requests to the emulator's control endpoints (/_emulator/...) are never counted.

Target: reka-sync spends fewer than half the naive loop's requests. Features faster than the
loop's sleep (--quick: 2 s) put the loop at its floor, 7 requests per video (4 plans, 3 triggers)
against reka-sync's 4 (a plan, 3 triggers) and its listings: the target is out of reach there.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from reka_sync.indexer import LIST_BATCH
from tests.benchmarks.common import EmulatorProcess

KIB = 1024
KEY = "bench"
DESIRED = ["embeddings"]
CHAIN = ("transcript", "captions", "embeddings")  # DESIRED with its dependencies
NAIVE_SLEEP = 5.0  # seconds between the MCP's looks at a video
PER_FOLDER = 250  # videos per folder of the tree
ENV = {**os.environ, "REKA_API_KEY": KEY}
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# -- the emulators and their request logs ---------------------------------------------------


def start_emulator(base: Path, name: str, feature_delay: float) -> EmulatorProcess:
    """Given a folder, a name and how long a feature run takes, return a running emulator
    (a subprocess, processing_delay 0.2 s) whose feature runs take that long."""
    emu = EmulatorProcess(base / name)
    answer = httpx.post(
        f"{emu.url}/_emulator/faults", json={"faults": [], "feature_delay": feature_delay}
    )
    answer.raise_for_status()
    if answer.json()["feature_delay"] != feature_delay:
        raise SystemExit(f"the emulator did not take feature_delay {feature_delay}")
    return emu


def log_mark(emu: EmulatorProcess) -> str:
    """Given an emulator, return the request id of the last entry of its request log (the
    request that reads the log is logged after it: anything counted from here is newer)."""
    return str(request_log(emu)[-1]["request_id"])


def request_log(emu: EmulatorProcess) -> list[dict[str, Any]]:
    """Given an emulator, return its whole request log (control requests included)."""
    return list(httpx.get(f"{emu.url}/_emulator/requests", timeout=60).json()["results"])


def api_requests_since(emu: EmulatorProcess, mark: str) -> list[dict[str, Any]]:
    """Given an emulator and a mark of its request log, return the API requests logged after
    it (those to the control endpoints left out); stop the benchmark if the log, a bounded
    queue, has dropped the mark, since requests were lost."""
    log = request_log(emu)
    where = next((i for i, e in enumerate(log) if e["request_id"] == mark), None)
    if where is None:
        raise SystemExit(f"the emulator's request log ({len(log)} entries) dropped the mark")
    return [e for e in log[where + 1 :] if not e["path"].startswith("/_emulator/")]


def endpoint(entry: dict[str, Any]) -> str:
    """Given a request log entry, return what it was, in words (plan, trigger captions, ...)."""
    method, path = entry["method"], UUID.sub("{id}", entry["path"])
    if (method, path) == ("POST", "/v2/videos/{id}/features/plan"):
        return "plan"
    if method == "POST" and path.startswith("/v2/videos/{id}/features/"):
        return f"trigger {path.rsplit('/', 1)[1]}"
    if (method, path) == ("GET", "/v2/videos"):
        return "list videos (batched)"
    if (method, path) == ("GET", "/v2/features"):
        return "feature catalog"
    return f"{method} {path}"


def check_indexed(emu: EmulatorProcess, count: int, who: str) -> None:
    """Given an emulator, how many videos it should hold and whose they are, return if every
    video has its three features ready, each run once; else stop the benchmark, loudly."""
    videos = httpx.get(f"{emu.url}/_emulator/videos", timeout=60).json()["results"]
    if len(videos) != count:
        raise SystemExit(f"{who}: the emulator holds {len(videos)} videos, not {count}")
    unready = [v for v in videos if any(v["features"].get(f) != "ready" for f in CHAIN)]
    if unready:
        raise SystemExit(
            f"{who}: {len(unready)} of {count} videos are not indexed, e.g."
            f" {unready[0]['video_id']} {unready[0]['features']}"
        )
    reruns = [v for v in videos if any(v["feature_runs"].get(f) != 1 for f in CHAIN)]
    if reruns:
        raise SystemExit(f"{who}: {len(reruns)} videos ran a feature more than once")


# -- the videos -----------------------------------------------------------------------------


def write_videos(media: Path, count: int, size: int = 4 * KIB) -> list[Path]:
    """Given a folder, a count and a size, write that many files of distinct bytes (their
    number, then random) under media/clips/dNNN/; return their paths."""
    paths = []
    for index in range(count):
        path = media / "clips" / f"d{index // PER_FOLDER:03d}" / f"clip{index:05d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(index.to_bytes(8, "little") + os.urandom(size - 8))
        paths.append(path)
    return paths


# -- reka-sync ------------------------------------------------------------------------------


def write_config(
    base: Path, media: Path, url: str, features: list[str], poll_interval: float
) -> Path:
    """Given the folders, the emulator's URL, the features every file wants and the index
    poll interval, write reka-sync's config (no group, no rules, no daily cap); return it."""
    path = base / "config.toml"
    path.write_text(
        tomli_w.dumps(
            {
                "api": {"base_url": url},
                "journal": {"path": str(base / "journal.db")},
                "watch": {"roots": [str(media)], "settle_seconds": 0},
                "upload": {"workers": 4, "poll_interval": 0.2},
                "groups": {"default": "", "rules": []},
                "index": {
                    "features": features,
                    "max_per_day": 0,
                    "poll_interval": poll_interval,
                },
            }
        )
    )
    return path


def backfill(config: Path) -> float:
    """Given a config, run `reka-sync backfill` to its end; return its wall time (stop the
    benchmark if it fails)."""
    command = [sys.executable, "-m", "reka_sync", "backfill", "--config", str(config)]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--log-level", "warning"],
        capture_output=True,
        text=True,
        env=ENV,
        check=False,
        timeout=3600,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"backfill failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return wall


def reka_sync_side(
    base: Path, emu: EmulatorProcess, count: int, poll_interval: float
) -> tuple[list[dict[str, Any]], float]:
    """Given a folder, an emulator, a count and the index poll interval, store that many
    videos with a backfill that indexes nothing, then index them for DESIRED with a second
    backfill; return the API requests of the second, and its wall time."""
    media = base / "media"
    write_videos(media, count)
    backfill(write_config(base, media, emu.url, [], poll_interval))
    if len(emu.records()) != count:
        raise SystemExit(f"the first backfill stored {len(emu.records())} of {count} videos")
    mark = log_mark(emu)
    wall = backfill(write_config(base, media, emu.url, DESIRED, poll_interval))
    return api_requests_since(emu, mark), wall


# -- the naive loop -------------------------------------------------------------------------


def upload_all(client: httpx.Client, paths: list[Path]) -> list[str]:
    """Given a client of the API and files, upload each (no group, no indexing); return
    their video ids."""
    ids = []
    for path in paths:
        answer = client.post(
            "/v2/videos",
            data={"video_name": path.name},
            files={"file": (path.name, path.read_bytes(), "application/octet-stream")},
        )
        answer.raise_for_status()
        ids.append(str(answer.json()["video_id"]))
    return ids


def wait_stored(emu: EmulatorProcess, count: int, timeout: float = 120.0) -> None:
    """Given an emulator and a count, return once it holds that many uploaded videos (stop
    the benchmark after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while sum(r["status"] == "uploaded" for r in emu.records()) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"the emulator did not store {count} videos in {timeout:g}s")
        time.sleep(0.2)  # a look at the emulator's state, bounded by the deadline


def naive_loop(client: httpx.Client, video_ids: list[str]) -> int:
    """Given a client of the API and videos, index them for DESIRED as Reka's MCP does, one
    video after another per round, NAIVE_SLEEP seconds between rounds; return the rounds."""
    left, rounds = list(video_ids), 0
    while left:
        rounds += 1
        unfinished = []
        for video_id in left:
            plan = client.post(
                f"/v2/videos/{video_id}/features/plan", json={"desired": DESIRED}
            ).raise_for_status()
            statuses = plan.json()["statuses"]
            if all(statuses.get(f) == "ready" for f in DESIRED):
                continue
            if "failed" in statuses.values():
                raise SystemExit(f"naive loop: a feature of {video_id} failed: {statuses}")
            for feature in plan.json()["actionable"]:
                body: dict[str, Any] = {"force": False}
                if feature == "transcript":  # the MCP's full pipeline, as reka-sync sends it
                    body["chunking_config"] = {"use_scene_detection": True}
                client.post(
                    f"/v2/videos/{video_id}/features/{feature}", json=body
                ).raise_for_status()
            unfinished.append(video_id)
        left = unfinished
        if left:
            time.sleep(NAIVE_SLEEP)  # the MCP's pause between two looks at a video
    return rounds


def naive_side(
    base: Path, emu: EmulatorProcess, count: int
) -> tuple[list[dict[str, Any]], float, int]:
    """Given a folder, an emulator and a count, upload that many videos, wait until they are
    stored, then index them with the naive loop; return its API requests, its wall time and
    its rounds."""
    paths = write_videos(base / "naive-media", count)
    with httpx.Client(base_url=emu.url, headers={"X-Api-Key": KEY}, timeout=60) as client:
        ids = upload_all(client, paths)
        wait_stored(emu, count)
        mark = log_mark(emu)
        start = time.perf_counter()
        rounds = naive_loop(client, ids)
        wall = time.perf_counter() - start
    return api_requests_since(emu, mark), wall, rounds


# -- figures --------------------------------------------------------------------------------


def print_side(label: str, log: list[dict[str, Any]], count: int, wall: float, how: str) -> None:
    """Given a contender's name, its API requests, the video count, its wall time and how it
    ran, print its figures and its requests per endpoint and answer status."""
    span = max(e["done"] for e in log) - min(e["at"] for e in log) if log else 0.0
    print(
        f"  {label:10} {len(log):7d} requests  {len(log) / count:6.2f} per video"
        f"  wall {wall:7.1f}s (first to last request {span:.1f}s)  {how}"
    )
    kinds = Counter((endpoint(e), e["status"]) for e in log)
    for (kind, status), n in sorted(kinds.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {'':10} {n:7d}  {kind} -> {status}  ({n / count:.2f} per video)")
    unstarted = sum(1 for e in log if endpoint(e).startswith("trigger") and not e.get("started"))
    if unstarted:
        print(f"  {'':10} {unstarted:7d}  triggers that started nothing")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=1000, help="stored videos (1000)")
    parser.add_argument(
        "--feature-delay", type=float, default=10.0, help="seconds each feature run takes (10)"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=5.0, help="reka-sync's index.poll_interval (5)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 videos, 2 s")
    args = parser.parse_args(argv)
    count, delay = (100, 2.0) if args.quick else (args.videos, args.feature_delay)
    print(
        f"{count} stored videos, each indexed for {'+'.join(CHAIN)} (desired {DESIRED}),"
        f" every feature run {delay:g}s; emulators: processing_delay 0.2s, one per contender;"
        f" reka-sync index.poll_interval {args.poll_interval:g}s, naive loop sleeps"
        f" {NAIVE_SLEEP:g}s between rounds; {os.cpu_count()} CPUs",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="reka-bench-index-") as tmp:
        base = Path(tmp)
        ours_emu = start_emulator(base, "emu-reka-sync", delay)
        try:
            naive_emu = start_emulator(base, "emu-naive", delay)
            try:
                ours, ours_wall = reka_sync_side(base, ours_emu, count, args.poll_interval)
                check_indexed(ours_emu, count, "reka-sync")
                naive, naive_wall, rounds = naive_side(base, naive_emu, count)
                check_indexed(naive_emu, count, "naive loop")
            finally:
                naive_emu.stop()
        finally:
            ours_emu.stop()
    print_side(
        "reka-sync",
        ours,
        count,
        ours_wall,
        f"(the whole second `reka-sync backfill`, poll interval {args.poll_interval:g}s)",
    )
    print_side("naive", naive, count, naive_wall, f"({rounds} rounds)")
    print(
        f"  floors per video: naive {len(CHAIN) + 1} plans + {len(CHAIN)} triggers (a round"
        f" advances a video by one feature at most, and one more sees it done); reka-sync 1 plan"
        f" + {len(CHAIN)} triggers, plus its listings (one per {LIST_BATCH} videos per look)"
    )
    ratio = len(ours) / len(naive)
    print(
        f"  ratio reka-sync / naive: {ratio:.3f} ({len(ours)} / {len(naive)} requests)"
        f"   target < 0.5: {'meets' if ratio < 0.5 else 'MISSES'}"
    )


if __name__ == "__main__":
    main()
