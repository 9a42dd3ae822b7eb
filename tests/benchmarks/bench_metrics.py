"""The cost of a scrape of `/metrics` (and of the status page) with a large journal (issue 18).

  python -m tests.benchmarks.bench_metrics                  # 100,000 files
  python -m tests.benchmarks.bench_metrics --files 10000

A journal is filled with that many files in the states a big library is in (most done,
some queued, a few failed, features for a share of them), an Engine is built on it
(no ticks, no watcher: nothing else runs) with its listener on a free loopback port,
and `/metrics` and `/` are fetched over HTTP, each REPEAT times after a first scrape
that warms the page cache. Printed: the median and 95th percentile of each, and, as
the baseline measured in the same run, one `SELECT state, count(*) FROM files GROUP BY
state` over the same journal: the full count a scrape must not do.

Target (issue 18): a scrape < 50 ms with 100,000 files in the journal.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from reka_sync.config import parse_config
from reka_sync.credentials import Secret
from reka_sync.journal import Journal, SeenFile
from reka_sync.lifecycle import State
from reka_sync.scheduler import Engine
from reka_sync.stability import FileStat

REPEAT = 40
TARGET_MS = 50.0


def fill(journal: Journal, root: Path, files: int) -> None:
    """Record `files` files, then spread them over states as a big library has them."""
    batch = 5000
    for start in range(0, files, batch):
        seen = [
            SeenFile(
                str(root / f"d{i // 1000:03d}" / f"clip{i:06d}.mp4"),
                str(root),
                f"d{i // 1000:03d}/clip{i:06d}.mp4",
                FileStat(1024 + i, 1, i, 1),
                0.0,
            )
            for i in range(start, min(files, start + batch))
        ]
        journal.record_scan(seen, now=1.0)
    shares = ((State.DONE, 0.85), (State.QUEUED, 0.10), (State.FAILED, 0.01))
    first = 1
    for state, share in shares:  # a benchmark's shortcut: one UPDATE per state, no moves
        last = first + int(files * share)
        journal._run(
            lambda conn, s=state.value, a=first, b=last: conn.execute(
                "UPDATE files SET state = ?, video_id = 'v' || id WHERE id >= ? AND id < ?",
                (s, a, b),
            )
        )
        first = last


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed(url: str) -> list[float]:
    with httpx.Client() as client:
        client.get(url).raise_for_status()
        took = []
        for _ in range(REPEAT):
            began = time.perf_counter()
            client.get(url).raise_for_status()
            took.append((time.perf_counter() - began) * 1000)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.db"
        config = parse_config(
            {
                "api": {"base_url": "http://127.0.0.1:9"},
                "journal": {"path": str(path)},
                "metrics": {"listen": f"127.0.0.1:{free_port()}"},
            }
        )
        journal = Journal.open(path)
        began = time.perf_counter()
        fill(journal, Path(tmp) / "media", args.files)
        print(f"journal of {args.files} files made in {time.perf_counter() - began:.1f} s")
        engine = Engine(config, journal, Secret("bench"))
        engine._serve_metrics(config)
        assert engine.monitor is not None
        base = f"http://127.0.0.1:{engine.monitor.port}"
        try:
            metrics, page = timed(f"{base}/metrics"), timed(f"{base}/")
        finally:
            engine.stop()
        began = time.perf_counter()
        journal._read("SELECT state, count(*) FROM files GROUP BY state")
        full = (time.perf_counter() - began) * 1000
        journal.close()
    for name, took in (("/metrics", metrics), ("/ (status page)", page)):
        median = statistics.median(took)
        p95 = sorted(took)[int(len(took) * 0.95) - 1]
        verdict = "ok" if median < TARGET_MS else "MISSES the target"
        print(
            f"{name:<16} median {median:6.1f} ms  p95 {p95:6.1f} ms  "
            f"({median / full:.2f}x one full count of {full:.1f} ms)  target < {TARGET_MS:.0f} ms:"
            f" {verdict}"
        )


if __name__ == "__main__":
    main()
