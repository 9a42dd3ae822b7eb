"""The bandwidth cap (`[upload] max_rate`), measured on the server side as the bytes arrive.

  python -m tests.benchmarks.bench_rate            # both parts below
  python -m tests.benchmarks.bench_rate backfill   # 8 x 64 MiB, 4 workers, max_rate "20MiB"
  python -m tests.benchmarks.bench_rate reload     # `run`, "20MiB", then "40MiB" at a SIGHUP

Options: --count N, --size-mib N, --rate, --to (the rate reloaded), --before S (seconds of
transfer at the first rate before the SIGHUP), --rounds N (reload: that many services, one
after the other, for a spread of the reload's latency), --threshold MiB/s (the reload is
"felt" when the rate passes it; default halfway between the two caps).

Everything talks to the benchmark sink (tests/benchmarks/sink.py, a subprocess) started
with --timeline: it counts each upload body's bytes at every socket read, in 100 ms bins
stamped with the wall clock, so the rate figures are what the server received, not what
the client believes it sent (socket buffers included). The transfer span is the first body
byte of the first upload to the last body byte of the last one.

backfill: `reka-sync backfill`, whole process. Printed: the rate over the span and its
ratio to the cap (target 0.9-1.1x), 1-s windows (min, median, max), and each upload's share
of the bytes received in the 100 ms bins where `workers` uploads were all under way
(target: 1/workers each, within 10%).

reload: `reka-sync run` (tests.conftest.ServiceProcess) on an empty root; the files are
renamed into it. After --before seconds of transfer the config is rewritten with the new
rate and the service gets SIGHUP. Printed: the rate before, the 1-s windows, when the
service logged "configuration reloaded" and "upload limits changed" (the moment the new
rate is handed to the throttle) after the SIGHUP, and when the rate received first passes
the threshold over a trailing 0.5 s window (target: within 2 s of the SIGHUP; the window's
own length makes this figure up to ~0.25 s late).

The code measured is whatever `import reka_sync` finds (PYTHONPATH=/other/daemon to
measure another checkout).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tomli_w

from reka_sync.throttle import parse_rate
from tests.benchmarks.common import MIB, make_file
from tests.benchmarks.sink import SinkProcess

WORKERS = 4
ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("REKA_SYNC_CONFIG", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC")
}
ENV["REKA_API_KEY"] = "bench"
TRAILING = 0.5  # seconds: the trailing window that says when a new rate is felt


# -- the server-side timeline ---------------------------------------------------------------


@dataclass
class Timeline:
    """GET /_sink/timeline: each upload body's bytes per bin, as the sink read them."""

    bin: float
    sends: list[dict[str, Any]]

    @classmethod
    def of(cls, report: dict[str, Any]) -> Timeline:
        if not report.get("enabled"):
            raise RuntimeError("the sink records no timeline: start it with --timeline")
        sends = [s for s in report["sends"] if s["first"] is not None]
        return cls(float(report["bin"]), sends)

    @property
    def first(self) -> float:
        """The wall clock of the first body byte received."""
        return min(float(s["first"]) for s in self.sends)

    @property
    def last(self) -> float:
        """The wall clock of the last body byte received."""
        return max(float(s["last"]) for s in self.sends)

    @property
    def total(self) -> int:
        return sum(int(s["bytes"]) for s in self.sends)

    def span_rate(self) -> float:
        """Bytes per second over the transfer span (first body byte to last)."""
        return self.total / (self.last - self.first)

    def bytes_between(self, start: float, end: float) -> float:
        """Bytes received in [start, end). A bin's bytes are spread evenly over the part of
        it the upload was under way (its first body byte to its last), and a window that
        cuts that part counts them pro rata."""
        got = 0.0
        for send in self.sends:
            first, last = float(send["first"]), float(send["last"])
            for at, count in send["bins"]:
                low, high = max(at, first), min(at + self.bin, last)
                if high <= low:  # the upload's only instant in this bin
                    got += count if start <= low < end else 0
                    continue
                overlap = min(end, high) - max(start, low)
                if overlap > 0:
                    got += count * overlap / (high - low)
        return got

    def rate_between(self, start: float, end: float) -> float:
        return self.bytes_between(start, end) / (end - start)

    def windows(self, width: float = 1.0) -> list[tuple[float, float]]:
        """Return (offset from the first byte, bytes/s) of consecutive windows of `width`
        seconds over the span (the last one shorter, if the span is not a multiple)."""
        rows, start, last = [], self.first, self.last
        while start < last:
            end = min(start + width, last)
            if end - start >= width / 4:
                rows.append((start - self.first, self.rate_between(start, end)))
            start += width
        return rows

    def first_above(self, since: float, threshold: float, width: float = TRAILING) -> float | None:
        """Given a time, a rate and a window length, return how long after `since` the rate
        over the trailing `width` seconds first exceeds `threshold` (None: never)."""
        end = since + self.bin
        while end <= self.last + self.bin:
            if self.rate_between(end - width, end) > threshold:
                return end - since
            end += self.bin / 2
        return None

    def shares(self, together: int) -> dict[int, tuple[float, float]]:
        """Return, per upload that ran with `together - 1` others for a while: its share of
        the bytes received in the bins where exactly `together` uploads were under way
        (from their first body byte to their last, the bin wholly inside), and for how
        many seconds that was."""
        bins: dict[float, dict[int, int]] = {}
        for send in self.sends:
            for at, count in send["bins"]:
                bins.setdefault(round(at, 3), {})[send["upload"]] = count
        mine: dict[int, float] = {}
        all_: dict[int, float] = {}
        seconds: dict[int, float] = {}
        for at, counts in bins.items():
            active = [
                s["upload"] for s in self.sends if s["first"] <= at and s["last"] >= at + self.bin
            ]
            if len(active) != together:
                continue
            total = sum(counts.get(u, 0) for u in active)
            for upload in active:
                mine[upload] = mine.get(upload, 0) + counts.get(upload, 0)
                all_[upload] = all_.get(upload, 0) + total
                seconds[upload] = seconds.get(upload, 0) + self.bin
        return {u: (mine[u] / all_[u], seconds[u]) for u in mine if all_[u] > 0}


