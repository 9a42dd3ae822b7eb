"""The MP4/MOV index check: box headers of files on disk."""

from __future__ import annotations

import struct
from pathlib import Path

from reka_sync.container import Kind, extension, inspect
from reka_sync.emulator.demo import tiny_mp4


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body) + 8) + kind + body


FTYP = box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41")
MOOV = box(b"moov", box(b"mvhd", bytes(100)))


PRESENT, MISSING, NOT_CHECKED = "present", "missing", "not checked"


def check(tmp_path: Path, data: bytes, name: str = "clip.mp4") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    found = inspect(str(path))
    if found is None or found.kind is not Kind.MP4:
        return NOT_CHECKED
    return PRESENT if found.has_index else MISSING


def test_a_whole_mp4_has_its_index(tmp_path: Path) -> None:
    assert check(tmp_path, tiny_mp4(50_000, 1)) == PRESENT
    assert check(tmp_path, FTYP + MOOV + box(b"mdat", bytes(5000))) == PRESENT  # faststart


def test_an_mp4_still_being_written_or_cut_short_has_none(tmp_path: Path) -> None:
    whole = tiny_mp4(50_000, 1)
    assert check(tmp_path, whole[: len(whole) - 30]) == MISSING  # moov half written
    assert check(tmp_path, whole[:20_000]) == MISSING  # inside mdat
    assert check(tmp_path, FTYP + box(b"mdat", bytes(1000))) == MISSING
    to_the_end = FTYP + struct.pack(">I", 0) + b"mdat" + bytes(3000)  # size 0: up to EOF
    assert check(tmp_path, to_the_end) == MISSING
    assert check(tmp_path, FTYP[:6]) == MISSING


def test_64_bit_box_sizes_are_followed(tmp_path: Path) -> None:
    payload = bytes(4000)
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + len(payload)) + payload
    assert check(tmp_path, FTYP + large + MOOV, "clip.mov") == PRESENT
    assert check(tmp_path, FTYP + large, "clip.mov") == MISSING


def test_other_files_are_not_judged(tmp_path: Path) -> None:
    assert check(tmp_path, b"\x1a\x45\xdf\xa3" + bytes(500), "clip.mkv") == NOT_CHECKED
    assert inspect(str(tmp_path / "nowhere.mp4")) is None
    assert extension("/m/a/CLIP.MOV") == "mov" and extension("/m/x.tar/noext") == ""
