"""`reka-sync run` as systemd sees it: sd_notify, SIGTERM mid-upload, SIGHUP reloads.

The daemon is a subprocess; NOTIFY_SOCKET points at a datagram socket the test owns.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import (
    API_KEY,
    PYTHON,
    ServiceProcess,
    assert_uploaded_exactly_once,
    cli_env,
    emulator_records,
    engine_config,
    make_tree,
    report_json,
    run_backfill,
    set_faults,
    wait_for,
)
from tests.test_watches import inotify_watches

GIB = 1 << 30


def sender_pid(ancillary: list[tuple[int, int, bytes]]) -> int:
    """Given recvmsg's ancillary data, return the sender's pid from SCM_CREDENTIALS."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return int(struct.unpack("iII", data[:12])[0])
    return 0


class NotifyListener:
    """The systemd end of NOTIFY_SOCKET: collects each message as a dict of its fields."""

    def __init__(self, path: Path, journal: Path) -> None:
        self.path = path
        self.journal = journal
        self.messages: list[dict[str, str]] = []
        self.at_ready: dict[str, Any] = {}
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # as systemd does
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data, ancillary, _, _ = self._sock.recvmsg(65536, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            if "READY" in fields and not self.at_ready:
                self.at_ready = self._look_at(sender_pid(ancillary))
            self.messages.append(fields)

    def _look_at(self, pid: int) -> dict[str, Any]:
        """What is true the instant READY=1 arrives: watches placed, migrations applied."""
        with sqlite3.connect(self.journal) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        return {"pid": pid, "watches": inotify_watches(pid), "tables": tables}

    def kinds(self) -> list[str]:
        order = ("READY", "STOPPING", "RELOADING", "WATCHDOG", "STATUS")
        return [next(k for k in order if k in m) for m in list(self.messages)]

    def statuses(self) -> list[str]:
        return [m["STATUS"] for m in list(self.messages) if "STATUS" in m]

    def close(self) -> None:
        self._closed.set()
        self._sock.close()


def test_systemd_hears_ready_then_status_and_watchdog_then_stopping(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    (media / "cameras" / "door").mkdir(parents=True)
    config = engine_config(tmp_path, media, emu.url, settle_seconds=1)
    listener = NotifyListener(tmp_path / "notify.sock", tmp_path / "journal.db")
    try:
        service = ServiceProcess(config, NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="2000000")
        wait_for(lambda: listener.at_ready, timeout=30, message="READY=1")
        (media / "cameras" / "door" / "visit.mp4").write_bytes(os.urandom(50_000))
        wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=60, message="the upload")
        wait_for(
            lambda: any("done 1" in s for s in listener.statuses()),
            timeout=60,
            message="a STATUS line with the upload counted",
        )
        assert service.stop() == 0
        wait_for(lambda: "STOPPING" in listener.kinds(), timeout=10, message="STOPPING=1")
    finally:
        listener.close()
    kinds = listener.kinds()
    assert kinds[0] == "READY", kinds
    assert kinds.count("READY") == 1
    assert kinds.count("WATCHDOG") >= 2
    assert kinds[-1] == "STOPPING" and kinds.count("STOPPING") == 1, kinds
    stopping = listener.messages[-1]
    assert int(stopping["EXTEND_TIMEOUT_USEC"]) > 0
    assert listener.at_ready["pid"] == service.proc.pid
    assert listener.at_ready["watches"] == 3, "root, cameras, cameras/door watched before READY"
    assert {"files", "events", "progress"} <= listener.at_ready["tables"]


def test_sigterm_mid_upload_exits_0_fast_and_the_file_goes_up_once_after_restart(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    big = media / "big.mp4"
    with big.open("wb") as handle:
        handle.write(os.urandom(1 << 20))
        handle.truncate(GIB)
    set_faults(emu.url, [{"kind": "slow_body", "bytes_per_second": 40_000_000}])
    config = engine_config(tmp_path, media, emu.url, settle_seconds=0.5)
    service = ServiceProcess(config)

    def sent() -> int:
        report = report_json("status", config) or {"in_flight": []}
        return sum(job.get("sent_bytes", 0) for job in report["in_flight"])

    wait_for(lambda: sent() > 64 << 20, timeout=60, message="64 MiB of the upload sent")
    started = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    code = service.proc.wait(timeout=30)
    took = time.monotonic() - started
    assert code == 0
    assert took < 5, f"stopping took {took:.1f}s"
    shown = report_json("show", config, str(big))
    # Re-queued: released to retry_wait, due at once, the attempt given back.
    assert shown is not None and shown["state"] == "retry_wait", shown
    assert shown["attempts"] == 0, "a cancelled upload spends no attempt"
    assert "cancelled" in shown["last_error"] and not shown["outcome_unknown"]
    assert shown["next_attempt_at"] <= time.time()
    assert emulator_records(emu.url) == []
    set_faults(emu.url, [])
    again = ServiceProcess(config)
    try:
        wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=120, message="the upload")
    finally:
        assert again.stop() == 0
    assert_uploaded_exactly_once(emu.url, {str(big): "Inbox"})


def test_sighup_refuses_a_bad_config_then_adds_a_root_and_a_rule(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url, settle_seconds=1)
    second = tmp_path / "second"
    (second / "shows" / "tides").mkdir(parents=True)
    data = tomllib.loads(config.read_text())
    service = ServiceProcess(config)
    try:
        data["upload"]["workers"] = 0
        config.write_text(tomli_w.dumps(data))
        service.proc.send_signal(signal.SIGHUP)
        refused = "configuration not reloaded; the one in use stays. Fix these, then reload again"
        wait_for(lambda: service.logged(refused), timeout=30, message="the refusal")
        [line] = [line for line in service.lines if line.get("event") == refused]
        assert any(p.startswith("upload.workers:") for p in line["problems"]), line
        before = media / "before.mp4"
        before.write_bytes(os.urandom(40_000))
        wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=60, message="before.mp4")

        data["upload"]["workers"] = 2
        data["watch"]["roots"].append(str(second))
        data["groups"]["rules"].append({"match": "shows/{show}/**", "group": "Show {show}"})
        config.write_text(tomli_w.dumps(data))
        service.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: service.logged("configuration reloaded"), timeout=30, message="reload")
        episode = second / "shows" / "tides" / "ep1.mp4"
        episode.write_bytes(os.urandom(45_000))
        wait_for(lambda: len(emulator_records(emu.url)) == 2, timeout=60, message="ep1.mp4")
        wait_for(
            lambda: (report_json("show", config, str(episode)) or {}).get("state") == "done",
            timeout=60,
            message="ep1.mp4 filed",
        )
    finally:
        assert service.stop() == 0
    assert_uploaded_exactly_once(emu.url, {str(before): "Inbox", str(episode): "Show tides"})


