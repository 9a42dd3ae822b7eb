"""Scale benchmarks (issue 14): reka-sync against curl and a stat walk, in the same run.

  python -m tests.benchmarks.bench_scale small    # 1,500 x 256 KiB, 4 workers, vs xargs -P4 curl -F
  python -m tests.benchmarks.bench_scale large    # 16 x 96 MiB, 4 workers, vs xargs -P4 curl -F
  python -m tests.benchmarks.bench_scale many     # 1k, 10k, 100k x 1 KiB: files/s, CPU/file, RSS
  python -m tests.benchmarks.bench_scale rescan   # 2nd backfill of 100k unchanged files vs a walk
  python -m tests.benchmarks.bench_scale status   # status, status --json, show with 100k rows
  python -m tests.benchmarks.bench_scale idle     # `run` idle on the 100k tree: CPU, RSS

Options: --count N (small, large, rescan, status), --counts 1000,10000 (many), --rounds N,
--poll-interval S (the config's upload.poll_interval; default: the daemon's own default),
--workdir DIR (rescan, status: keep the tree and its journal there and reuse them on the next
call, so `rescan` and `status` share one first backfill of 100k files).

Everything talks to a fast sink (tests/benchmarks/sink.py, a subprocess: reads and discards
each body, answers 202 at once, no Nagle stall) unless said otherwise. Every reka-sync
command is a whole process, measured from outside: wall time with time.perf_counter around
it, user+sys CPU from os.wait4 (the kernel's accounting of the finished process). Peak RSS
is the process's own VmHWM, noted as it ends (backfills run reka_sync.cli:main through
HARNESS below, which is what the `reka-sync` console script runs; status and show run the
console script itself). The transfer span of an upload run is the sink's: first byte of the
first upload to the last 202 written. Baselines run in the same call, interleaved with
reka-sync pair by pair (curl, reka-sync, curl, reka-sync, ...); ratios are pair by pair, and
the median is quoted (with min-max).

The code measured is whatever `import reka_sync` finds (the first line says where); to
measure another checkout, put its daemon/ first: PYTHONPATH=/path/to/checkout/daemon.

Source trees are written to the normal temporary folder (tempfile, on disk as a user's
media would be; not /dev/shm), and read from the page cache while measured: they were just
written, and each mode runs a warm-up where a cold cache would matter.

Targets (issue 14):
  small : files/s (transfer span) >= 1.5x curl's; whole command >= 1.0x curl's (curl wall /
          reka-sync wall)
  large : transfer throughput >= 1.0x curl's; whole command within 2x curl's wall time
  many  : >= 400 files/s end to end, <= 2 ms CPU per file, peak RSS < 100 MiB and within
          15% of the 1k run
  rescan: second backfill <= 2x a whole-process os.scandir walk that stats every file;
          RSS < 100 MiB
  status: status, status --json, show PATH each < 200 ms as whole processes
  idle  : `run` on the 100k tree (inotify), between rescans: < 0.5% of one core, RSS < 100 MiB
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from tests.benchmarks.common import MIB, EmulatorProcess, make_file, xargs_curl
from tests.benchmarks.sink import SinkProcess

KIB = 1024
WORKERS = 4
PER_FOLDER = 1000  # files per leaf folder of a generated tree
REKA_SYNC = [str(Path(sys.executable).with_name("reka-sync"))]
if not Path(REKA_SYNC[0]).exists():  # not a venv with the console script: same code, -m
    REKA_SYNC = [sys.executable, "-m", "reka_sync"]
# Bytecode is cached as for an installed package (pip compiles it at install); a shell
# that sets PYTHONDONTWRITEBYTECODE would make every run recompile reka_sync's modules.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["REKA_API_KEY"] = "bench"

# Peak RSS is the process's own VmHWM, written at its end to $REKA_BENCH_STATS (what
# os.wait4 reports is no use here: a child's ru_maxrss starts at the high-water mark of the
# process that forked it, the benchmark itself).
HWM = """
def _hwm():
    import json, os
    where = os.environ.get("REKA_BENCH_STATS")
    if where:
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        with open(where, "w") as out:
            json.dump({"peak_rss_kib": int(status.split()[0])}, out)
