"""`reka-sync reconcile` over a large account (issue 17): the listing streams, memory stays low.

  python -m tests.benchmarks.bench_reconcile                   # 100,000 videos
  python -m tests.benchmarks.bench_reconcile --videos 10000
  python -m tests.benchmarks.bench_reconcile --trace           # and where the memory goes

The emulator's data folder is seeded straight into its state.jsonl (no uploads), then the
emulator (`reka-sync emulator --data DIR`, a subprocess) replays it on start. Every video
belongs to one key, is stored ("uploaded", long ago), and is one of:

* ours (9 in 10): its description carries a complete marker of the configured instance
  (markers.render), a distinct digest each, naming a file under the root that does not
  exist here. Reconcile must class each one: all come out as orphans;
* foreign (1 in 10): no marker (no description, or words only).

reka-sync gets a config with that instance, an empty root and a journal that does not
exist yet, and `reka-sync reconcile --json` runs to its end as a whole process (through
bench_scale's HARNESS, which runs reka_sync.cli:main as the console script does, and notes
the process's VmHWM as it ends), then `reka-sync reconcile` (the text report) the same way.
Their wall time, CPU and peak RSS are printed against the target, with the peak RSS of
`python -c "import reka_sync.cli"` (the interpreter and the package, nothing done)
measured the same way in the same run as the baseline. Both reports must class every
video right (orphans == ours, foreign == the rest, nothing else), or the benchmark fails.

--trace then runs reconcile's stages (survey, report, JSON text, as cmd_reconcile does)
once more in a process of their own, printing its RSS and peak RSS after each, and once
in this process under tracemalloc, printing what each stage keeps and peaks at and the
lines of reka_sync that allocated it (slow: about 3 minutes at 100,000 videos).

Target (issue 17): peak RSS of `reka-sync reconcile` over 100,000 videos < 150 MiB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import linecache
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import asdict
from pathlib import Path

import tomli_w

from reka_sync.emulator.store import VideoRecord
from reka_sync.markers import Marker, render
from tests.benchmarks.bench_scale import ENV, HARNESS, HWM, Proc, rss, run_proc, verdict
from tests.benchmarks.common import MIB, EmulatorProcess, memory_dir, peak_rss_mib

KEY = ENV["REKA_API_KEY"]
OWNER = hashlib.sha256(KEY.encode()).hexdigest()[:16]  # as the emulator derives it
INSTANCE = "bench-host"
FOREIGN_EVERY = 10  # one video in this many has no marker
TARGET_MIB = 150.0
DIGEST_PREFIX = "xxh3-128:"
BASELINE = HWM + "\nimport reka_sync.cli\n_hwm()\n"
LINECACHE = linecache.__file__


# -- the account ----------------------------------------------------------------------------


def seed(data: Path, count: int) -> tuple[set[str], int]:
    """Given the emulator's data folder and a count, write that many stored videos of KEY
    into its state.jsonl, one line each; return the ids of ours and how many are foreign."""
    data.mkdir(parents=True, exist_ok=True)
    ours: set[str] = set()
    foreign = 0
    start = time.time() - 30 * 86400
    with (data / "state.jsonl").open("w") as log:
        for index in range(count):
            video_id = str(uuid.uuid4())
            if index % FOREIGN_EVERY == 0:
                foreign += 1
                description = None if index % (2 * FOREIGN_EVERY) else f"holiday, day {index}"
            else:
                ours.add(video_id)
                description = render(
                    Marker(
                        uuid.uuid4().hex,
                        INSTANCE,
                        50 * MIB + index,
                        1_700_000_000_000_000_000 + index * 1_000_003,
                        f"{DIGEST_PREFIX}{index:032x}",
                        f"cameras/cam{index % 40:02d}/2024-{1 + index % 12:02d}"
                        f"-{1 + index % 28:02d}/clip{index:06d}.mp4",
                    )
                )
            created = start + index * 0.01
            record = VideoRecord(
                video_id=video_id,
                owner=OWNER,
                video_name=f"clip{index:06d}.mp4",
                description=description,
                created_at=created,
                ready_at=created + 1.0,
                size=50 * MIB + index,
            )
            log.write(json.dumps({"op": "video", "data": asdict(record)}) + "\n")
    return ours, foreign


def write_config(base: Path, url: str) -> Path:
    """Given a folder and the emulator's URL, write reka-sync's config (INSTANCE, an empty
    root, a journal not made yet); return it."""
    media = base / "media"
    media.mkdir()
    path = base / "config.toml"
    path.write_text(
        tomli_w.dumps(
            {
                "api": {"base_url": url},
                "journal": {"path": str(base / "journal.db"), "instance": INSTANCE},
                "watch": {"roots": [str(media)], "settle_seconds": 0},
            }
        )
    )
    return path


# -- the runs -------------------------------------------------------------------------------


def reconcile(cfg: Path, as_json: bool = True) -> Proc:
    """Given a config, run `reka-sync reconcile --json` (or without --json: the text report)
    to its end; return its figures (stop the benchmark if it fails)."""
    command = ["reconcile", *(["--json"] if as_json else [])]
    command += ["--config", str(cfg), "--log-level", "warning"]
    done = run_proc([sys.executable, "-c", HARNESS, *command])
    if done.code != 0:
        raise SystemExit(f"reconcile failed ({done.code}):\n{done.out[-3000:]}\n{done.err[-3000:]}")
    return done


def baseline() -> Proc:
    """Run `python -c "import reka_sync.cli"`; return its figures."""
    done = run_proc([sys.executable, "-c", BASELINE])
    if done.code != 0:
        raise SystemExit(f"import reka_sync.cli failed:\n{done.err[-3000:]}")
    return done


def check(report: dict[str, object], ours: set[str], foreign: int) -> None:
    """Given reconcile's JSON report, our video ids and the foreign count, return if every
    video is classed right (ours: orphans; the rest: foreign); else stop the benchmark."""
    orphans = report["orphans"]
    assert isinstance(orphans, list)
    found = {str(o["video_id"]) for o in orphans}
    wrong = {
        name: report[name]
        for name in ("known", "adopted", "missing_remotely", "duplicates")
        if report[name]
    }
    if wrong or report["foreign"] != foreign or len(orphans) != len(ours) or found != ours:
        raise SystemExit(
            f"reconcile classed wrong: {len(orphans)} orphans ({len(found & ours)} of ours),"
            f" want {len(ours)}; foreign {report['foreign']}, want {foreign};"
            f" other classes not empty: {sorted(wrong)}"
        )
    missing_paths = sum(1 for o in orphans if not o["path"])
    if missing_paths:
        raise SystemExit(f"{missing_paths} orphans lack the path of their marker")


def check_text(out: str, ours: set[str], foreign: int) -> None:
    """Given reconcile's text report, our video ids and the foreign count, return if its
    counts are right; else stop the benchmark."""
    counts = {}
    for line in out.splitlines():
        words = line.split()
        if line.startswith("  ") and len(words) > 1 and words[1].isdigit():
            counts[words[0]] = int(words[1])
    want = {"known": 0, "adopted": 0, "missing": 0, "duplicates": 0}
    want |= {"orphans": len(ours), "foreign": foreign}
    if counts != want:
        raise SystemExit(f"reconcile's text report counts {counts}, want {want}")


# -- where the memory goes ------------------------------------------------------------------


# reconcile as the CLI runs it, stage by stage, in a process of its own, without tracing:
# its VmRSS and VmHWM (KiB) after each stage, as a JSON line.
STAGES = """
import json, sys
from pathlib import Path
from reka_sync import reconcile
from reka_sync.api import ApiClient
from reka_sync.config import load_config
from reka_sync.credentials import Secret
from reka_sync.journal import Journal