def test_logs_carry_file_context_and_journald_gets_priority_prefixes(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    clip = media / "clip.mp4"
    clip.write_bytes(os.urandom(30_000))
    (media / "gone.mp4").write_bytes(os.urandom(30_000))
    set_faults(emu.url, [{"kind": "server_error", "count": 1, "scope": "upload"}])
    config = engine_config(tmp_path, media, emu.url)
    log_file = tmp_path / "stderr.log"
    with log_file.open("w") as stderr:
        st = os.fstat(stderr.fileno())
        done = subprocess.run(
            [PYTHON, "-m", "reka_sync", "backfill", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=cli_env(REKA_API_KEY=API_KEY, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"),
            timeout=120,
            check=False,
        )
    assert done.returncode == 0
    lines = log_file.read_text().splitlines()
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), lines
    failed = [line for line in lines if "upload step failed" in line]
    assert failed and failed[0].startswith("<6>")
    assert "request_id=" in failed[0] and "path=" in failed[0] and "job=" in failed[0]
    uploaded = [line for line in lines if "] uploaded " in line or " uploaded " in line]
    assert len(uploaded) == 2, lines
    assert not any(re.search(r"\d{4}-\d\d-\d\dT\d\d:", line) for line in lines), "no timestamps"

    report = run_backfill(config, "--log-format", "json")  # nothing left to do: a quiet run
    assert report.returncode == 0
    assert all(json.loads(line) for line in report.stderr.splitlines())


def test_the_key_appears_nowhere_after_faults_failures_and_every_command(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    expected = make_tree(media, 12, size=20_000)
    set_faults(
        emu.url,
        [
            {"kind": "server_error", "rate": 0.3},
            {"kind": "drop_after_store", "rate": 0.2},
            {"kind": "rate_limit", "count": 1, "seconds": 1},
            {"kind": "processing_failure", "count": 2},
        ],
        seed=7,
    )
    config = engine_config(tmp_path, media, emu.url, settle_seconds=0.5, max_attempts=2)
    service = ServiceProcess(config, "--log-level", "debug")
    try:
        settled = wait_for(
            lambda: (s := report_json("status", config)) and _settled(s, len(expected)) and s,
            timeout=120,
            message="every file done or failed",
        )
        assert settled["counts"]["failed"] >= 1, "no failure was exercised"
        outputs = [reka(command, config) for command in EVERY_COMMAND]
        outputs.append(reka(("show", next(iter(expected)), "--json"), config))
        outputs.append(reka(("rules", next(iter(expected))), config))
        outputs.append(reka(("doctor",), config, key="a-wrong-key-12345"))
        service.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: service.logged("configuration reloaded"), timeout=30, message="reload")
    finally:
        assert service.stop() == 0
    texts = [*outputs, json.dumps(service.lines)]
    assert any("upload step failed" in text for text in texts)
    for secret in (API_KEY, "a-wrong-key-12345"):
        for text in texts:
            assert secret not in text
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


EVERY_COMMAND = [
    ("status",),
    ("status", "--json"),
    ("retry", "--all-failed"),
    ("check-config",),
    ("doctor",),
    ("doctor", "--json"),
    ("backfill",),
    ("backfill", "--dry-run", "--json"),
]


def _settled(report: dict[str, Any], files: int) -> bool:
    counts = report["counts"]
    return bool(counts["done"] + counts["failed"] + counts["skipped"] == files)


def reka(args: tuple[str, ...], config: Path, key: str = API_KEY) -> str:
    """Run a reka-sync command with the key in its environment; return all it printed."""
    done = subprocess.run(
        [PYTHON, "-m", "reka_sync", *args, "--config", str(config), "--log-level", "debug"],
        capture_output=True,
        text=True,
        env=cli_env(REKA_API_KEY=key),
        timeout=300,
        check=False,
    )
    return f"{args} exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def test_sigterm_while_the_server_stalls_still_exits_fast_and_nothing_is_lost(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    clip = media / "clip.mp4"
    clip.write_bytes(os.urandom(64 << 20))
    # The server sits on the request for a minute without reading the body: our writes block.
    set_faults(emu.url, [{"kind": "latency", "seconds": 60, "count": 1, "scope": "upload"}])
    config = engine_config(tmp_path, media, emu.url, settle_seconds=0.5)
    service = ServiceProcess(config)
    wait_for(
        lambda: (report_json("show", config, str(clip)) or {}).get("state") == "uploading",
        timeout=60,
        message="the upload to start",
    )
    started = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    code = service.proc.wait(timeout=30)
    took = time.monotonic() - started
    assert code == 0
    assert took < 5, f"stopping took {took:.1f}s"
    assert service.logged("a step is stuck in a network call; the next start settles it")
    set_faults(emu.url, [])
    again = ServiceProcess(config)
    try:
        wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=120, message="the upload")
    finally:
        assert again.stop() == 0
    assert_uploaded_exactly_once(emu.url, {str(clip): "Inbox"})


def test_a_step_stuck_outside_every_timeout_stops_the_watchdog_pings(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    # A name server that never answers: the upload step hangs in getaddrinfo, where
    # no httpx timeout reaches. The daemon runs in its own mount namespace with a
    # resolv.conf pointing there.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        silent.bind(("127.0.0.77", 53))
    except OSError as exc:
        pytest.skip(f"needs to bind a UDP port 53 (run as root): {exc}")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.77\noptions timeout:30 attempts:5\n")
    script = f'mount --bind {resolv} /etc/resolv.conf && exec "$@"'
    prefix = ["unshare", "--mount", "sh", "-c", script, "sh"]
    if subprocess.run([*prefix, "true"], check=False, capture_output=True).returncode:
        silent.close()
        pytest.skip("needs unshare --mount (run as root)")
    config = engine_config(tmp_path, media, emu.url, settle_seconds=0.5)
    data = tomllib.loads(config.read_text())
    port = emu.url.rsplit(":", 1)[1]
    data["api"] = {
        "base_url": f"http://reka-api.test:{port}",
        "allow_insecure_http": True,
        "connect_timeout": 0.5,
        "read_timeout": 0.5,
        "stall_timeout": 0.5,
    }  # each step may then be quiet for 0.5 + 0.5 + 30 s
    config.write_text(tomli_w.dumps(data))
    listener = NotifyListener(tmp_path / "notify.sock", tmp_path / "journal.db")
    service = ServiceProcess(
        config, prefix=prefix, NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="2000000"
    )
    try:
        wait_for(lambda: listener.kinds().count("WATCHDOG") >= 2, message="watchdog pings")
        (media / "clip.mp4").write_bytes(os.urandom(40_000))
        wait_for(
            lambda: service.logged("stuck; no watchdog pings until it recovers"),
            timeout=120,
            message="the stuck step to be noticed",
        )
        [stuck] = [e for e in service.lines if e.get("event", "").startswith("stuck;")]
        assert stuck["reason"].startswith("1 worker steps are stuck outside every timeout")
        pings = listener.kinds().count("WATCHDOG")
        statuses = len(listener.statuses())
        wait_for(
            lambda: len(listener.statuses()) > statuses + 1,
            timeout=30,
            message="two STATUS lines (the supervisor still runs)",
        )
        assert listener.kinds().count("WATCHDOG") == pings  # silence: systemd would restart us
        started = time.monotonic()
        assert service.stop() == 0
        assert time.monotonic() - started < 5
    finally:
        listener.close()
        silent.close()
    assert emulator_records(emu.url) == []