def mib(rate: float) -> str:
    return f"{rate / MIB:.2f}"


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def log_time(line: dict[str, Any]) -> float:
    """Given a JSON log line of the service, return its timestamp (epoch)."""
    return datetime.fromisoformat(str(line["timestamp"])).timestamp()


# -- trees and configs ----------------------------------------------------------------------


def write_files(folder: Path, count: int, size: int) -> list[Path]:
    """Write `count` distinct incompressible files of `size` bytes into folder/camN/."""
    paths = []
    for index in range(count):
        path = folder / f"cam{index % WORKERS}" / f"clip{index:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        paths.append(make_file(path, size))
    return paths


def config(base: Path, media: Path, url: str, rate: str, workers: int = WORKERS) -> Path:
    path = base / "config.toml"
    path.write_text(
        tomli_w.dumps(
            {
                "api": {"base_url": url},
                "journal": {"path": str(base / "journal.db")},
                "watch": {"roots": [str(media)], "settle_seconds": 0},
                "upload": {"workers": workers, "poll_interval": 0.2, "max_rate": rate},
            }
        )
    )
    return path


# -- backfill -------------------------------------------------------------------------------


def backfill(count: int, size: int, rate: str) -> bool:
    cap = parse_rate(rate)
    assert cap, rate
    print(
        f"== backfill: {count} x {size // MIB} MiB, {WORKERS} workers, max_rate {rate!r}"
        f" ({mib(cap)} MiB/s), against the sink (server-side timeline)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="reka-rate-") as tmp, SinkProcess(True) as sink:
        base = Path(tmp)
        media = base / "media"
        write_files(media, count, size)
        cfg = config(base, media, sink.url, rate)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "reka_sync", "backfill", "--config", str(cfg)],
            capture_output=True,
            text=True,
            env=ENV,
            check=False,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"backfill failed ({done.returncode}):\n{done.stderr[-3000:]}")
        line = Timeline.of(sink.timeline())
    if len(line.sends) != count or line.total < count * size:
        raise SystemExit(f"the sink saw {len(line.sends)} uploads, {line.total} bytes")
    return report_backfill(line, cap, wall)


