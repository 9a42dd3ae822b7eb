"""The MP4/MOV index check: box headers of real files on disk, and the pure wait decision."""

from __future__ import annotations

import struct
from pathlib import Path

from reka_sync.container import Index, mp4_index, wants_check
from reka_sync.emulator.demo import tiny_mp4
from reka_sync.stability import Verdict, await_index


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body) + 8) + kind + body


FTYP = box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41")
MOOV = box(b"moov", box(b"mvhd", bytes(100)))


def check(tmp_path: Path, data: bytes, name: str = "clip.mp4") -> Index:
    path = tmp_path / name
    path.write_bytes(data)
    return mp4_index(str(path))


def test_a_whole_mp4_has_its_index(tmp_path: Path) -> None:
    assert check(tmp_path, tiny_mp4(50_000, 1)) is Index.PRESENT
    assert check(tmp_path, FTYP + MOOV + box(b"mdat", bytes(5000))) is Index.PRESENT  # faststart


def test_an_mp4_still_being_written_or_cut_short_has_none(tmp_path: Path) -> None:
    whole = tiny_mp4(50_000, 1)
    assert check(tmp_path, whole[: len(whole) - 30]) is Index.MISSING  # moov half written
    assert check(tmp_path, whole[:20_000]) is Index.MISSING  # inside mdat
    assert check(tmp_path, FTYP + box(b"mdat", bytes(1000))) is Index.MISSING
    to_the_end = FTYP + struct.pack(">I", 0) + b"mdat" + bytes(3000)  # size 0: up to EOF
    assert check(tmp_path, to_the_end) is Index.MISSING
    assert check(tmp_path, FTYP[:6]) is Index.MISSING


def test_64_bit_box_sizes_are_followed(tmp_path: Path) -> None:
    payload = bytes(4000)
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + len(payload)) + payload
    assert check(tmp_path, FTYP + large + MOOV, "clip.mov") is Index.PRESENT
    assert check(tmp_path, FTYP + large, "clip.mov") is Index.MISSING


def test_other_files_are_not_judged(tmp_path: Path) -> None:
    assert check(tmp_path, b"\x1a\x45\xdf\xa3" + bytes(500), "clip.mkv") is Index.NOT_CHECKED
    assert mp4_index(str(tmp_path / "nowhere.mp4")) is Index.NOT_CHECKED
    assert wants_check("/m/a/CLIP.MOV") and wants_check("x.m4v") and not wants_check("x.mkv")


def test_a_stable_file_waits_for_its_index_then_is_given_up_on() -> None:
    assert await_index(True, 0.0, 1.0, 600) is Verdict.STABLE
    assert await_index(False, 0.0, 599.0, 600) is Verdict.NO_INDEX_YET
    assert await_index(False, 0.0, 600.0, 600) is Verdict.NO_INDEX
