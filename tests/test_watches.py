"""Where the daemon's watches go, and what happens when events are lost or watches run out.

The daemon runs as a subprocess; its inotify watches are counted from /proc/PID/fdinfo.
Two tests shrink a kernel limit (as root) to make the failure real, and put it back.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    ServiceProcess,
    assert_uploaded_exactly_once,
    emulator_records,
    engine_config,
    wait_for,
)

OUT_OF_WATCHES = (
    "inotify watch limit reached; polling this root instead. Raise it with "
    "`sysctl fs.inotify.max_user_watches=1048576` (systemd/60-reka-sync.conf is a "
    "drop-in for /etc/sysctl.d)"
)


def inotify_watches(pid: int | str) -> int:
    """Return how many inotify watches process `pid` holds (0 if it is gone)."""
    total = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return 0
    for fd in fds:
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        total += sum(1 for line in text.splitlines() if line.startswith("inotify wd:"))
    return total


def every_inotify_watch() -> int:
    """Return the inotify watches of every process on the machine (an upper bound for ours)."""
    return sum(inotify_watches(pid) for pid in os.listdir("/proc") if pid.isdigit())


@contextmanager
def kernel_limit(name: str, value: int) -> Iterator[None]:
    """Set /proc/sys/fs/inotify/`name` to `value` for the block; skip the test if we can't."""
    knob = Path("/proc/sys/fs/inotify") / name
    if not os.access(knob, os.W_OK):
        pytest.skip(f"needs a writable {knob} (run as root)")
    original = knob.read_text()
    knob.write_text(str(value))
    try:
        yield
    finally:
        knob.write_text(original)


def test_ignored_folders_get_no_watch(tmp_path: Path, media: Path, emu: Any) -> None:
    for folder in ("a/b", "c", "@eaDir/x/y", ".hidden/z"):
        (media / folder).mkdir(parents=True)
    for index in range(20):
        (media / "#recycle" / str(index)).mkdir(parents=True)
    service = ServiceProcess(engine_config(tmp_path, media, emu.url, settle_seconds=1))
    try:
        assert inotify_watches(service.proc.pid) == 4  # the root, a, a/b, c
        (media / ".cache" / "deep" / "er").mkdir(parents=True)
        (media / ".cache" / "deep" / "er" / "hidden.mp4").write_bytes(os.urandom(30_000))
        fresh = media / "new" / "deep"
        fresh.mkdir(parents=True)  # its events come after .cache's, so .cache was seen first
        wait_for(
            lambda: inotify_watches(service.proc.pid) == 6,
            timeout=30,
            message="watches on new and new/deep only",
        )
        (fresh / "clip.mp4").write_bytes(os.urandom(40_000))
        wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=60, message="clip.mp4")
    finally:
        assert service.stop() == 0
    assert_uploaded_exactly_once(emu.url, {str(fresh / "clip.mp4"): "Inbox"})


def test_running_out_of_watches_moves_the_root_to_polling_and_misses_nothing(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    service = ServiceProcess(engine_config(tmp_path, media, emu.url, settle_seconds=1))
    try:
        assert inotify_watches(service.proc.pid) == 1
        folders = [media / "new" / f"f{index:02d}" for index in range(30)]
        with kernel_limit("max_user_watches", every_inotify_watch() + 2):
            for folder in folders:
                folder.mkdir(parents=True)
            wait_for(lambda: service.logged(OUT_OF_WATCHES), timeout=30, message="the warning")
        (folders[-1] / "clip.mp4").write_bytes(os.urandom(40_000))
        wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=60, message="clip.mp4")
        assert inotify_watches(service.proc.pid) == 0, "the half-placed inotify watch was removed"
    finally:
        assert service.stop() == 0
    warnings = [line for line in service.lines if line.get("event") == OUT_OF_WATCHES]
    assert [w["root"] for w in warnings] == [str(media)], "warned once, naming the root"
    assert_uploaded_exactly_once(emu.url, {str(folders[-1] / "clip.mp4"): "Inbox"})


