"""Shared fixtures: real temporary folders, real SQLite files, configs written as TOML."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import tomli_w

REPO = Path(__file__).resolve().parent.parent


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as TOML to `path` and return the path."""
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def config_file(tmp_path: Path, media: Path) -> Path:
    return write_config(
        tmp_path / "config.toml",
        {
            "journal": {"path": str(tmp_path / "journal.db")},
            "watch": {"roots": [str(media)], "settle_seconds": 0},
            "groups": {"rules": [{"match": "cameras/{camera}/**", "group": "Camera {camera}"}]},
        },
    )


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("REKA_API_KEY", "CREDENTIALS_DIRECTORY", "REKA_SYNC_CONFIG", "NOTIFY_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    yield


def cli_env(**extra: str) -> dict[str, str]:
    """Return an environment for running reka-sync as a subprocess."""
    owned = ("REKA_API_KEY", "CREDENTIALS_DIRECTORY", "REKA_SYNC_CONFIG")
    systemd = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
    env = {k: v for k, v in os.environ.items() if k not in owned + systemd}
    env.update(extra)
    return env


PYTHON = sys.executable


API_KEY = "test-key-5f2b9c"


@pytest.fixture
def emu() -> Iterator[Any]:
    from reka_sync import emulator

    running = emulator.start(settings=emulator.Settings(processing_delay=0.2, feature_delay=0.2))
    yield running
    running.stop()


def set_faults(
    emulator_url: str, faults: list[dict[str, Any]], seed: int | None = 1, **extra: Any
) -> None:
    """Replace the emulator's faults through its control endpoint."""
    import httpx

    response = httpx.post(
        f"{emulator_url}/_emulator/faults", json={"faults": faults, "seed": seed, **extra}
    )
    response.raise_for_status()


def emulator_records(emulator_url: str) -> list[dict[str, Any]]:
    """Return what the emulator stored: every video with its size and digest."""
    import httpx

    return list(httpx.get(f"{emulator_url}/_emulator/videos").json()["results"])


def emulator_requests(emulator_url: str) -> list[dict[str, Any]]:
    import httpx

    return list(httpx.get(f"{emulator_url}/_emulator/requests").json()["results"])


def journal_of_two_files(config_file: Path) -> tuple[Any, Path]:
    """Open the journal of `config_file` with two files of its first root recorded
    (cameras/front/a.mp4 and b.mp4, not on disk); return the journal and the root."""
    from reka_sync.config import load_config
    from reka_sync.journal import Journal, SeenFile
    from reka_sync.stability import FileStat

    config = load_config(config_file)
    root = config.watch.roots[0]
    journal = Journal.open(config.journal.path)
    journal.record_scan(
        [
            SeenFile(str(root / n), str(root), n, FileStat(5, 1, i, 1), 0.0)
            for i, n in enumerate(["cameras/front/a.mp4", "b.mp4"])
        ],
        now=1.0,
    )
    return journal, root


def wait_for(
    condition: Any,
    timeout: float = 30.0,
    message: str = "condition",
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds,
    with what `explain` then says of the state (what a flaky failure needs to be read)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            found = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {message}{found}")
        time.sleep(0.02)  # polling interval of a deadline-bounded wait


def digest_of(path: Path) -> str:
    """Return the digest reka-sync and the emulator record for a file's bytes."""
    from xxhash import xxh3_128

    return f"xxh3-128:{xxh3_128(path.read_bytes()).hexdigest()}"


def engine_config(
    tmp_path: Path,
    media: Path,
    url: str,
    settle_seconds: float = 0,
    rescan_interval: float = 300,
    **upload: Any,
) -> Path:
    """Write a config for backfill/run against the emulator at `url`; return its path."""
    return write_config(
        tmp_path / "engine.toml",
        {
            "api": {"base_url": url},
            "journal": {"path": str(tmp_path / "journal.db")},
            "watch": {
                "roots": [str(media)],
                "settle_seconds": settle_seconds,
                "rescan_interval": rescan_interval,
            },
            "upload": {
                "workers": 4,
                "poll_interval": 0.2,
                "backoff_base": 0.2,
                "backoff_cap": 2.0,
                "lease_seconds": 10.0,
                **upload,
            },
            "groups": {
                "default": "Inbox",
                "rules": [
                    {"match": "cameras/{camera}/**", "group": "Camera {camera}"},
                    {"match": "projects/{project}/**", "group": "Project {project}"},
                ],
            },
        },
    )


class BindMount:
    """A folder bind-mounted on another, standing in for a network share (needs root)."""

    def __init__(self, share: Path, point: Path) -> None:
        self.share, self.point = share, point
        if subprocess.run(self._mount, check=False, capture_output=True).returncode:
            pytest.skip("needs to bind-mount a folder (run as root)")

    @property
    def _mount(self) -> list[str]:
        return ["mount", "--bind", str(self.share), str(self.point)]

    def unmount(self) -> None:
        """Detach the share, even while a scan has it open (like a share that drops away)."""
        subprocess.run(["umount", "--lazy", str(self.point)], check=True)

    def mount(self) -> None:
        """Put the share back."""
        subprocess.run(self._mount, check=True)


@pytest.fixture
def bind_mount() -> Iterator[Callable[[Path, Path], BindMount]]:
    """Yield a maker of bind mounts; every one still mounted is detached afterwards."""
    made: list[BindMount] = []

    def make(share: Path, point: Path) -> BindMount:
        made.append(BindMount(share, point))
        return made[-1]

    yield make
    for mount in made:
        while str(mount.point) in Path("/proc/self/mounts").read_text().split():
            mount.unmount()


def make_tree(media: Path, count: int, size: int = 64 * 1024) -> dict[str, str]:
    """Create `count` distinct video files over several folders; return path -> group."""
    folders = [
        ("cameras/front", "Camera front"),
        ("cameras/back/2026", "Camera back"),
        ("projects/alpha", "Project alpha"),
        ("misc", "Inbox"),
    ]
    expected: dict[str, str] = {}
    for index in range(count):
        folder, group = folders[index % len(folders)]
        path = media / folder / f"clip{index:04d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(index.to_bytes(4, "little") + os.urandom(size - 4))
        expected[str(path)] = group
    return expected


def run_backfill(
    config: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "reka_sync", "backfill", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(REKA_API_KEY=API_KEY),
        check=False,
    )


def assert_uploaded_exactly_once(url: str, expected: dict[str, str]) -> list[dict[str, Any]]:
    """Check the emulator holds one video per file, with the file's bytes, in its group."""
    import httpx

    records = emulator_records(url)
    groups = {
        g["group_id"]: g["name"]
        for g in httpx.get(f"{url}/v2/video-groups", headers={"X-Api-Key": API_KEY}).json()[
            "results"
        ]
    }
    by_digest: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_digest.setdefault(record["digest"], []).append(record)
    for path, group in expected.items():
        found = by_digest.get(digest_of(Path(path)), [])
        assert len(found) == 1, f"{path}: {len(found)} uploads"
        assert groups.get(found[0]["group_id"]) == group, f"{path} in the wrong group"
    assert len(records) == len(expected), f"{len(records)} videos for {len(expected)} files"
    return records


def reka_done(
    config: Path, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `reka-sync ARGS --config CONFIG` with the test key (and `env`); return how it
    ended, whatever its exit code."""
    return subprocess.run(
        [PYTHON, "-m", "reka_sync", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=cli_env(REKA_API_KEY=API_KEY, **env),
        check=False,
        timeout=timeout,
    )


def reka_ok(config: Path, *args: str, timeout: float = 120) -> str:
    """Run `reka-sync ARGS --config CONFIG` with the test key; return what it printed.
    Fail the test if it exits non-zero."""
    done = reka_done(config, *args, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def start_backfill(config: Path, *args: str, capture: bool = False) -> subprocess.Popen[str]:
    """Start `reka-sync backfill` in the background; its output is kept only if `capture`."""
    stream = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [PYTHON, "-m", "reka_sync", "backfill", "--config", str(config), *args],
        stdout=stream,
        stderr=stream,
        text=True,
        env=cli_env(REKA_API_KEY=API_KEY),
    )


def report_json(command: str, config: Path, *args: str) -> dict[str, Any] | None:
    """Run `reka-sync status|show ... --json` (no key); return its report, or None on failure."""
    done = subprocess.run(
        [PYTHON, "-m", "reka_sync", command, *args, "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=False,
    )
    return dict(json.loads(done.stdout)) if done.returncode == 0 else None


def _lock_path() -> Path:
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"solo-{os.getpid()}")
    return Path(tempfile.gettempdir()) / f"reka-sync-tests-{run}.lock"


@pytest.fixture(autouse=True)
def alone_or_together(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests run on two xdist workers at once, but a test marked `alone` (a ratio against a
    baseline, a page read by OCR) runs with no other test beside it. Every test holds a
    shared lock on one file; an `alone` test holds it exclusively. The gate stops new
    shared holders while an exclusive one waits, so it cannot starve."""
    alone = request.node.get_closest_marker("alone") is not None
    path = _lock_path()
    with open(path.with_suffix(".gate"), "a") as gate, open(path, "a") as held:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(held, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def reap_services() -> Iterator[None]:
    """After each test, kill any daemon it started and left running (a failed assertion)."""
    yield
    while ServiceProcess.started:
        proc = ServiceProcess.started.pop().proc
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class ServiceProcess:
    """`reka-sync run` in the background, its JSON log lines collected as they come."""

    started: ClassVar[list[ServiceProcess]] = []

    def __init__(self, config: Path, *args: str, prefix: Sequence[str] = (), **env: str) -> None:
        command = [
            PYTHON,
            "-m",
            "reka_sync",
            "run",
            "--config",
            str(config),
            "--log-format",
            "json",
        ]
        self.proc = subprocess.Popen(
            [*prefix, *command, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(REKA_API_KEY=API_KEY, **env),
        )
        ServiceProcess.started.append(self)
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(
            lambda: self.logged("reka-sync running") or self.proc.poll() is not None,
            timeout=60,
            message="the daemon to start",
        )
        assert self.proc.poll() is None, self.lines

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"event": line.strip()})

    def logged(self, event: str) -> bool:
        return any(line.get("event") == event for line in list(self.lines))

    def explain(self, journal: Path, last: int = 30) -> str:
        """Return the journal's jobs by state and the daemon's last log lines: what a
        timed-out wait shows of the daemon."""
        import sqlite3

        try:
            with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
                states = conn.execute("SELECT state, count(*) FROM files GROUP BY state")
                tally = dict(states.fetchall())
        except sqlite3.Error as exc:
            tally = {"unreadable": str(exc)}
        lines = "\n".join(json.dumps(line)[:400] for line in list(self.lines)[-last:])
        return f"jobs by state: {tally}\nlast {last} log lines:\n{lines}"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def ffmpeg_exe() -> str:
    """Return the path of a real ffmpeg (from imageio-ffmpeg, in the test extra)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


LIVE_FLAGS = {  # what a live recorder writes, by file name
    "plain.mp4": [],
    "fast.mp4": ["-movflags", "+faststart"],
    "frag.mp4": ["-movflags", "frag_keyframe+empty_moov"],
    "live.mkv": [],
    "live.ts": [],
    "clip.mov": [],
}


def record(
    path: Path, seconds: float, live: bool = True, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start ffmpeg recording a test pattern into `path` (2 Mbit/s, a keyframe every 4 s);
    `live` paces it in real time, as a camera or a DVR writes."""
    flags = LIVE_FLAGS.get(path.name, [])
    command = [
        ffmpeg_exe(),
        *("-hide_banner", "-loglevel", "error", "-nostdin"),
        *(["-re"] if live else []),
        *("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", f"{seconds:g}"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-b:v", "2M", "-g", "100"),
        *("-pix_fmt", "yuv420p", *flags, *extra, "-y", str(path)),
    ]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL)


def with_settings(config: Path, section: str, **values: Any) -> Path:
    """Given a config file, set keys of one of its sections; return the path."""
    import tomllib

    data = tomllib.loads(config.read_text())
    data.setdefault(section, {}).update(values)
    return write_config(config, data)
