"""`reka-sync demo`: the real pipeline against the built-in emulator, on a sample tree.

Everything lives in a temporary folder that is removed at the end; the emulator
runs on a free loopback port and stops with the demo.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import TextIO

from reka_sync import backfill, emulator
from reka_sync.api import ApiClient
from reka_sync.config import ApiConfig, Config, load_config
from reka_sync.credentials import Secret
from reka_sync.lifecycle import State
from reka_sync.runner import Service
from reka_sync.service import Notifier

DEMO_KEY = Secret("demo-key-not-secret")
WATCH_DEADLINE = 60.0  # seconds for the dropped files to be uploaded and filed
SAMPLES = {
    "cameras/front/2026-11-01 morning.mp4": 900_000,
    "cameras/front/2026-11-01 evening.mp4": 700_000,
    "cameras/back/2026-11-02 night.mp4": 1_200_000,
    "projects/alpha/interview take 1.mov": 2_000_000,
    "projects/alpha/interview take 2.mov": 1_500_000,
    "holiday/beach.mp4": 600_000,
}
ARRIVALS = {  # dropped in while the service watches, each a different way
    "cameras/garage/2026-11-03 delivery.mp4": "created in a new folder",
    "projects/beta/rough cut.mov": "written as .part, then renamed",
    "holiday/sunset.mp4": "copied in",
}
LITTER = [
    "cameras/front/.DS_Store",
    "cameras/@eaDir/thumb.mp4",
    "holiday/upload.mp4.part",
    "holiday/notes.txt",
]


def tiny_mp4(size: int, seed: int) -> bytes:
    """Given a size, return an ISO-BMFF (MP4) file of that size: ftyp, mdat, moov."""
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41")
    mvhd = _box(b"mvhd", bytes(4) + struct.pack(">IIII", 0, 0, 1000, 1000) + bytes(80))
    moov = _box(b"moov", mvhd)
    payload = size - len(ftyp) - len(moov) - 8
    rng = seed.to_bytes(4, "little")
    mdat = _box(b"mdat", (rng + os.urandom(max(0, payload - 4)))[: max(0, payload)])
    return ftyp + mdat + moov


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body) + 8) + kind + body


def build_tree(media: Path) -> None:
    """Given an empty folder, fill it with sample videos, a duplicate and NAS litter."""
    for index, (rel, size) in enumerate(SAMPLES.items()):
        path = media / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiny_mp4(size, index))
    (media / "holiday/beach (copy).mp4").write_bytes((media / "holiday/beach.mp4").read_bytes())
    for rel in LITTER:
        path = media / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a video")


def write_config(folder: Path, url: str) -> Path:
    """Given the demo folder and the emulator's URL, write the demo's config file."""
    path = folder / "config.toml"
    path.write_text(f"""\
[api]
base_url = "{url}"

[journal]
path = "{folder / "journal.db"}"

[watch]
roots = ["{folder / "media"}"]
settle_seconds = 1

[upload]
workers = 3
poll_interval = 0.2

[groups]
default = "Inbox"

[index]
poll_interval = 0.2

[[groups.rules]]
match = "cameras/{{camera}}/**"
group = "Camera {{camera}}"
features = ["transcript"]

[[groups.rules]]
match = "projects/{{project}}/**"
group = "Project {{project}}"
features = ["captions"]
""")
    return path


def run(out: TextIO) -> int:
    """Run the demo, printing what happens to `out`; return the exit code."""
    with tempfile.TemporaryDirectory(prefix="reka-sync-demo-") as tmp:
        folder = Path(tmp)
        settings = emulator.Settings(processing_delay=0.3, feature_delay=0.3)
        running = emulator.start(settings=settings)
        try:
            (folder / "media").mkdir()
            build_tree(folder / "media")
            config = load_config(write_config(folder, running.url))
            print(f"emulator: {running.url}   sample tree: {folder / 'media'}", file=out)
            print(
                f"\n1. reka-sync backfill over {len(SAMPLES) + 1} videos "
                f"(and {len(LITTER)} files it must ignore); camera videos get a transcript,"
                " project videos captions (and the transcript they need):",
                file=out,
            )
            code = backfill.run(
                config, DEMO_KEY, [], dry_run=False, as_json=False, out=out, err=io.StringIO()
            )
            print("\n2. the same backfill again: nothing is uploaded twice", file=out)
            code |= backfill.run(
                config,
                DEMO_KEY,
                [],
                dry_run=False,
                as_json=False,
                out=io.StringIO(),
                err=io.StringIO(),
            )
            print(f"\n3. reka-sync run, watching; {len(ARRIVALS)} more videos arrive:", file=out)
            if not watch_and_drop(config, folder, out):
                code = 1
            if _print_groups(config.api, out) != len(SAMPLES) + len(ARRIVALS):
                print("   unexpected: the API should hold one video per sample", file=out)
                code = 1
        finally:
            running.stop()
    print("\ndemo finished; the emulator is stopped and the temporary folder removed.", file=out)
    return code


def watch_and_drop(config: Config, folder: Path, out: TextIO) -> bool:
    """Run the service, drop files into the tree, wait until each is in its group (and
    indexed, if its rule says so).

    Return True if every one of them was uploaded, filed and indexed within the deadline.
    """
    service = Service(config, DEMO_KEY, folder / "config.toml", Notifier({}))
    service.start()
    try:
        started = time.monotonic()
        for index, (rel, how) in enumerate(ARRIVALS.items()):
            _drop(folder, rel, how, index)
        pending = {str(folder / "media" / rel): rel for rel in ARRIVALS}
        deadline = started + WATCH_DEADLINE
        while pending and time.monotonic() < deadline:
            for job in service.journal.jobs_by_ids(service.journal.ids_of(pending)):
                if job.state is State.DONE:
                    seconds = time.monotonic() - started
                    rel = pending.pop(job.path)
                    print(f"   + {rel} -> {job.group_name} ({seconds:.1f}s)", file=out)
            service.stop.wait(0.1)
        for rel in pending.values():
            print(f"   ! {rel} did not arrive in {WATCH_DEADLINE:.0f}s", file=out)
        return not pending
    finally:
        service.shutdown()


def _drop(folder: Path, rel: str, how: str, index: int) -> None:
    target = folder / "media" / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    data = tiny_mp4(800_000, 100 + index)
    if how.startswith("written as .part"):
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(data)
        partial.rename(target)
    elif how == "copied in":
        outside = folder / "outside.tmp"
        outside.write_bytes(data)
        shutil.copyfile(outside, target)
    else:
        target.write_bytes(data)


def _print_groups(api_config: ApiConfig, out: TextIO) -> int:
    """Print each group's videos as the API lists them; return how many videos it holds."""
    client = ApiClient(api_config, DEMO_KEY)
    try:
        videos = client.list_videos()
        print(
            f"\n   the API holds {len(videos)} videos\n\n4. what landed in which group:", file=out
        )
        names = {g.group_id: g.name for g in client.list_groups()}
        by_group: dict[str, list[str]] = {}
        for video in videos:
            ready = [name for name, status in video.features.items() if status == "ready"]
            shown = (video.video_name or video.video_id) + (
                f"  [indexed: {', '.join(ready)}]" if ready else ""
            )
            by_group.setdefault(names.get(video.group_id or "", "(no group)"), []).append(shown)
        for group, members in sorted(by_group.items()):
            print(f"   {group}:", file=out)
            for name in sorted(members):
                print(f"     - {name}", file=out)
        return len(videos)
    finally:
        client.close()
