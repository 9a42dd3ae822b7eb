"""The backfill progress display: a tqdm bar on a terminal, a plain line every 10 s otherwise."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Never, TextIO

from reka_sync.lifecycle import FINISHED, State

if TYPE_CHECKING:
    from tqdm import tqdm

    from reka_sync.journal import Pause

PLAIN_EVERY = 10.0


class Progress:
    """Shows files and bytes finished, rate and ETA, videos being indexed, and any pause."""

    def __init__(self, stream: TextIO, total_files: int, total_bytes: int) -> None:
        self._stream = stream
        self._files = total_files
        self._bytes = total_bytes
        self._started = time.monotonic()
        self._last_line = self._started
        self._last_held: str | None = None
        self._bar: tqdm[Never] | None = None
        if stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_bytes,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=stream,
                dynamic_ncols=True,
                desc="backfill",
            )

    def update(
        self,
        tally: dict[State, tuple[int, int]],
        in_flight_bytes: int,
        pauses: list[Pause],
        held: str | None = None,
    ) -> None:
        """Given the journal's tally, bytes in flight, pauses and why uploads are held back
        (an operator's pause, a schedule window), refresh the display."""
        files_done = sum(tally[s][0] for s in FINISHED)
        indexing, indexing_bytes = tally[State.INDEXING]  # uploaded; features in the making
        bytes_done = sum(tally[s][1] for s in FINISHED) + indexing_bytes + in_flight_bytes
        note = f"waiting: {held}" if held else f"paused: {pauses[0].reason}" if pauses else ""
        if indexing:
            note = f"({indexing} indexing) {note}"
        if self._bar is not None:
            self._bar.n = min(bytes_done, self._bytes)
            self._bar.set_postfix_str(
                f"{files_done}/{self._files} files {note}".strip(), refresh=False
            )
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_line < PLAIN_EVERY and held == self._last_held:
            return  # a line every PLAIN_EVERY seconds, and one at once when a wait begins or ends
        self._last_line, self._last_held = now, held
        rate = bytes_done / max(now - self._started, 1e-6)
        eta = (self._bytes - bytes_done) / rate if rate > 0 else float("inf")
        print(
            f"backfill: {files_done}/{self._files} files, {human_size(bytes_done)}/"
            f"{human_size(self._bytes)}, {human_size(rate)}/s, ETA {_eta(eta)} {note}".rstrip(),
            file=self._stream,
            flush=True,
        )

    def close(self) -> None:
        """Finish the display."""
        if self._bar is not None:
            self._bar.close()


def human_size(count: float) -> str:
    """Given a byte count, return it in B, KiB, MiB, GiB or TiB with one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _eta(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
