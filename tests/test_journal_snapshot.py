"""A new journal made from the schema snapshot is the journal the migrations make.

`python -m tests.test_journal_snapshot` writes daemon/reka_sync/journal/snapshot.py anew
from a journal the migrations made (after a new migration: the test below says when).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import sqlite_utils

from reka_sync.journal import Journal, SeenFile, snapshot
from reka_sync.journal.connection import APPLICATION_ID, NEWEST_MIGRATION
from reka_sync.journal.schema import migrations
from reka_sync.stability import FileStat
from tests.conftest import PYTHON, REPO

SNAPSHOT = REPO / "daemon" / "reka_sync" / "journal" / "snapshot.py"
MARK = "# -- written by `python -m tests.test_journal_snapshot`; do not edit below"
REWRITE = "the migrations changed: run `python -m tests.test_journal_snapshot` and commit"


def migrated(path: Path) -> sqlite3.Connection:
    """Given a path, make a journal there with sqlite-utils' migrations alone."""
    conn = sqlite3.connect(path, isolation_level=None)
    migrations.apply(sqlite_utils.Database(conn, execute_plugins=False))
    return conn


def schema_of(conn: sqlite3.Connection) -> set[tuple[str, str, str, str | None]]:
    return set(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))


def test_the_snapshot_makes_the_schema_the_migrations_make(tmp_path: Path) -> None:
    by_migrations = migrated(tmp_path / "migrated.db")
    fresh = sqlite3.connect(tmp_path / "fresh.db", isolation_level=None)
    assert snapshot.create(fresh)
    assert snapshot.dump(fresh) == snapshot.dump(by_migrations), REWRITE
    assert schema_of(fresh) == schema_of(by_migrations), REWRITE
    assert snapshot.dump(fresh)[0] == APPLICATION_ID
    assert snapshot.MIGRATIONS[-1] == NEWEST_MIGRATION
    assert migrations.pending(sqlite_utils.Database(fresh)) == []


def test_a_file_with_tables_is_left_as_it_is(tmp_path: Path) -> None:
    conn = migrated(tmp_path / "j.db")
    before = schema_of(conn)
    assert not snapshot.create(conn)
    assert schema_of(conn) == before
    assert not conn.in_transaction


def test_a_new_journal_is_made_without_importing_sqlite_utils(tmp_path: Path) -> None:
    probe = (
        "import sys; from pathlib import Path; from reka_sync.journal import Journal;"
        f"Journal.open(Path({str(tmp_path / 'new.db')!r})).close();"
        "print('sqlite_utils' in sys.modules)"
    )
    done = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    journal = Journal.open(tmp_path / "new.db")
    try:
        stat = FileStat(10, 1, 2, 3)
        journal.record_scan([SeenFile("/m/a.mp4", "/m", "a.mp4", stat, 0.0)], now=1.0)
        assert journal.counts()  # the triggers keep the counts from the first row
    finally:
        journal.close()


def render(_app_id: int, statements: tuple[str, ...], names: tuple[str, ...]) -> str:
    """Given what `snapshot.dump` read, return the generated part of snapshot.py."""
    lines = [MARK + " " + "-" * max(0, 91 - len(MARK)), ""]
    lines.append("MIGRATIONS: tuple[str, ...] = (")
    lines += [f'    "{name}",' for name in names]
    lines += [")", "STATEMENTS: tuple[str, ...] = ("]
    lines += [f'    """{sql}""",' for sql in statements]
    lines += [")", ""]
    return "\n".join(lines)


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        conn = migrated(Path(folder) / "j.db")
        text = SNAPSHOT.read_text()
        head = text[: text.index(MARK)]
        SNAPSHOT.write_text(head + render(*snapshot.dump(conn)))
    print(f"wrote {SNAPSHOT}", file=sys.stderr)


if __name__ == "__main__":
    main()
