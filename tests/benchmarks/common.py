"""Helpers for the benchmarks: a raw socket sink, an emulator subprocess, process memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

MIB = 1024 * 1024


def make_file(path: Path, size: int) -> Path:
    """Write `size` bytes of incompressible data (a random MiB repeated with a counter)."""
    block = os.urandom(MIB)
    with path.open("wb") as handle:
        for index in range(size // MIB):
            handle.write(index.to_bytes(8, "little") + block[8:])
        handle.write(block[: size % MIB])
    return path


class RawSink:
    """The fastest receiver we can write: read Content-Length bytes, answer 200, no parsing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = bytearray(MIB)
        with conn:
            while True:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                header, _, rest = head.partition(b"\r\n\r\n")
                length = 0
                for line in header.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                    if line.lower().startswith(b"expect: 100-continue"):
                        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                left = length - len(rest)
                while left > 0:
                    got = conn.recv_into(buffer, min(left, MIB))
                    if not got:
                        return
                    left -= got
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")


def memory_dir() -> str | None:
    """Return a RAM-backed folder for the emulator's blobs if there is one (/dev/shm)."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class EmulatorProcess:
    """`reka-sync emulator` as a subprocess on a free port.

    Its blobs go to RAM (/dev/shm) when possible, so disk writeback of what it stores
    does not decide the figures of the client under test.
    """

    def __init__(self, data: Path, *extra: str, in_place: bool = False) -> None:
        """Given a data folder's name (or, `in_place`, a folder seeded already, used as it
        is) and more emulator flags, start the emulator and wait until it serves."""
        self._tmp = tempfile.TemporaryDirectory(dir=memory_dir(), prefix="reka-bench-")
        data = data if in_place else Path(self._tmp.name) / data.name
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reka_sync",
                "emulator",
                "--port",
                "0",
                "--data",
                str(data),
                "--processing-delay",
                "0.2",
                *extra,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once a seeded state is replayed
        if " on " not in line:
            self.proc.kill()
            raise SystemExit(f"the emulator did not start: {line!r}")
        self.url = line.split(" on ")[1].split()[0]

    def peak_rss_mib(self) -> float:
        return peak_rss_mib(self.proc.pid)

    def records(self) -> list[dict[str, object]]:
        return list(httpx.get(f"{self.url}/_emulator/videos").json()["results"])

    def delete_all(self) -> None:
        """Delete every stored video, so blobs do not pile up between rounds."""
        with httpx.Client(base_url=self.url, headers={"X-Api-Key": "bench"}) as client:
            for record in self.records():
                client.delete(f"/v2/videos/{record['video_id']}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._tmp.cleanup()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def xargs_curl(url: str, workers: int) -> list[str]:
    """Return `xargs -P<workers> curl -F` that uploads each file named on stdin, one curl
    process per file (the text fields first, as reka-sync sends them)."""
    return [
        "xargs",
        "-P",
        str(workers),
        "-I{}",
        "curl",
        "-sS",
        "-f",
        "-o",
        "/dev/null",
        "-H",
        "X-Api-Key: bench",
        "-H",
        "Expect:",
        "-F",
        "video_name=clip",
        "-F",
        "file=@{}",
        f"{url}/v2/videos",
    ]


def curl_upload(url: str, path: Path, key: str = "bench") -> float:
    """Upload with curl -F; return the seconds it took."""
    start = time.perf_counter()
    subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-H",
            f"X-Api-Key: {key}",
            "-H",
            "Expect:",
            "-F",
            f"file=@{path}",
            "-F",
            f"video_name={path.name}",
            f"{url}/v2/videos",
        ],
        check=True,
    )
    return time.perf_counter() - start