"""
# reka-sync's console script (reka_sync.cli:main), with the VmHWM note at its end.
HARNESS = (
    HWM
    + """
import sys
from reka_sync.cli import main
try:
    code = main(sys.argv[1:])
finally:
    _hwm()
sys.exit(code)
"""
)
# A whole-process walk of the tree that stats every file (the rescan baseline).
WALK = (
    HWM
    + """
import os, sys
def walk(path):
    n = 0
    with os.scandir(path) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                n += walk(entry.path)
            else:
                os.stat(entry.path, follow_symlinks=False)
                n += 1
    return n
print(walk(sys.argv[1]))
_hwm()
"""
)


# -- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    """A finished whole process, as the kernel accounted it."""

    code: int
    wall: float  # seconds, start to exit
    cpu: float  # user + sys seconds (of it and the children it waited for)
    peak_rss_mib: float | None  # its VmHWM, if it wrote it (HARNESS, WALK)
    started_at: float  # wall clock (epoch) at start
    ended_at: float  # wall clock (epoch) at exit
    out: str
    err: str


def run_proc(
    cmd: Sequence[str], stdin: Path | None = None, env: dict[str, str] | None = None
) -> Proc:
    """Run a command to its end with output to files (no pipe to drain); return its figures."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as notes,
    ):
        stats = Path(notes) / "stats.json"
        source = stdin.open("rb") if stdin is not None else subprocess.DEVNULL
        try:
            started = time.time()
            start = time.perf_counter()
            proc = subprocess.Popen(
                cmd,
                stdin=source,
                stdout=out,
                stderr=err,
                env={**(env or ENV), "REKA_BENCH_STATS": str(stats)},
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            ended = time.time()
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if stdin is not None:
                source.close()  # type: ignore[union-attr]
        out.seek(0)
        err.seek(0)
        hwm = json.loads(stats.read_text())["peak_rss_kib"] / 1024 if stats.exists() else None
        return Proc(
            proc.returncode,
            wall,
            usage.ru_utime + usage.ru_stime,
            hwm,
            started,
            ended,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def backfill(cfg: Path) -> Proc:
    cmd = [
        sys.executable,
        "-c",
        HARNESS,
        "backfill",
        "--config",
        str(cfg),
        "--log-level",
        "warning",
    ]
    done = run_proc(cmd)
    if done.code != 0:
        raise SystemExit(f"backfill failed ({done.code}):\n{done.out[-3000:]}\n{done.err[-3000:]}")
    return done


def curl_all(list_file: Path, url: str) -> Proc:
    """Upload every file named in `list_file` with `xargs -P4 curl -F`, one process per file."""
    done = run_proc(
        xargs_curl(url, WORKERS),
        stdin=list_file,
    )
    if done.code != 0:
        raise SystemExit(f"curl failed ({done.code}): {done.err[-2000:]}")
    return done


# -- trees and configs ----------------------------------------------------------------------


def write_tree(media: Path, count: int, size: int) -> list[Path]:
    """Write `count` distinct files of `size` bytes under media/{cameras/front,projects/alpha}/
    dNNNN/, PER_FOLDER to a folder; return their paths. Small files: an os.open/os.write loop
    (100k files in seconds); each file carries its number every 4 KiB, so no two are alike
    (no dedupe) and no file starts like an MP4 box (it is judged as 'other', settled at once).
    """
    paths: list[Path] = []
    if size >= 4 * MIB:
        for index in range(count):
            path = _tree_path(media, index)
            path.parent.mkdir(parents=True, exist_ok=True)
            paths.append(make_file(path, size))
        return paths
    block = bytearray(os.urandom(size))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    made: set[Path] = set()
    for index in range(count):
        path = _tree_path(media, index)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        tag = index.to_bytes(8, "little")
        for offset in range(0, max(size - 7, 1), 4096):
            block[offset : offset + 8] = tag
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, block)
        finally:
            os.close(fd)
        paths.append(path)
    return paths


def _tree_path(media: Path, index: int) -> Path:
    side = "cameras/front" if index % 2 else "projects/alpha"
    return media / side / f"d{index // (2 * PER_FOLDER):04d}" / f"clip{index:06d}.mp4"


def write_list(paths: list[Path], where: Path) -> Path:
    where.write_text("".join(f"{p}\n" for p in paths))
    return where


def config(base: Path, media: Path, url: str, tag: str, poll_interval: float | None) -> Path:
    """Write a config like bench_backfill's (settle 0, group rules, 4 workers) with a
    journal of its own; return its path."""
    upload: dict[str, Any] = {"workers": WORKERS}
    if poll_interval is not None:
        upload["poll_interval"] = poll_interval
    path = base / f"config-{tag}.toml"
    path.write_text(
        tomli_w.dumps(
            {
                "api": {"base_url": url},
                "journal": {"path": str(base / f"journal-{tag}.db")},
                "watch": {"roots": [str(media)], "settle_seconds": 0},
                "upload": upload,
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


def drop_journal(base: Path, tag: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        (base / f"journal-{tag}.db{suffix}").unlink(missing_ok=True)


# -- figures --------------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """Median, and min-max when there are several."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(med(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def rss(proc: Proc) -> float:
    """Return the peak RSS (MiB) a process noted (backfills and the walk do)."""
    if proc.peak_rss_mib is None:
        raise SystemExit("the process did not note its peak RSS")
    return proc.peak_rss_mib


def rss_spread(procs: Sequence[Proc]) -> str:
    if any(p.peak_rss_mib is None for p in procs):
        return "n/a"
    return f"{spread([rss(p) for p in procs], '{:.0f}')} MiB"


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


@dataclass
class UploadRun:
    proc: Proc
    span: float  # sink: first byte of the first upload to the last 202
    uploads: int
    lead: float  # the process's start to the first byte of the first upload
    tail: float  # last 202 to the process's exit
    connections: int
    sink_cpu: float


def against_sink(sink: SinkProcess, start: Any) -> UploadRun:
    """Reset the sink, run `start()` (returns a Proc), return it with the sink's figures.

    Dirty pages are written out first (os.sync, outside the measured span): the tree a test
    has just written, and earlier runs' journals, would otherwise be written back during
    the span, and on ext4 a journal's fdatasync waits behind that writeback while curl's
    reads do not. A library that is backed up has long been on disk."""
    os.sync()
    sink.reset()
    cpu0 = sink.cpu_seconds()
    proc = start()
    stats = sink.stats()
    if stats["span"] is None:
        raise SystemExit("nothing was uploaded")
    return UploadRun(
        proc,
        float(stats["span"]),
        int(stats["uploads"]),
        float(stats["first_byte_at"]) - proc.started_at,
        proc.ended_at - float(stats["last_accepted_at"]),
        int(stats["connections"]),
        sink.cpu_seconds() - cpu0,
    )


def emulator_span(emu: EmulatorProcess, since: int) -> tuple[float, int]:
    """Return the emulator's upload span (first upload arrived to last 202) and the number
    of uploads stored, over its request log from entry `since` on."""
    log = httpx.get(f"{emu.url}/_emulator/requests", timeout=60).json()["results"][since:]
    ups = [e for e in log if (e["method"], e["path"], e["status"]) == ("POST", "/v2/videos", 202)]
    if not ups:
        raise SystemExit("nothing was uploaded to the emulator")
    return max(e["done"] for e in ups) - min(e["at"] for e in ups), len(ups)


def log_length(emu: EmulatorProcess) -> int:
    return len(httpx.get(f"{emu.url}/_emulator/requests", timeout=60).json()["results"])


# -- small and large: reka-sync vs curl on the same sink ------------------------------------


def transfer(count: int, size: int, rounds: int, poll: float | None, emulator: bool) -> None:
    total = count * size
    what = f"{count} x {size // KIB} KiB" if size < MIB else f"{count} x {size // MIB} MiB"
    print(f"== {what}, {WORKERS} workers, {rounds} interleaved pairs, against the sink")
    with tempfile.TemporaryDirectory(prefix="reka-scale-") as tmp:
        base = Path(tmp)
        media = base / "media"
        start = time.perf_counter()
        paths = write_tree(media, count, size)
        listing = write_list(paths, base / "files.txt")
        print(f"   tree written in {time.perf_counter() - start:.1f}s under {base}")
        curls: list[UploadRun] = []
        ours: list[UploadRun] = []
        with SinkProcess() as sink:
            # warm-up: one curl pass reads every file into the page cache and wakes the sink
            against_sink(sink, lambda: curl_all(listing, sink.url))
            for index in range(rounds):
                curls.append(against_sink(sink, lambda: curl_all(listing, sink.url)))
                cfg = config(base, media, sink.url, f"r{index}", poll)
                run = against_sink(sink, lambda cfg=cfg: backfill(cfg))
                if run.uploads != count:
                    raise SystemExit(f"backfill sent {run.uploads} uploads for {count} files")
                ours.append(run)
                drop_journal(base, f"r{index}")
        _print_transfer(count, total, curls, ours, size < MIB)
        if emulator:
            _emulator_check(base, media, listing, count, total, poll)


def _print_transfer(
    count: int, total: int, curls: list[UploadRun], ours: list[UploadRun], small: bool
) -> None:
    def row(label: str, runs: list[UploadRun]) -> None:
        rate = [count / r.span for r in runs]
        mib = [total / MIB / r.span for r in runs]
        print(
            f"   {label:22} transfer {spread([r.span for r in runs])}s"
            f"  {spread(rate, '{:.0f}')} files/s  {spread(mib, '{:.0f}')} MiB/s"
        )
        print(
            f"   {'':22} whole    {spread([r.proc.wall for r in runs])}s"
            f"  cpu {spread([r.proc.cpu for r in runs])}s"
            f"  ({spread([1000 * r.proc.cpu / count for r in runs])} ms/file)"
            f"  peak RSS {rss_spread([r.proc for r in runs])}"
            f"  first byte {spread([r.lead for r in runs])}s after start,"
            f" exit {spread([r.tail for r in runs])}s after the last 202"
            f"  connections {runs[-1].connections}  sink cpu {spread([r.sink_cpu for r in runs])}s"
        )

    row(f"xargs -P{WORKERS} curl -F", curls)
    row("reka-sync backfill", ours)
    speed = [c.span / o.span for c, o in zip(curls, ours, strict=True)]
    whole = [c.proc.wall / o.proc.wall for c, o in zip(curls, ours, strict=True)]
    if small:
        print(
            f"   files/s, reka-sync / curl (transfer span):   {spread(speed)}x"
            f"   target >= 1.5x: {verdict(med(speed) >= 1.5)}"
        )
        print(
            f"   whole command, curl wall / reka-sync wall:   {spread(whole)}x"
            f"   target >= 1.0x: {verdict(med(whole) >= 1.0)}"
        )
    else:
        print(
            f"   throughput, reka-sync / curl (transfer span): {spread(speed)}x"
            f"   target >= 1.0x: {verdict(med(speed) >= 1.0)}"
        )
        print(
            f"   whole command, curl wall / reka-sync wall:    {spread(whole)}x"
            f"   target >= 0.5x (within 2x): {verdict(med(whole) >= 0.5)}"
        )


def _emulator_check(
    base: Path, media: Path, listing: Path, count: int, total: int, poll: float | None
) -> None:
    """Once each against the emulator (subprocess, blobs in RAM): is it the bottleneck?"""
    emu = EmulatorProcess(base / "emu")
    try:
        curl = curl_all(listing, emu.url)
        curl_span, stored = emulator_span(emu, 0)
        if stored != count:
            raise SystemExit(f"curl stored {stored} of {count} on the emulator")
        emu.delete_all()
        since = log_length(emu)
        ours = backfill(config(base, media, emu.url, "emu", poll))
        our_span, stored = emulator_span(emu, since)
        if stored != count:
            raise SystemExit(f"backfill stored {stored} of {count} on the emulator")
        emu_rss = emu.peak_rss_mib()
    finally:
        emu.stop()
    print("== the same once against the emulator (reka-sync emulator, blobs in /dev/shm)")
    print(
        f"   xargs -P{WORKERS} curl -F      transfer {curl_span:.2f}s"
        f"  {count / curl_span:.0f} files/s  {total / MIB / curl_span:.0f} MiB/s"
        f"  whole {curl.wall:.2f}s"
    )
    print(
        f"   reka-sync backfill     transfer {our_span:.2f}s"
        f"  {count / our_span:.0f} files/s  {total / MIB / our_span:.0f} MiB/s"
        f"  whole {ours.wall:.2f}s"
    )
    print(
        f"   ratio (transfer) {curl_span / our_span:.2f}x, whole {curl.wall / ours.wall:.2f}x;"
        f" emulator peak RSS {emu_rss:.0f} MiB. If curl is much slower here than against the"
        " sink, the emulator is the bottleneck for curl."
    )


# -- many: files/s, CPU per file, peak RSS over 1k, 10k, 100k -------------------------------


def many(counts: list[int], poll: float | None) -> None:
    print(f"== many 1 KiB files, {WORKERS} workers, one backfill each against the sink")
    rows: list[tuple[int, Proc, UploadRun, int]] = []
    with SinkProcess() as sink:
        for count in counts:
            with tempfile.TemporaryDirectory(prefix="reka-scale-") as tmp:
                base = Path(tmp)
                media = base / "media"
                start = time.perf_counter()
                write_tree(media, count, KIB)
                made = time.perf_counter() - start
                cfg = config(base, media, sink.url, "many", poll)
                run = against_sink(sink, lambda cfg=cfg: backfill(cfg))
                if run.uploads != count:
                    raise SystemExit(f"backfill sent {run.uploads} uploads for {count} files")
                journal = sum(
                    p.stat().st_size for p in base.glob("journal-many.db*") if p.is_file()
                )
                rows.append((count, run.proc, run, journal))
                proc = run.proc
                print(
                    f"   {count:>7} files: {proc.wall:8.1f}s  {count / proc.wall:6.0f} files/s end"
                    f" to end ({count / run.span:.0f}/s transfer)  cpu {proc.cpu:7.1f}s"
                    f" = {1000 * proc.cpu / count:5.2f} ms/file  peak RSS"
                    f" {rss(proc):5.0f} MiB  journal {journal / MIB:.0f} MiB"
                    f"  first byte after {run.lead:.1f}s, exit {run.tail:.1f}s after the last 202"
                    f"  (tree {made:.1f}s)",
                    flush=True,
                )
    first = rows[0]
    print(
        "   targets: >= 400 files/s, <= 2 ms CPU/file, peak RSS < 100 MiB and within 15% of"
        f" the {first[0]}-file run"
    )
    for count, proc, _, _ in rows:
        growth = rss(proc) / rss(first[1])
        ok = (
            count / proc.wall >= 400
            and proc.cpu / count <= 0.002
            and rss(proc) < 100
            and growth <= 1.15
        )
        print(
            f"   {count:>7}: {count / proc.wall:.0f} files/s, {1000 * proc.cpu / count:.2f} ms"
            f" CPU/file, RSS {rss(proc):.0f} MiB = {growth:.2f}x the {first[0]}-file"
            f" run: {verdict(ok)}"
        )


# -- rescan and status: a 100k-file tree with its journal -----------------------------------


def prepared(workdir: Path | None, count: int, poll: float | None) -> tuple[Path, Path, Any]:
    """Return (base, config) of a tree of `count` 1 KiB files backed up once against a sink,
    built now or reused from `workdir`; and the sink (still running: the caller stops it)."""
    base = workdir or Path(tempfile.mkdtemp(prefix="reka-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    marker = base / "prepared.json"
    media = base / "media"
    sink = SinkProcess()
    cfg = config(base, media, sink.url, "first", poll)  # the same journal, a new sink URL
    if marker.exists() and json.loads(marker.read_text()).get("count") == count:
        print(f"   reusing the tree and journal of {count} files in {base}")
        # the sink is new: the groups cached in the journal are unknown to it, which a
        # second backfill with nothing to send never asks about
        return base, cfg, sink
    if media.exists():
        shutil.rmtree(media)
    drop_journal(base, "first")
    start = time.perf_counter()
    write_tree(media, count, KIB)
    print(f"   tree of {count} files written in {time.perf_counter() - start:.1f}s under {base}")
    first = backfill(cfg)
    print(
        f"   first backfill: {first.wall:.1f}s, {count / first.wall:.0f} files/s,"
        f" peak RSS {rss(first):.0f} MiB",
        flush=True,
    )
    marker.write_text(json.dumps({"count": count}))
    return base, cfg, sink


def rescan(workdir: Path | None, count: int, rounds: int, poll: float | None) -> None:
    print(f"== rescan: a second backfill over {count} unchanged files vs a stat walk")
    base, cfg, sink = prepared(workdir, count, poll)
    try:
        media = base / "media"
        walk = [sys.executable, "-c", WALK, str(media)]
        warm = run_proc(walk)  # warm cache for both
        if int(warm.out.strip()) != count:
            raise SystemExit(f"the walk found {warm.out.strip()} files, not {count}")
        backfill(cfg)  # warm-up
        sink.reset()
        walks, ours = [], []
        for _ in range(rounds):
            walks.append(run_proc(walk))
            ours.append(backfill(cfg))
        sent = sink.stats()["uploads"]
    finally:
        sink.stop()
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    ratio = [o.wall / w.wall for w, o in zip(walks, ours, strict=True)]
    print(
        f"   os.scandir+stat walk (python -c): {spread([w.wall for w in walks], '{:.3f}')}s"
        f"  cpu {spread([w.cpu for w in walks], '{:.3f}')}s"
        f"  peak RSS {rss_spread(walks)}"
    )
    print(
        f"   reka-sync backfill (2nd):         {spread([o.wall for o in ours], '{:.3f}')}s"
        f"  cpu {spread([o.cpu for o in ours], '{:.3f}')}s"
        f"  peak RSS {rss_spread(ours)}"
        f"  uploads sent: {sent}"
    )
    most = max(rss(o) for o in ours)
    print(
        f"   backfill / walk: {spread(ratio)}x   target <= 2x: {verdict(med(ratio) <= 2)};"
        f"  RSS target < 100 MiB: {verdict(most < 100)}"
    )


def status(workdir: Path | None, count: int, rounds: int, poll: float | None) -> None:
    print(f"== status commands with {count} rows in the journal, whole processes")
    base, cfg, sink = prepared(workdir, count, poll)
    sink.stop()  # status and show never talk to the API
    try:
        one = next((base / "media").rglob("*.mp4"))
        commands = {
            "python -c pass (interpreter start)": [sys.executable, "-c", "pass"],
            "python -c 'import reka_sync.cli'": [sys.executable, "-c", "import reka_sync.cli"],
            "reka-sync status": [*REKA_SYNC, "status", "--config", str(cfg)],
            "reka-sync status --json": [*REKA_SYNC, "status", "--json", "--config", str(cfg)],
            "reka-sync show PATH": [*REKA_SYNC, "show", str(one), "--config", str(cfg)],
        }
        times: dict[str, list[Proc]] = {name: [] for name in commands}
        for name, cmd in commands.items():  # warm-up, and a check that each works
            done = run_proc(cmd)
            if done.code != 0:
                raise SystemExit(f"{name} failed ({done.code}): {done.out}\n{done.err}")
        for _ in range(rounds):  # interleaved: a drift of the machine touches every command
            for name, cmd in commands.items():
                times[name].append(run_proc(cmd))
    finally:
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    for name, runs in times.items():
        ms = [1000 * r.wall for r in runs]
        target = ""
        if name.startswith("reka-sync"):
            target = f"   target < 200 ms: {verdict(med(ms) < 200)}"
        print(
            f"   {name:36} {spread(ms, '{:.0f}')} ms"
            f"  cpu {spread([1000 * r.cpu for r in runs], '{:.0f}')} ms{target}"
        )


def idle(workdir: Path | None, count: int, seconds: float, poll: float | None) -> None:
    print(f"== `reka-sync run` idle on {count} done files, between rescans")
    base, cfg, sink = prepared(workdir, count, poll)
    text = cfg.read_text().replace(
        "settle_seconds = 0", "settle_seconds = 0\nrescan_interval = 3600"
    )
    quiet = cfg.with_name("config-idle.toml")
    quiet.write_text(text)
    proc = subprocess.Popen(
        [*REKA_SYNC, "run", "--config", str(quiet), "--log-level", "warning"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.perf_counter()
        settled = _quiet_after(proc.pid, started + 300)  # the startup rescan, then quiet
        before, start = _cpu(proc.pid), time.perf_counter()
        time.sleep(seconds)  # the measurement window itself
        used, wall = _cpu(proc.pid) - before, time.perf_counter() - start
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = int(status.split("VmHWM:")[1].split()[0]) / 1024
        now = int(status.split("VmRSS:")[1].split()[0]) / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        sink.stop()
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    share = 100 * used / wall
    print(f"   startup (watches and the first rescan) took {settled - started:.1f}s")
    print(
        f"   idle: {share:.2f}% of one core over {wall:.0f}s"
        f"   target < 0.5%: {verdict(share < 0.5)}"
    )
    print(f"   RSS {now:.0f} MiB, peak {hwm:.0f} MiB   target < 100 MiB: {verdict(hwm < 100)}")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quiet_after(pid: int, deadline: float) -> float:
    """Wait until the process uses under 5% of a core over a second; return when."""
    last = _cpu(pid)
    while time.perf_counter() < deadline:
        time.sleep(1.0)  # a one-second window of the CPU meter
        now = _cpu(pid)
        if now - last < 0.05:
            return time.perf_counter()
        last = now
    raise SystemExit("`run` did not settle down within the deadline")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["small", "large", "many", "rescan", "status", "idle"])
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--counts", default="1000,10000,100000")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--poll-interval", type=float, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--no-emulator", action="store_true", help="small: skip the run against the emulator"
    )
    args = parser.parse_args(argv)
    poll = args.poll_interval
    source = subprocess.run(
        [sys.executable, "-c", "import reka_sync; print(reka_sync.__file__)"],
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(
        f"reka-sync: {' '.join(REKA_SYNC)} (code: {Path(source).parent});"
        f" upload.poll_interval"
        f" {'default' if poll is None else poll}; {os.cpu_count()} CPUs; trees under"
        f" {tempfile.gettempdir()}"
    )
    if args.mode == "small":
        transfer(args.count or 1500, 256 * KIB, args.rounds or 3, poll, not args.no_emulator)
    elif args.mode == "large":
        transfer(args.count or 16, 96 * MIB, args.rounds or 3, poll, emulator=False)
    elif args.mode == "many":
        many([int(c) for c in args.counts.split(",")], poll)
    elif args.mode == "rescan":
        rescan(args.workdir, args.count or 100_000, args.rounds or 3, poll)
    elif args.mode == "status":
        status(args.workdir, args.count or 100_000, args.rounds or 7, poll)
    else:
        idle(args.workdir, args.count or 100_000, 60.0, poll)


if __name__ == "__main__":
    main()
