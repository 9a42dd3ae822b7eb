"""Emulator throughput and memory: curl into the emulator vs curl into a raw socket sink,
and the reka-sync client into the emulator, one 1 GiB upload each, plus peak RSS of both
processes. Run: python tests/benchmarks/bench_emulator.py [SIZE_MIB]"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from tests.benchmarks.common import MIB, EmulatorProcess, RawSink, curl_upload, make_file

ROUNDS = 3
CLIENT = """
import sys, time
from pathlib import Path
from reka_sync.api import ApiClient
from reka_sync.config import ApiConfig
from reka_sync.credentials import Secret
from tests.benchmarks.common import peak_rss_mib
import os
path = Path(sys.argv[2])
client = ApiClient(ApiConfig(base_url=sys.argv[1]), Secret("bench"))
start = time.perf_counter()
client.upload_file(path, video_name=path.name, size=path.stat().st_size)
print(time.perf_counter() - start, peak_rss_mib(os.getpid()))
"""


def main() -> None:
    size = int(sys.argv[1]) * MIB if len(sys.argv) > 1 else 1024 * MIB
    with tempfile.TemporaryDirectory() as tmp:
        path = make_file(Path(tmp) / "big.mp4", size)
        sink = RawSink()
        emu = EmulatorProcess(Path(tmp) / "emu")
        try:
            sink_runs, emu_runs, client_runs, client_rss = [], [], [], 0.0
            for _ in range(ROUNDS):  # interleaved, so page-cache writeback hits all alike
                sink_runs.append(curl_upload(f"http://127.0.0.1:{sink.port}", path))
                emu_runs.append(curl_upload(emu.url, path))
                emu.delete_all()
                out = subprocess.run(
                    [sys.executable, "-c", CLIENT, emu.url, str(path)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()
                client_runs.append(float(out[0]))
                client_rss = max(client_rss, float(out[1]))
                emu.delete_all()
            sink_s, emu_s, client_s = min(sink_runs), min(emu_runs), min(client_runs)
            emu_rss = emu.peak_rss_mib()
        finally:
            emu.stop()
    mib = size / MIB
    print(f"upload of {mib:.0f} MiB, best of {ROUNDS} interleaved rounds")
    print(f"  curl -> raw socket sink : {mib / sink_s:8.0f} MiB/s (baseline)")
    print(f"  curl -> emulator        : {mib / emu_s:8.0f} MiB/s  ratio {sink_s / emu_s:.2f}")
    print(
        f"  reka-sync -> emulator   : {mib / client_s:8.0f} MiB/s  ratio to curl->emulator "
        f"{emu_s / client_s:.2f}"
    )
    print(
        f"  peak RSS: emulator {emu_rss:.0f} MiB, reka-sync client {client_rss:.0f} MiB "
        f"(target < 100 MiB each)"
    )


if __name__ == "__main__":
    main()