def report_backfill(line: Timeline, cap: int, wall: float) -> bool:
    span, rate = line.last - line.first, line.span_rate()
    ratio = rate / cap
    ok = 0.9 <= ratio <= 1.1
    print(
        f"   transfer span {span:.2f}s (first body byte to last), {line.total / MIB:.1f} MiB"
        f" received: {mib(rate)} MiB/s = {ratio:.3f}x the cap   target 0.9-1.1x: {verdict(ok)}"
    )
    rates = [r for _, r in line.windows()]
    print(
        f"   1-s windows ({len(rates)}): min {mib(min(rates))}, median"
        f" {mib(statistics.median(rates))}, max {mib(max(rates))} MiB/s;"
        f" the first 0.5 s {mib(line.rate_between(line.first, line.first + 0.5))} MiB/s"
        f" (the throttle's burst after idle); whole command {wall:.1f}s"
    )
    shares = line.shares(WORKERS)
    for send in sorted(line.sends, key=lambda s: s["upload"]):
        share, seconds = shares.get(send["upload"], (float("nan"), 0.0))
        print(
            f"   upload {send['upload']} ({send['video_name']}, connection"
            f" {send['connection']}): +{send['first'] - line.first:5.2f}s to"
            f" +{send['last'] - line.first:5.2f}s,"
            f" {mib(send['bytes'] / (send['last'] - send['first']))} MiB/s;"
            f" {share:.3f} of the bytes over {seconds:.1f}s with {WORKERS} under way"
        )
    fair = bool(shares) and all(
        abs(s * WORKERS - 1) <= 0.1 for s, seconds in shares.values() if seconds >= 1
    )
    values = [s for s, _ in shares.values()]
    if values:
        print(
            f"   fairness: shares {min(values):.3f}-{max(values):.3f} (ideal {1 / WORKERS:.3f},"
            f" target within 10%): {verdict(fair)}"
        )
    return ok and fair


# -- reload ---------------------------------------------------------------------------------


@dataclass
class Reload:
    line: Timeline
    hup: float  # wall clock of the SIGHUP
    reloaded: float | None  # "configuration reloaded" logged
    changed: float | None  # "upload limits changed" logged (the new rate set)