def mem(name):
    status = open("/proc/self/status").read()
    rss, hwm = (int(status.split(k + ":")[1].split()[0]) for k in ("VmRSS", "VmHWM"))
    marks.append((name, rss, hwm))

marks = []
config = load_config(Path(sys.argv[1]))
journal = Journal.open(config.journal.path)
api = ApiClient(config.api, Secret(sys.argv[2]))
mem("opened")
plan = reconcile.survey(config, journal, api)
mem("survey")
data = reconcile.report(plan, None)
mem("report")
text = json.dumps(data, indent=2)
mem("JSON text")
sys.stdout.write(text[:0])
print(json.dumps(marks))
"""


def stages(cfg: Path) -> None:
    """Given a config, run reconcile stage by stage in a process of its own (untraced); print
    its RSS and peak RSS after each stage."""
    done = subprocess.run(
        [sys.executable, "-c", STAGES, str(cfg), KEY],
        capture_output=True,
        text=True,
        check=False,
        env=ENV,
    )
    if done.returncode != 0:
        raise SystemExit(f"reconcile stage by stage failed:\n{done.stderr[-3000:]}")
    for name, now, hwm in json.loads(done.stdout.splitlines()[-1]):
        print(f"  after {name:<10} RSS {now / 1024:6.1f} MiB, peak so far {hwm / 1024:6.1f} MiB")


def trace(cfg: Path, top: int) -> None:
    """Given a config, run reconcile's survey, report and JSON text in this process under
    tracemalloc; print what each stage keeps and peaks at, and the lines that allocated it."""
    from reka_sync import reconcile as reconciling
    from reka_sync.api import ApiClient
    from reka_sync.config import load_config
    from reka_sync.credentials import Secret
    from reka_sync.journal import Journal

    config = load_config(cfg)
    journal = Journal.open(config.journal.path)
    api = ApiClient(config.api, Secret(KEY))
    tracemalloc.start(4)  # enough to see past a dataclass's __init__
    try:
        before, clock = attribute(snapshot()), time.perf_counter()
        plan = reconciling.survey(config, journal, api)
        before, clock = stage("survey: the plan", before, clock, top)
        data = reconciling.report(plan, None)
        before, clock = stage("report: the dict printed", before, clock, top)
        text = json.dumps(data, indent=2)
        stage(f"JSON text ({len(text) / MIB:.1f} MiB)", before, clock, 0)
    finally:
        tracemalloc.stop()
        api.close()
        journal.close()
    count = len(plan.orphans) + plan.foreign
    print(f"  kept per video of the listing: plan {plan_bytes(plan) / count:.0f} B (deep size)")


def snapshot() -> tracemalloc.Snapshot:
    """Return a snapshot of what is traced (the snapshots and the source lines shown left
    out)."""
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, LINECACHE)]
    )


def attribute(snap: tracemalloc.Snapshot) -> dict[str, int]:
    """Given a snapshot, return its bytes by the innermost line of reka_sync (else any) that
    allocated them."""
    found: dict[str, int] = {}
    for stat in snap.statistics("traceback"):
        frames = list(stat.traceback)
        ours = [f for f in frames if "reka_sync" in f.filename and "/emulator/" not in f.filename]
        frame = ours[-1] if ours else frames[-1]
        code = linecache.getline(frame.filename, frame.lineno).strip()
        where = f"{frame.filename.split('daemon/')[-1]}:{frame.lineno}  {code[:60]}"
        found[where] = found.get(where, 0) + stat.size
    return found


def stage(
    name: str, before: dict[str, int], clock: float, top: int
) -> tuple[dict[str, int], float]:
    """Given a stage's name, what was traced before it (by line), when it started and how
    many lines to show, print its peak and what it added (kept), by line; return what is
    traced after it, and when the next stage starts."""
    took = time.perf_counter() - clock
    current, peak = tracemalloc.get_traced_memory()
    after = attribute(snapshot()) if top else {}
    added = {k: v - before.get(k, 0) for k, v in after.items()}
    print(
        f"  {name}: traced now {current / MIB:.1f} MiB, peak during it {peak / MIB:.1f} MiB"
        f" ({took:.1f}s traced, {time.perf_counter() - clock - took:.1f}s to attribute)",
        flush=True,
    )
    for where, size in sorted(added.items(), key=lambda item: -item[1])[:top]:
        print(f"      {size / MIB:+7.1f} MiB  {where}")
    tracemalloc.reset_peak()
    return after, time.perf_counter()


def plan_bytes(plan: object) -> int:
    """Given a plan, return the bytes of every object it reaches (each counted once)."""
    seen: set[int] = set()
    total, stack = 0, [plan]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, type):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif hasattr(item, "__dict__"):
            stack.append(vars(item))
    return total


# -- figures --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=100_000, help="videos of the key (100000)")
    parser.add_argument(
        "--trace", action="store_true", help="then trace survey in-process with tracemalloc"
    )
    parser.add_argument("--top", type=int, default=8, help="lines shown per traced stage (8)")
    args = parser.parse_args(argv)
    import reka_sync

    print(
        f"reka-sync from {Path(reka_sync.__file__).parent}; {args.videos} videos of one key;"
        f" {os.cpu_count()} CPUs",
        flush=True,
    )
    with tempfile.TemporaryDirectory(dir=memory_dir(), prefix="reka-bench-reconcile-") as tmp:
        base = Path(tmp)
        start = time.perf_counter()
        ours, foreign = seed(base / "emu", args.videos)
        seeded = time.perf_counter() - start
        state = (base / "emu" / "state.jsonl").stat().st_size
        start = time.perf_counter()
        emu = EmulatorProcess(base / "emu", in_place=True)
        ready = time.perf_counter() - start
        try:
            print(
                f"  seeded state.jsonl ({state / MIB:.0f} MiB) in {seeded:.1f}s: {len(ours)} ours"
                f" (complete markers of {INSTANCE!r}, files absent), {foreign} foreign (no"
                f" marker); emulator ready in {ready:.1f}s",
                flush=True,
            )
            cfg = write_config(base, emu.url)
            base_run = baseline()
            run = reconcile(cfg)
            check(json.loads(run.out), ours, foreign)
            text_run = reconcile(cfg, as_json=False)
            check_text(text_run.out, ours, foreign)
            emu_rss = peak_rss_mib(emu.proc.pid)
            figures(run, text_run, base_run, args.videos, (len(ours), foreign), emu_rss)
            if args.trace:
                print("reconcile stage by stage, in a process of its own, untraced:", flush=True)
                stages(cfg)
                print("tracemalloc, in this process (survey, report, JSON text):", flush=True)
                trace(cfg, args.top)
        finally:
            emu.stop()


def figures(
    run: Proc, text_run: Proc, base_run: Proc, count: int, classes: tuple[int, int], emu: float
) -> None:
    """Given reconcile's runs (--json, text), the baseline's, the video count, how many are
    ours and foreign, and the emulator's peak RSS, print the figures against the target."""
    floor = rss(base_run)
    for label, done in (("reconcile --json", run), ("reconcile (text)", text_run)):
        peak = rss(done)
        print(
            f"  reka-sync {label}: wall {done.wall:5.1f}s, CPU {done.cpu:5.1f}s, peak RSS"
            f" {peak:6.1f} MiB = {peak / floor:5.2f}x the baseline, {peak - floor:6.1f} MiB above"
            f" ({(peak - floor) * MIB / count:4.0f} B per video)   target < {TARGET_MIB:.0f}"
            f" MiB: {verdict(peak < TARGET_MIB)}"
        )
    print(f"  baseline python -c 'import reka_sync.cli': peak RSS {floor:.1f} MiB")
    print(
        f"  reports: {len(run.out) / MIB:.1f} MiB of JSON, classes right in both ({classes[0]}"
        f" orphans, {classes[1]} foreign); emulator peak RSS {emu:.0f} MiB (not counted)",
        flush=True,
    )


if __name__ == "__main__":
    main()
