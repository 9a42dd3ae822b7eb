"""What counts as complete: container headers of real ffmpeg recordings, and the pure decision."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reka_sync.container import Container, Kind, inspect
from reka_sync.stability import Limits, Verdict, Writer, complete
from tests.conftest import ffmpeg_exe, record

RUN = Limits(settle_seconds=15, live_quiet_seconds=60, mp4_index_wait=600)
ONE_SHOT = Limits(settle_seconds=15, live_quiet_seconds=60, mp4_index_wait=600, one_shot=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two-second recordings of each container, finished as a recorder closes them."""
    folder = tmp_path_factory.mktemp("recordings")
    procs = [
        record(folder / name, 2, live=False)
        for name in ("plain.mp4", "fast.mp4", "frag.mp4", "live.mkv", "live.ts", "clip.mov")
    ]
    assert all(proc.wait(timeout=120) == 0 for proc in procs)
    return folder


def test_finished_recordings_say_they_ended(finished: Path) -> None:
    for name in ("plain.mp4", "fast.mp4", "clip.mov"):
        assert inspect(str(finished / name)) == Container(Kind.MP4, has_index=True), name
    frag = inspect(str(finished / "frag.mp4"))
    assert frag == Container(Kind.MP4, has_index=True, fragmented=True, closed_marker=True)
    assert inspect(str(finished / "live.mkv")) == Container(Kind.MKV, finalised=True)
    assert inspect(str(finished / "live.ts")) == Container(Kind.STREAM)


def test_recordings_cut_mid_write_say_they_did_not(finished: Path, tmp_path: Path) -> None:
    def cut(name: str, keep: float) -> Container | None:
        data = (finished / name).read_bytes()
        part = tmp_path / name
        part.write_bytes(data[: int(len(data) * keep)])
        return inspect(str(part))

    assert cut("plain.mp4", 0.6) == Container(Kind.MP4, has_index=False)  # no moov yet
    assert cut("clip.mov", 0.6) == Container(Kind.MP4, has_index=False)
    growing = cut("frag.mp4", 0.97)  # empty moov first, then fragments: no mfra yet
    assert growing is not None and growing.has_index and growing.fragmented
    assert not growing.closed_marker
    assert cut("live.ts", 0.5) == Container(Kind.STREAM)  # nothing in a TS says it ended


def test_matroska_written_to_a_pipe_keeps_an_unknown_size(tmp_path: Path) -> None:
    path = tmp_path / "piped.mkv"
    with path.open("wb") as out:
        done = subprocess.run(
            [
                *(ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin"),
                *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-t", "1"),
                *("-c:v", "libx264", "-preset", "ultrafast", "-f", "matroska", "-"),
            ],
            stdout=out,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0
    assert inspect(str(path)) == Container(Kind.MKV, finalised=False)


def test_empty_typescript_and_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "app.ts").write_text("export const x: number = 1;\n" * 20)
    assert inspect(str(tmp_path / "empty.mp4")) == Container(Kind.EMPTY)
    assert inspect(str(tmp_path / "app.ts")) == Container(Kind.STREAM, not_video=True)
    assert inspect(str(tmp_path / "nowhere.mp4")) is None


MP4 = Container(Kind.MP4)
FRAGMENTED = Container(Kind.MP4, fragmented=True)
NO_MOOV = Container(Kind.MP4, has_index=False)
MKV_OPEN = Container(Kind.MKV, finalised=False)
TS = Container(Kind.STREAM)


@pytest.mark.parametrize(
    ("size", "quiet", "writer", "container", "limits", "verdict"),
    [
        (0, 999, Writer.CLOSED, Container(Kind.EMPTY), RUN, Verdict.EMPTY),
        (9, 999, Writer.OPEN, MP4, RUN, Verdict.WAIT),  # a writer holds it
        (9, 999, Writer.OPEN, MP4, ONE_SHOT, Verdict.LEFT),
        (9, 10, Writer.CLOSED, MP4, RUN, Verdict.WAIT),  # not quiet for settle_seconds
        (9, 10, Writer.UNSEEN, MP4, ONE_SHOT, Verdict.WAIT),  # a backfill waits that long
        (9, 20, Writer.CLOSED, MP4, RUN, Verdict.STABLE),
        (9, 20, Writer.UNSEEN, MP4, RUN, Verdict.STABLE),  # the index says it ended
        (9, 20, Writer.CLOSED, FRAGMENTED, RUN, Verdict.STABLE),  # quiet after a close
        (9, 20, Writer.UNSEEN, FRAGMENTED, RUN, Verdict.WAIT),  # no close seen: 60 s
        (9, 61, Writer.UNSEEN, FRAGMENTED, RUN, Verdict.STABLE),
        (9, 20, Writer.UNSEEN, FRAGMENTED, ONE_SHOT, Verdict.LEFT),
        (
            9,
            20,
            Writer.UNSEEN,
            Container(Kind.MP4, fragmented=True, closed_marker=True),
            RUN,
            Verdict.STABLE,
        ),
        (9, 20, Writer.CLOSED, NO_MOOV, RUN, Verdict.WAIT),  # run waits mp4_index_wait
        (9, 600, Writer.CLOSED, NO_MOOV, RUN, Verdict.CUT_SHORT),
        (9, 20, Writer.UNSEEN, NO_MOOV, ONE_SHOT, Verdict.CUT_SHORT),  # backfill: at once
        (9, 20, Writer.CLOSED, Container(Kind.MKV), RUN, Verdict.STABLE),
        (9, 20, Writer.CLOSED, MKV_OPEN, RUN, Verdict.WAIT),
        (9, 61, Writer.UNSEEN, MKV_OPEN, RUN, Verdict.UNFINALISED),
        (9, 20, Writer.CLOSED, TS, RUN, Verdict.STABLE),
        (9, 20, Writer.UNSEEN, TS, RUN, Verdict.WAIT),  # a polled share: 60 s of quiet
        (9, 61, Writer.UNSEEN, TS, RUN, Verdict.STABLE),
        (9, 99, Writer.CLOSED, Container(Kind.STREAM, not_video=True), RUN, Verdict.NOT_VIDEO),
        (9, 20, Writer.UNSEEN, TS, ONE_SHOT, Verdict.LEFT),  # a backfill does not wait 60 s
        (9, 99, Writer.UNSEEN, Container(Kind.STREAM), ONE_SHOT, Verdict.STABLE),
        (9, 20, Writer.UNSEEN, Container(Kind.OTHER), ONE_SHOT, Verdict.STABLE),  # AVI, ...
    ],
)
def test_the_completeness_decision(
    size: int, quiet: float, writer: Writer, container: Container, limits: Limits, verdict: Verdict
) -> None:
    decision = complete(size, quiet, writer, container, limits)
    assert decision.verdict is verdict, decision
    if verdict not in (Verdict.STABLE,):
        assert decision.reason  # `show` says why


def test_the_index_check_can_be_turned_off_for_run() -> None:
    off = Limits(settle_seconds=15, live_quiet_seconds=60, mp4_index_wait=0)
    assert complete(9, 20, Writer.CLOSED, NO_MOOV, off).verdict is Verdict.STABLE
