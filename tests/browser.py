"""What a person sees: load a URL in headless Chromium, screenshot it, read it back with OCR.

Chromium is Debian's `chromium-headless-shell`, OCR is `tesseract` (package `tesseract-ocr`).
Tests call `require()` first: without the tools they are skipped locally, but fail when the
environment variable `CI` is set (CI installs both).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium-headless-shell", "headless_shell", "chromium", "chromium-browser")
CHROMIUM_PATHS = ("/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium/headless_shell")
TIMEOUT = 30.0  # seconds for one Chromium or tesseract run; a normal one takes well under 1 s


def chromium() -> str | None:
    """Return the path of a headless Chromium, or None when there is none."""
    override = os.environ.get("CHROMIUM")
    if override:
        return shutil.which(override)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return next((p for p in CHROMIUM_PATHS if os.access(p, os.X_OK)), None)


def tesseract() -> str | None:
    """Return the path of tesseract, or None when it is not installed."""
    return shutil.which("tesseract")


def missing() -> list[str]:
    """Return the Debian packages whose tools are not installed (empty when all are)."""
    needed = {"chromium-headless-shell": chromium(), "tesseract-ocr": tesseract()}
    return [package for package, found in needed.items() if found is None]


def require() -> None:
    """Skip the calling test when Chromium or tesseract is missing; fail instead under CI."""
    absent = missing()
    if not absent:
        return
    why = f"not installed: {', '.join(absent)} (apt-get install -y --no-install-recommends)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must have the browser tools; {why}")
    pytest.skip(why)


def _run(
    argv: list[str], timeout: float = TIMEOUT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run argv in its own process group; on a timeout, kill the whole group and raise."""
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _chromium(url: str, extra: list[str], width: int, height: int) -> bytes:
    binary = chromium()
    if binary is None:
        raise RuntimeError("no headless Chromium installed (chromium-headless-shell)")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        argv = [
            binary,
            "--headless",
            "--no-sandbox",  # tests run as root, where the sandbox refuses to start
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--mute-audio",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            *extra,
            url,
        ]
        done = _run(argv)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return done.stdout


def screenshot(url: str, path: Path | str, width: int = 390, height: int = 1400) -> Path:
    """Given a URL and a PNG path, load the URL in a window of width x height CSS pixels and
    save what it shows there; return the path."""
    path = Path(path)
    path.unlink(missing_ok=True)
    _chromium(url, [f"--screenshot={path}"], width, height)
    if not path.is_file() or path.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot to {path}")
    return path


def seen_text(png: Path | str) -> str:
    """Given a screenshot, return the text tesseract reads in it."""
    binary = tesseract()
    if binary is None:
        raise RuntimeError("tesseract is not installed (tesseract-ocr)")
    # One thread: OpenMP's spinning threads make tesseract 2-3 times slower on a small machine.
    done = _run([binary, str(png), "-"], env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"tesseract exited {done.returncode}: {done.stderr.decode()}")
    return done.stdout.decode("utf-8", "replace")


def dump_dom(url: str, width: int = 390, height: int = 1400) -> str:
    """Given a URL, return the DOM Chromium built from it, serialized as HTML."""
    return _chromium(url, ["--dump-dom"], width, height).decode("utf-8", "replace")


def dom_text(url: str) -> str:
    """Given a URL, return the text of its rendered DOM's body, whitespace collapsed."""
    parser = _Text()
    parser.feed(dump_dom(url))
    return " ".join(" ".join(parser.parts).split())


class _Text(HTMLParser):
    """Collects the text outside <head>, <style> and <script>."""

    HIDDEN = frozenset({"head", "style", "script", "title", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in {"br", "p", "li", "tr", "td", "h1", "h2", "div"}:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN and self.hidden:
            self.hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def normalized(text: str) -> str:
    """Given OCR or DOM text, return it lower-case with runs of whitespace as one space."""
    return re.sub(r"\s+", " ", text).strip().lower()


def read_png(path: Path | str) -> tuple[int, int, list[bytes]]:
    """Given an 8-bit RGB or RGBA non-interlaced PNG (what Chromium writes), return its width,
    height and rows of RGB bytes."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}")
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(bytes(idat))
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind_of_filter, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind_of_filter, line, previous, channels)
        rgb = line if channels == 3 else bytearray(b for i, b in enumerate(line) if i % 4 != 3)
        rows.append(bytes(rgb))
        previous = line
    return width, height, rows


def _unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> None:
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = prev[i]
        corner = prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + pred) & 0xFF
        elif kind != 0:
            raise ValueError(f"bad PNG filter {kind}")


def ink_in_columns(path: Path | str, first: int, last: int, background: bytes = b"\xff" * 3) -> int:
    """Given a screenshot and a range of pixel columns (inclusive), return how many pixels
    in those columns differ from the background colour."""
    width, _, rows = read_png(path)
    first, last = max(0, first), min(width - 1, last)
    count = 0
    for row in rows:
        for x in range(first, last + 1):
            if row[3 * x : 3 * x + 3] != background:
                count += 1
    return count
