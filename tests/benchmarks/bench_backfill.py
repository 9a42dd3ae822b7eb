"""Backfill against curl, in the same run, against the same emulator (a subprocess).

  python -m tests.benchmarks.bench_backfill large   # 8 x 256 MiB, 4 workers vs xargs -P4 curl -F
  python -m tests.benchmarks.bench_backfill small   # 2000 x 1 MiB, files/s vs xargs -P4 curl -F
  python -m tests.benchmarks.bench_backfill memory  # one 4 GiB file: peak RSS, rchar per byte

Targets (issue 4): large >= 0.9x curl's throughput, small >= 1.0x curl's files/s,
peak RSS < 100 MiB, bytes read per byte uploaded <= 1.1.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

from tests.benchmarks.common import MIB, EmulatorProcess, make_file, xargs_curl

WORKERS = 4
HARNESS = """
import json, os, sys
from reka_sync.cli import main
code = main(sys.argv[1:])
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]
print(json.dumps({"code": code, "rchar": int(io["rchar"]), "peak_rss_kib": int(hwm)}),
      file=sys.stderr)
"""


def tree(base: Path, count: int, size: int) -> Path:
    media = base / "media"
    for index in range(count):
        folder = media / ("cameras/front" if index % 2 else "projects/alpha")
        folder.mkdir(parents=True, exist_ok=True)
        make_file(folder / f"clip{index:05d}.mp4", size)
    return media


def config(base: Path, media: Path, url: str, run: int) -> Path:
    path = base / f"config{run}.toml"
    path.write_text(
        tomli_w.dumps(
            {
                "api": {"base_url": url},
                "journal": {"path": str(base / f"journal{run}.db")},
                "watch": {"roots": [str(media)], "settle_seconds": 0},
                "upload": {"workers": WORKERS, "poll_interval": 0.2},
                "groups": {
                    "rules": [
                        {"match": "cameras/{camera}/**", "group": "Camera {camera}"},
                        {"match": "projects/{project}/**", "group": "Project {project}"},
                    ]
                },
            }
        )
    )
    return path


def upload_phase(journal: Path) -> float:
    """Return seconds from the first upload sent to the last one accepted, from the journal."""
    conn = sqlite3.connect(journal)
    first, last = conn.execute(
        "SELECT min(CASE WHEN event = 'note:sending' THEN at END),"
        " max(CASE WHEN event = 'accepted' THEN at END) FROM events"
    ).fetchone()
    conn.close()
    return float(last - first)


def backfill(cfg: Path) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, "backfill", "--config", str(cfg), "--log-level", "warning"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "REKA_API_KEY": "bench"},
    )
    elapsed = time.perf_counter() - start
    stats = json.loads(done.stderr.strip().splitlines()[-1])
    if stats["code"] != 0:
        raise SystemExit(f"backfill failed: {done.stdout}\n{done.stderr}")
    return elapsed, stats


def curl_all(media: Path, url: str) -> float:
    files = "\n".join(str(p) for p in sorted(media.rglob("*.mp4")))
    start = time.perf_counter()
    subprocess.run(
        xargs_curl(url, WORKERS),
        input=files,
        text=True,
        check=True,
    )
    return time.perf_counter() - start


def compare(count: int, size: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        media = tree(base, count, size)
        emu = EmulatorProcess(base / "emu")
        curl_runs, ours, phases, stats = [], [], [], {}
        try:
            for run in range(rounds):
                curl_runs.append(curl_all(media, emu.url))
                emu.delete_all()
                elapsed, stats = backfill(config(base, media, emu.url, run))
                ours.append(elapsed)
                phases.append(upload_phase(base / f"journal{run}.db"))
                assert len(emu.records()) == count, "backfill did not upload every file"
                emu.delete_all()
        finally:
            emu.stop()
    total = count * size
    best_curl, best_ours = min(curl_runs), min(ours)
    print(f"{count} files x {size // MIB} MiB, {WORKERS} workers, best of {rounds}")
    print(
        f"  xargs -P{WORKERS} curl -F : {best_curl:7.2f}s  {count / best_curl:8.1f} files/s"
        f"  {total / MIB / best_curl:7.0f} MiB/s"
    )
    print(
        f"  reka-sync backfill   : {best_ours:7.2f}s  {count / best_ours:8.1f} files/s"
        f"  {total / MIB / best_ours:7.0f} MiB/s"
    )
    print(
        f"  ratio (reka-sync / curl), whole command: {best_curl / best_ours:.2f}x"
        "  (backfill includes start-up, scan and waiting until each video is stored)"
    )
    print(
        f"  ratio, upload phase only (first byte sent to last 202): "
        f"{best_curl / min(phases):.2f}x ({min(phases):.2f}s)"
    )
    print(
        f"  backfill peak RSS {stats['peak_rss_kib'] / 1024:.0f} MiB,"
        f" rchar per byte uploaded {stats['rchar'] / total:.3f}"
    )


def memory(size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        media = base / "media" / "misc"
        media.mkdir(parents=True)
        make_file(media / "huge.mp4", size)
        emu = EmulatorProcess(base / "emu")
        try:
            elapsed, stats = backfill(config(base, base / "media", emu.url, 0))
            emu_rss = emu.peak_rss_mib()
        finally:
            emu.stop()
    print(
        f"one {size / MIB / 1024:.1f} GiB file in {elapsed:.1f}s ({size / MIB / elapsed:.0f} MiB/s)"
    )
    print(
        f"  backfill peak RSS {stats['peak_rss_kib'] / 1024:.0f} MiB (target < 100),"
        f" emulator peak RSS {emu_rss:.0f} MiB"
    )
    print(f"  rchar per byte uploaded {stats['rchar'] / size:.3f} (target <= 1.1)")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "large"
    if mode == "large":
        compare(8, 256 * MIB, rounds=2)
    elif mode == "small":
        compare(2000, 1 * MIB, rounds=2)
    elif mode == "memory":
        memory(4 * 1024 * MIB)
    else:
        raise SystemExit(__doc__)