def test_events_lost_to_a_queue_overflow_are_found_by_the_rescan(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    batch = media / "batch"
    batch.mkdir()
    config = engine_config(tmp_path, media, emu.url, settle_seconds=1, rescan_interval=3)
    with kernel_limit("max_queued_events", 16):  # read when the daemon opens inotify
        service = ServiceProcess(config)
    expected = {}
    try:
        os.kill(service.proc.pid, signal.SIGSTOP)  # its queue fills while it is frozen
        try:
            for index in range(300):
                path = batch / f"b{index:03d}.mp4"
                path.write_bytes(index.to_bytes(4, "little") + os.urandom(3000))
                expected[str(path)] = "Inbox"
        finally:
            os.kill(service.proc.pid, signal.SIGCONT)
        wait_for(
            lambda: len(emulator_records(emu.url)) >= 300,
            timeout=120,
            message="uploads",
            explain=lambda: service.explain(tmp_path / "journal.db"),
        )
    finally:
        assert service.stop() == 0
    overflowed = [line for line in service.lines if "overflow" in str(line.get("event"))]
    assert overflowed, "the premise: the kernel dropped events"
    found = sum(
        line["files"]
        for line in service.lines
        if line.get("event") == "scan found new or changed files"
    )
    assert found >= 250, f"the rescan found what events missed (found {found})"
    assert_uploaded_exactly_once(emu.url, expected)


def last_error_of(journal: Path, name: str) -> str | None:
    """Return the `last_error` the journal holds for the file called `name` (None if none)."""
    import sqlite3

    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT last_error FROM files WHERE rel_path = ?", (name,)).fetchone()
    return None if row is None else row[0]


WRITER_OPEN = "a local process still has it open for writing"


def test_a_close_write_lost_to_a_queue_overflow_holds_no_file_back(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    """The daemon saw a write to open.mp4; then its queue overflowed, and the close-write
    was among the events lost. The file goes up after its quiet time, not an hour later
    (when a write with no close-write is forgotten), and the files written while events
    were lost are found by a rescan the overflow starts: the next periodic one is 5 minutes
    away."""
    journal = tmp_path / "journal.db"
    config = engine_config(tmp_path, media, emu.url, settle_seconds=1, rescan_interval=300)
    with kernel_limit("max_queued_events", 16):  # read when the daemon opens inotify
        service = ServiceProcess(config)
    clip = media / "open.mp4"
    expected = {str(clip): "Inbox"}
    handle = clip.open("wb")
    try:
        handle.write(os.urandom(5000))
        handle.flush()
        wait_for(
            lambda: last_error_of(journal, "open.mp4") == WRITER_OPEN,
            timeout=60,
            message="the daemon to hold open.mp4 back for its writer",
            explain=lambda: service.explain(journal),
        )
        os.kill(service.proc.pid, signal.SIGSTOP)  # its queue fills while it is frozen
        try:
            for index in range(40):  # 3 events each: the queue of 16 overflows
                path = media / f"lost{index:02d}.mp4"
                path.write_bytes(os.urandom(3000))
                expected[str(path)] = "Inbox"
            handle.close()  # this close-write comes after the overflow: lost
        finally:
            os.kill(service.proc.pid, signal.SIGCONT)
        wait_for(
            lambda: len(emulator_records(emu.url)) >= len(expected),
            timeout=60,
            message="open.mp4 and the files whose events were lost",
            explain=lambda: service.explain(journal),
        )
    finally:
        handle.close()
        assert service.stop() == 0
    rescans = [line for line in service.lines if "rescanning now" in str(line.get("event"))]
    assert [line["roots"] for line in rescans] == [[str(media)]], "said once, naming the root"
    assert_uploaded_exactly_once(emu.url, expected)


def every_inotify_instance() -> int:
    """Return how many inotify instances all processes hold."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify"
            except OSError:
                continue
    return count


def test_no_inotify_instance_left_means_polling_not_a_crash(
    tmp_path: Path, media: Path, emu: Any
) -> None:
    config = engine_config(tmp_path, media, emu.url, settle_seconds=0.5)
    with kernel_limit("max_user_instances", every_inotify_instance()):
        service = ServiceProcess(config)
    try:
        [running] = [line for line in service.lines if line.get("event") == "reka-sync running"]
        assert running["observers"] == {str(media): "polling"}
        assert any(
            "inotify instance limit reached" in str(line.get("event")) for line in service.lines
        )
        (media / "clip.mp4").write_bytes(os.urandom(30_000))
        wait_for(lambda: len(emulator_records(emu.url)) == 1, timeout=60, message="clip.mp4")
    finally:
        assert service.stop() == 0
    assert_uploaded_exactly_once(emu.url, {str(media / "clip.mp4"): "Inbox"})
