"""Watch-mode figures, each against a baseline measured in the same run.

  python -m tests.benchmarks.bench_watch latency  # last write -> upload start, vs settle_seconds
  python -m tests.benchmarks.bench_watch idle     # CPU of `run` over 60 s with 10,000 folders
  python -m tests.benchmarks.bench_watch scan     # rescan of 100,000 done files vs os.scandir

Targets (issue 5): latency <= settle_seconds + 2 s; idle < 1% of one core. Issue 14: a
periodic rescan <= 2x a bare os.scandir walk with stat (5 interleaved pairs, after a warm-up).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import tomli_w

from tests.benchmarks.common import EmulatorProcess

SETTLE = 2.0


def config(base: Path, media: Path, url: str, **watch: object) -> Path:
    path = base / "config.toml"
    path.write_text(
        tomli_w.dumps(
            {
                "api": {"base_url": url},
                "journal": {"path": str(base / "journal.db")},
                "watch": {"roots": [str(media)], "settle_seconds": SETTLE, **watch},
                "upload": {"poll_interval": 0.5},
            }
        )
    )
    return path


def start_daemon(cfg: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reka_sync", "run", "--config", str(cfg), "--log-format", "json"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "REKA_API_KEY": "bench"},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "reka-sync running" in line:
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_event(db: Path, event: str, rel: str, deadline: float) -> float:
    while time.time() < deadline:
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            row = conn.execute(
                "SELECT e.at FROM events e JOIN files f ON f.id = e.file_id"
                " WHERE e.event = ? AND f.rel_path = ?",
                (event, rel),
            ).fetchone()
            conn.close()
            if row:
                return float(row[0])
        except sqlite3.Error:
            pass
        time.sleep(0.05)  # polling the journal with a deadline
    raise SystemExit(f"no {event} for {rel}")


def latency() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        media = base / "media"
        media.mkdir()
        emu = EmulatorProcess(base / "emu")
        proc = start_daemon(config(base, media, emu.url))
        results = []
        try:
            for index in range(5):
                path = media / f"clip{index}.mp4"
                with path.open("wb") as handle:
                    for _ in range(4):
                        handle.write(os.urandom(256 * 1024))
                last_write = time.time()
                sent = wait_event(base / "journal.db", "note:sending", path.name, time.time() + 30)
                results.append(sent - last_write)
        finally:
            proc.terminate()
            proc.wait()
            emu.stop()
    print(f"detection latency (last write -> upload start), settle_seconds={SETTLE:g}:")
    print(f"  min {min(results):.2f}s  max {max(results):.2f}s  (target <= {SETTLE + 2:g}s)")


def idle(folders: int = 10_000, seconds: float = 60.0) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        media = base / "media"
        for index in range(folders):
            (media / f"d{index // 100:03d}" / f"e{index % 100:02d}").mkdir(parents=True)
        emu = EmulatorProcess(base / "emu")
        proc = start_daemon(config(base, media, emu.url))
        try:
            time.sleep(5)  # let the startup scan finish before measuring
            before, start = cpu_seconds(proc.pid), time.time()
            time.sleep(seconds)  # the measurement window itself
            used = cpu_seconds(proc.pid) - before
            wall = time.time() - start
        finally:
            proc.terminate()
            proc.wait()
            emu.stop()
    print(
        f"idle with {folders} watched folders: {100 * used / wall:.2f}% of one core over "
        f"{wall:.0f}s (target < 1%)"
    )


def scan(files: int = 100_000, rounds: int = 5) -> None:
    from reka_sync.config import load_config
    from reka_sync.credentials import Secret
    from reka_sync.journal import Journal
    from reka_sync.lifecycle import State
    from reka_sync.scheduler import Engine

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        media = base / "media"
        for index in range(files):
            folder = media / f"d{index // 1000:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{index:06d}.mp4").write_bytes(b"x")
        cfg = load_config(config(base, media, "http://127.0.0.1:9"))
        journal = Journal.open(cfg.journal.path)
        engine = Engine(cfg, journal, Secret("bench"))
        engine.rescan(time.time())  # first sight: records them
        # mark all done, as after a finished backfill
        journal._run(lambda conn: conn.execute("UPDATE files SET state = ?", (State.DONE.value,)))
        engine.rescan(time.time())  # warm-up: the stat keys are read from the rows, and cached
        bare_runs, our_runs = [], []
        for _ in range(rounds):  # interleaved pairs
            start = time.perf_counter()
            walked = _bare_walk(media)
            bare_runs.append(time.perf_counter() - start)
            start = time.perf_counter()
            seen = engine.rescan(time.time())
            our_runs.append(time.perf_counter() - start)
        engine.api.close()
        journal.close()
    ratios = sorted(ours / bare for bare, ours in zip(bare_runs, our_runs, strict=True))
    bare, ours = min(bare_runs), min(our_runs)
    print(
        f"rescan of {seen} unchanged files: {ours:.2f}s; bare os.scandir+stat walk of "
        f"{walked}: {bare:.2f}s (best of {rounds} each); ratio {ours / bare:.2f}x;"
        f" pair by pair {ratios[0]:.2f}/{ratios[len(ratios) // 2]:.2f}/{ratios[-1]:.2f}x"
        " (min/median/max) (target <= 2x)"
    )


def _bare_walk(media: Path) -> int:
    """Given a folder, walk it with os.scandir, stat every file; return how many."""
    walked = 0
    stack = [str(media)]
    while stack:
        for entry in os.scandir(stack.pop()):
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                entry.stat()
                walked += 1
    return walked


if __name__ == "__main__":
    {"latency": latency, "idle": idle, "scan": scan}[
        sys.argv[1] if len(sys.argv) > 1 else "latency"
    ]()