def reload(
    count: int, size: int, rate: str, to: str, before: float, threshold: float, rounds: int
) -> bool:
    first, second = parse_rate(rate), parse_rate(to)
    assert first and second, (rate, to)
    print(
        f"== run: {count} x {size // MIB} MiB, {WORKERS} workers, max_rate {rate!r}, rewritten"
        f" to {to!r} + SIGHUP after {before:g}s of transfer; {rounds} round(s)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="reka-rate-") as tmp:
        base = Path(tmp)
        write_files(base / "staged", count, size)
        results = [
            one_reload(base / f"r{index}", base / "staged", count, rate, to, before)
            for index in range(rounds)
        ]
    return report_reload(results, first, second, threshold)


def one_reload(work: Path, staged: Path, count: int, rate: str, to: str, before: float) -> Reload:
    """Start `run` on an empty root, rename the staged files into it; after `before` seconds
    of transfer rewrite max_rate to `to` and send SIGHUP; once every upload is in, stop the
    service and put the files back. Return the timeline and the times of the reload."""
    from tests.conftest import ServiceProcess, wait_for, with_settings

    media = work / "media"
    media.mkdir(parents=True)
    moved = [(path, media / path.relative_to(staged)) for path in sorted(staged.rglob("*.mp4"))]
    total = sum(path.stat().st_size for path, _ in moved)
    with SinkProcess(timeline=True) as sink:
        cfg = config(work, media, sink.url, rate)
        service = ServiceProcess(cfg)
        try:
            for source, target in moved:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(source, target)

            def transferred() -> bool:
                line = Timeline.of(sink.timeline())
                return bool(line.sends) and time.time() - line.first >= before

            wait_for(transferred, timeout=60, message=f"{before}s of transfer")
            with_settings(cfg, "upload", max_rate=to)
            hup = time.time()
            service.proc.send_signal(signal.SIGHUP)
            wait_for(
                lambda: sink.stats()["uploads"] >= count,
                timeout=total / (parse_rate(rate) or 1) + 60,
                message="every upload",
            )
            wait_for(lambda: service.logged("configuration reloaded"), timeout=30, message="reload")
            line = Timeline.of(sink.timeline())
        finally:
            code = service.stop()
            for source, target in moved:
                if target.exists():
                    os.rename(target, source)
    if code != 0:
        raise SystemExit(f"the service exited {code}: {service.lines[-5:]}")
    return Reload(
        line,
        hup,
        first_logged(service.lines, "configuration reloaded", hup),
        first_logged(service.lines, "upload limits changed", hup),
    )


def first_logged(lines: list[dict[str, Any]], event: str, since: float) -> float | None:
    """Given the service's JSON log lines, an event and a time, return when the event was
    first logged at or after that time (None: not logged)."""
    times = [log_time(x) for x in lines if x.get("event") == event]
    later = [t for t in times if t >= since - 0.05]  # log stamps round to the microsecond
    return min(later) if later else None


def report_reload(results: list[Reload], first: int, second: int, threshold: float) -> bool:
    ok = True
    felt: list[float] = []
    for index, run in enumerate(results):
        line, hup = run.line, run.hup
        pre = line.rate_between(line.first, hup)
        steady = line.rate_between(line.first + 0.5, hup)
        post = line.rate_between(hup + 2, line.last) if line.last > hup + 2.5 else float("nan")
        after = line.first_above(hup, threshold)
        print(
            f" round {index + 1}: SIGHUP at +{hup - line.first:.2f}s of transfer;"
            f" {line.total / MIB:.0f} MiB over {line.last - line.first:.2f}s"
        )
        print(
            f"   before the SIGHUP: {mib(pre)} MiB/s = {pre / first:.3f}x the first cap"
            f" (without the first 0.5 s: {mib(steady)} MiB/s = {steady / first:.3f}x)"
        )
        for event, at in (
            ("configuration reloaded", run.reloaded),
            ("upload limits changed", run.changed),
        ):
            said = f"+{at - hup:.2f}s" if at is not None else "never"
            print(f"   {event!r} logged {said} after the SIGHUP")
        met = after is not None and after <= 2.0
        ok = ok and met
        if after is not None:
            felt.append(after)
        when = f"+{after:.2f}s" if after is not None else "never"
        print(
            f"   rate > {mib(threshold)} MiB/s (trailing {TRAILING:g} s) first"
            f" {when} after the SIGHUP"
            f"   target <= 2 s: {verdict(met)}"
        )
        print(
            f"   from SIGHUP + 2 s to the last byte: {mib(post)} MiB/s ="
            f" {post / second:.3f}x the new cap"
        )
        print("   1-s windows from the first byte (MiB/s):")
        rows = line.windows()
        for start, rate in rows:
            mark = "  <- SIGHUP" if start <= hup - line.first < start + 1 else ""
            print(f"     +{start:5.1f}s  {mib(rate):>6}{mark}")
    if len(results) > 1 and felt:
        print(
            f"   the new rate felt after the SIGHUP: median {statistics.median(felt):.2f}s,"
            f" {min(felt):.2f}-{max(felt):.2f}s over {len(felt)} rounds"
        )
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=("backfill", "reload", "all"), default="all")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rate", default="20MiB")
    parser.add_argument("--to", default="40MiB")
    parser.add_argument("--before", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=None, help="MiB/s")
    args = parser.parse_args(argv)
    import reka_sync

    print(f"reka_sync from {Path(reka_sync.__file__).parent}")
    size = args.size_mib * MIB
    ok = True
    if args.mode in ("backfill", "all"):
        ok = backfill(args.count, size, args.rate) and ok
    if args.mode in ("reload", "all"):
        first, second = parse_rate(args.rate) or 0, parse_rate(args.to) or 0
        threshold = args.threshold * MIB if args.threshold else (first + second) / 2
        ok = (
            reload(args.count, size, args.rate, args.to, args.before, threshold, args.rounds) and ok
        )
    print("all targets met" if ok else "some targets MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
