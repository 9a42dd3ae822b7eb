"""The journal on a real SQLite file: idempotent recording, atomic leases, history, bad files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from reka_sync import outcomes
from reka_sync.errors import IllegalTransition, JournalError, LeaseLost
from reka_sync.journal import Journal, Scope, SeenFile
from reka_sync.journal.connection import JournalDamaged
from reka_sync.lifecycle import Event, State
from reka_sync.moves import Changes, Move
from reka_sync.stability import FileStat
from tests.conftest import PYTHON, REPO


def seen(root: Path, rel: str, size: int = 10, mtime: int = 1) -> SeenFile:
    return SeenFile(str(root / rel), str(root), rel, FileStat(size, mtime, 100 + size, 1), 0.0)


def fill(journal: Journal, count: int, root: Path = Path("/m")) -> list[int]:
    journal.record_scan([seen(root, f"f{i}.mp4", size=i) for i in range(count)], now=1.0)
    ids = []
    for job in journal.jobs([State.DISCOVERED], limit=count):
        journal.apply(Move(job.id, Event.SETTLED), 2.0)
        ids.append(job.id)
    return ids


def test_recording_is_idempotent_on_path(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    first = journal.record_scan([seen(Path("/m"), "a.mp4"), seen(Path("/m"), "b.mp4")], now=1.0)
    again = journal.record_scan([seen(Path("/m"), "a.mp4"), seen(Path("/m"), "b.mp4")], now=2.0)
    changed = journal.record_scan([seen(Path("/m"), "a.mp4", size=11)], now=3.0)
    assert (first.new, again.new, again.unchanged, changed.changed) == (2, 0, 2, 1)
    job = journal.find("/m/a.mp4")
    assert job is not None and job.size == 11 and job.state is State.DISCOVERED
    assert [h.event for h in journal.history(job.id)] == ["seen", "seen"]


def test_change_after_settling_goes_back_to_discovered(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    [job_id] = fill(journal, 1)
    journal.record_scan([seen(Path("/m"), "f0.mp4", size=0, mtime=99)], now=5.0)
    job = journal.get(job_id)
    assert job.state is State.DISCOVERED and job.mtime_ns == 99
    assert [h.event for h in journal.history(job_id)] == ["seen", "settled", "changed"]


def test_apply_enforces_the_lifecycle_and_records_history(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    [job_id] = fill(journal, 1)
    with pytest.raises(IllegalTransition):
        journal.apply(Move(job_id, Event.FILED), 3.0)
    with pytest.raises(JournalError, match="not uploading"):
        journal.apply(Move(job_id, Event.CLAIM), 3.0, expect=State.UPLOADING)
    with pytest.raises(LeaseLost):
        journal.apply(Move(job_id, None, note="x"), 3.0, owner="someone")
    claim = Move(job_id, Event.CLAIM, Changes(upload_key="k1"), {"by": "test"})
    job = journal.apply(claim, 3.0)
    assert job.state is State.UPLOADING and job.upload_key == "k1"
    assert journal.history(job_id)[-1].detail == {"by": "test"}
    assert journal.get(job_id).state is State.UPLOADING


def test_claims_are_exclusive_between_threads(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    ids = fill(journal, 200)
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        own = Journal.open(tmp_path / "j.db")
        while jobs := own.claim_uploads(name, now=10.0, limit=3, lease_seconds=60):
            with lock:
                claimed.extend(j.id for j in jobs)
        own.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed) == sorted(ids)


def test_claims_are_exclusive_between_processes(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    journal = Journal.open(db)
    ids = fill(journal, 300)
    script = (
        "import sys\nfrom pathlib import Path\nfrom reka_sync.journal import Journal\n"
        "j = Journal.open(Path(sys.argv[1]))\n"
        "while jobs := j.claim_uploads(sys.argv[2], now=10.0, limit=2, lease_seconds=60):\n"
        "    print(*[x.id for x in jobs], flush=True)\n"
    )
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", script, str(db), f"p{i}"], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        for i in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    claimed = [int(x) for out in outputs for x in out.split()]
    assert sorted(claimed) == sorted(ids)
    owners = {j.lease_owner for j in journal.jobs([State.UPLOADING], limit=1000)}
    assert owners <= {"p0", "p1", "p2"}


def test_expired_leases_are_taken_over_and_a_cut_send_stays_flagged(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    first, second = fill(journal, 2)
    claimed = journal.claim_uploads("dead", now=10.0, limit=5, lease_seconds=30)
    assert [j.id for j in claimed] == [first, second] and not claimed[0].outcome_unknown
    send = outcomes.sending(claimed[0], "key-1", "sample", None, None)
    assert journal.begin_send(send, "dead", 11.0, "sample", []) is not None  # then it died
    assert journal.claim_uploads("alive", now=39.0, limit=5, lease_seconds=30) == []
    assert journal.renew_leases("dead", now=20.0, lease_seconds=30) == 2
    assert journal.claim_uploads("alive", now=45.0, limit=5, lease_seconds=30) == []
    taken = {j.id: j for j in journal.claim_uploads("alive", now=51.0, limit=5, lease_seconds=30)}
    assert set(taken) == {first, second}
    assert all(j.lease_owner == "alive" for j in taken.values())
    # The send that was cut short must be reconciled; the job that never sent need not be.
    assert taken[first].outcome_unknown and taken[first].upload_key == "key-1"
    assert outcomes.must_reconcile(taken[first]) and not outcomes.must_reconcile(taken[second])
    assert [h.event for h in journal.history(first)][-1] == "reclaim"


def test_live_files_come_before_backfill(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    journal.record_scan([seen(Path("/m"), "old.mp4")], now=1.0, priority=1)
    journal.record_scan([seen(Path("/m"), "live.mp4")], now=2.0, priority=0)
    for job in journal.jobs([State.DISCOVERED]):
        journal.apply(Move(job.id, Event.SETTLED), 3.0)
    [first] = journal.claim_uploads("w", now=5.0, limit=1, lease_seconds=30)
    assert first.path == "/m/live.mp4"


def test_counts_groups_and_pauses(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    fill(journal, 3)
    counts = journal.counts()
    assert counts[State.QUEUED] == 3 and counts[State.DONE] == 0 and set(counts) == set(State)
    journal.save_group("Camera front", "g1", 1.0)
    journal.save_group("Camera front", "g2", 2.0)
    assert journal.group_ids() == {"Camera front": "g2"}
    journal.set_pause("uploads", 100.0, "429")
    journal.set_pause("uploads", 50.0, "429 again")
    assert [(p.until, p.reason) for p in journal.pauses(10.0)] == [(100.0, "429 again")]
    assert journal.pauses(100.0) == []
    assert journal.check_integrity() == "ok"


def test_refuses_a_file_that_is_not_a_journal(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("important notes\n" * 10)
    with pytest.raises(JournalError, match="not a SQLite database"):
        Journal.open(text)
    assert text.read_text() == "important notes\n" * 10
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE precious (x)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="not a reka-sync journal"):
        Journal.open(other)
    tables = sqlite3.connect(other).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("precious",)]


def test_read_only_open_of_a_missing_journal_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal at"):
        Journal.open(tmp_path / "none.db", readonly=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_gives_a_clear_error(tmp_path: Path) -> None:
    Journal.open(tmp_path / "j.db").close()
    os.chmod(tmp_path / "j.db", 0o444)
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(JournalError, match="read-only"):
            Journal.open(tmp_path / "j.db")
    finally:
        os.chmod(tmp_path, 0o755)


def test_locked_journal_gives_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("reka_sync.journal.connection.BUSY_TIMEOUT_S", 0.2)
    journal = Journal.open(tmp_path / "j.db")
    blocker = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(JournalError, match="locked by another process"):
            journal.save_group("x", "y", 1.0)
    finally:
        blocker.execute("ROLLBACK")
    journal.save_group("x", "y", 1.0)
    assert journal.group_ids() == {"x": "y"}


def test_one_bad_move_never_holds_the_others_back(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    ids = fill(journal, 3)
    moved_on = Move(ids[1], Event.FILED)  # not allowed from queued: another process's job
    refused = journal.apply_many(
        [Move(ids[0], Event.CLAIM), moved_on, Move(ids[2], Event.CLAIM), Move(999, Event.CLAIM)],
        3.0,
    )
    assert [move for move, _ in refused] == [moved_on, Move(999, Event.CLAIM)]
    assert "not allowed" in refused[0][1] and "no job" in refused[1][1]
    states = [journal.get(i).state for i in ids]
    assert states == [State.UPLOADING, State.QUEUED, State.UPLOADING]
    assert [h.event for h in journal.history(ids[1])][-1] == "settled"


def test_one_file_that_cannot_be_recorded_never_holds_the_scan_back(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    good = [seen(Path("/m"), f"f{i}.mp4", size=i) for i in range(3)]
    bad = SeenFile("/m/huge.mp4", "/m", "huge.mp4", FileStat(2**70, 1, 1, 1), 0.0)
    summary = journal.record_scan([good[0], bad, *good[1:]], now=1.0)
    assert summary.new == 3
    assert [path for path, _ in summary.refused] == ["/m/huge.mp4"]
    assert journal.find("/m/huge.mp4") is None and journal.find("/m/f2.mp4") is not None


def test_a_claim_that_waits_for_the_lock_holds_its_lease_from_its_commit(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    [job_id] = fill(journal, 1)
    blocker = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock for a while
    clock = {"now": 100.0}
    done = threading.Event()
    claimed: list[Any] = []

    def claim() -> None:
        claimed.extend(journal.claim_uploads("w/1", lambda: clock["now"], 1, 60.0))
        done.set()

    worker = threading.Thread(target=claim)
    worker.start()
    assert not done.wait(0.3)  # the claim waits for the lock...
    clock["now"] = 164.0  # ...while the clock moves past what its lease would have been
    blocker.execute("ROLLBACK")
    assert done.wait(30)
    worker.join()
    [job] = claimed
    assert job.lease_expires == 164.0 + 60.0  # counted from the commit, not the request
    # The same process claiming it again after the lease ran out uses another name, and
    # the worker that lost it can no longer start its send.
    [again] = journal.claim_uploads("w/2", 225.0, 1, 60.0)
    assert again.id == job_id and again.lease_owner == "w/2"
    send = outcomes.sending(job, "key-1", "s", None, None)
    with pytest.raises(LeaseLost):
        journal.begin_send(send, "w/1", 226.0, "s", [])
    late = outcomes.sending(again, "key-2", "s", None, None)
    with pytest.raises(LeaseLost, match="ran out"):
        journal.begin_send(late, "w/2", 300.0, "s", [])  # its own lease lapsed too
    assert journal.begin_send(late, "w/2", 230.0, "s", []) is not None


def test_writes_queued_meanwhile_share_one_commit_and_a_refused_one_stays_its_own(
    tmp_path: Path,
) -> None:
    """Group commit: writes handed over while a commit runs go out together in the next
    one; a write that fails is rolled back alone and raised to its own caller."""
    journal = Journal.open(tmp_path / "j.db")
    good, bad = fill(journal, 2)
    journal.apply(Move(bad, Event.FAIL, Changes(last_error="x")), 3.0)  # FAIL again: illegal
    history_before = len(journal.history(good))
    statements: list[str] = []
    journal._conn.set_trace_callback(statements.append)
    gate, busy = threading.Event(), threading.Event()
    holder = threading.Thread(target=journal._run, args=(lambda conn: busy.set() or gate.wait(),))
    holder.start()
    busy.wait(10)  # a leader is inside a commit: what comes now waits for the next one
    outcome: dict[str, Any] = {}

    def apply(name: str, move: Move) -> None:
        try:
            outcome[name] = journal.apply(move, 4.0)
        except IllegalTransition as exc:
            outcome[name] = exc

    threads = [
        threading.Thread(target=apply, args=("good", Move(good, None, Changes(last_error="y")))),
        threading.Thread(target=apply, args=("bad", Move(bad, Event.FAIL))),
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(journal._writer._queue) < 2 and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.01)  # polling the queue with a deadline
    gate.set()
    for thread in [holder, *threads]:
        thread.join(10)
    assert isinstance(outcome["bad"], IllegalTransition)
    assert journal.get(good).last_error == "y" and journal.get(bad).state is State.FAILED
    # The batch ran again without the refused write: the good one is written once.
    assert len(journal.history(good)) == history_before + 1
    commits = [s for s in statements if s == "COMMIT"]
    assert len(commits) == 2, statements  # the holder's, then the two queued writes' together
    journal.close()


def test_the_kept_counts_agree_with_the_rows(tmp_path: Path) -> None:
    """`counts` reads counters that triggers keep; they must say what counting rows says,
    after inserts, moves, refused moves and deletes."""
    journal = Journal.open(tmp_path / "j.db")
    ids = fill(journal, 6)
    journal.apply(Move(ids[0], Event.FAIL, Changes(last_error="x")), 3.0)
    journal.apply_many([Move(ids[1], Event.FAIL), Move(ids[0], Event.FAIL)], 4.0)  # 2nd refused
    journal.record_scan([seen(Path("/m"), "new.mp4", size=99)], now=5.0)

    def delete(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM events WHERE file_id = ?", (ids[5],))
        conn.execute("DELETE FROM files WHERE id = ?", (ids[5],))

    journal._run(delete)
    assert journal.counts() == journal.counts_from_rows() == journal.counts_checked()
    assert journal.counts()[State.FAILED] == 2 and journal.counts()[State.DISCOVERED] == 1
    journal.close()


def test_counters_that_disagree_with_the_rows_are_reported_as_damage(tmp_path: Path) -> None:
    """`counts_checked` (what `status` shows) takes the kept counters only if a pass over
    the rows agrees: a counter off by one, or a count moved to another state, is damage."""
    path = tmp_path / "j.db"
    journal = Journal.open(path)
    ids = fill(journal, 6)
    journal.apply(Move(ids[0], Event.FAIL, Changes(last_error="x")), 3.0)
    journal.close()
    tampered = {  # as a half-applied restore, or a bug in a trigger, would leave them
        "say 7 files, its rows 6": ["UPDATE state_counts SET n = n + 1 WHERE state = 'queued'"],
        "disagree with its rows' states": [  # the total stays right
            "UPDATE state_counts SET n = n - 1 WHERE state = 'failed'",
            "INSERT INTO state_counts (state, n) VALUES ('discovered', 1)"
            " ON CONFLICT (state) DO UPDATE SET n = n + 1",
        ],
    }
    for how, statements in tampered.items():
        with sqlite3.connect(path) as db:
            before = db.execute("SELECT state, n FROM state_counts").fetchall()
            for sql in statements:
                db.execute(sql)
        reading = Journal.open(path, readonly=True)
        try:
            with pytest.raises(JournalDamaged, match=how):
                reading.counts_checked()
            assert reading.counts_from_rows()[State.FAILED] == 1, how  # the rows are intact
        finally:
            reading.close()
        with sqlite3.connect(path) as db:
            db.execute("DELETE FROM state_counts")
            db.executemany("INSERT INTO state_counts (state, n) VALUES (?, ?)", before)
    reading = Journal.open(path, readonly=True)
    assert reading.counts_checked() == reading.counts_from_rows()
    reading.close()


def test_a_scope_of_several_paths_counts_only_what_is_under_them(tmp_path: Path) -> None:
    """A backfill of /m/a and /m/b: its counts and lists leave /m/c and the other states out
    (names stored as bytes included)."""
    journal = Journal.open(tmp_path / "j.db")
    raw = os.fsdecode(b"b/caf\xe9.mp4")
    files = [seen(Path("/m"), rel, size=i) for i, rel in enumerate(["a/1.mp4", raw, "c/3.mp4"])]
    journal.record_scan(files, now=1.0)
    for item in files[1:]:
        job = journal.find(item.path)
        assert job is not None
        journal.apply(Move(job.id, Event.FAIL, Changes(last_error="x")), 2.0)
    scope = Scope(paths=(("/m", "/m/a"), ("/m", "/m/b")))
    assert journal.scope_tally(scope)[State.FAILED][0] == 1
    assert journal.scope_tally(scope)[State.DISCOVERED][0] == 1
    assert [item.path for item in journal.scope_listed(scope, State.FAILED)] == ["/m/" + raw]
    a = journal.find("/m/a/1.mp4")
    assert a is not None and journal.scope_ids(scope, State.DISCOVERED) == {a.id}
    journal.close()
