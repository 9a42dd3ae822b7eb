"""The journal's record of the operator's pause (`reka-sync pause` / `resume`).

One row while uploads are paused by hand, so a pause given from one shell holds in the
service and in a backfill alike, and outlives a restart.
"""

from __future__ import annotations

import sqlite3

from reka_sync.controls import OperatorPause
from reka_sync.journal.lifespan import LifeQueries


class ControlQueries(LifeQueries):
    """The operator's pause: read, set, lift (the Journal has it)."""

    def operator_pause(self) -> OperatorPause | None:
        """Return the operator's pause as recorded (expired or not), or None."""
        if not self._read("SELECT 1 FROM sqlite_master WHERE name = 'operator_pause'"):
            return None  # a read-only journal of an older version
        rows = self._read("SELECT by, since, until, abort FROM operator_pause WHERE id = 1")
        if not rows:
            return None
        row = rows[0]
        return OperatorPause(row["by"], row["since"], row["until"], bool(row["abort"]))

    def set_operator_pause(self, pause: OperatorPause) -> None:
        """Given a pause, record it in place of any earlier one (durably: it is an order)."""
        self._run(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO operator_pause (id, by, since, until, abort)"
                " VALUES (1, ?, ?, ?, ?)",
                (pause.by, pause.since, pause.until, int(pause.abort)),
            ),
            durable=True,
        )

    def clear_operator_pause(self) -> OperatorPause | None:
        """Lift the operator's pause; return the one lifted, or None if there was none."""

        def write(conn: sqlite3.Connection) -> OperatorPause | None:
            row = conn.execute(
                "SELECT by, since, until, abort FROM operator_pause WHERE id = 1"
            ).fetchone()
            conn.execute("DELETE FROM operator_pause")
            return OperatorPause(row[0], row[1], row[2], bool(row[3])) if row else None

        return self._run(write, durable=True)
