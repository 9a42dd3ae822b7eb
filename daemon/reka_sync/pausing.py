"""`reka-sync pause` and `reka-sync resume`: the operator's pause, recorded in the journal.

The running service and any backfill read it at their next tick (within a second or
two), so it works from another shell, and it outlives a restart. Only the journal's
owner (the service's user) may write it: a journal file written by another user, root
above all, could leave files beside it that the service cannot open.
"""

from __future__ import annotations

import argparse
import os
import pwd
import time
from pathlib import Path

from reka_sync.commands import load
from reka_sync.controls import OperatorPause
from reka_sync.errors import EXIT_OK, NoJournalYet, UsageError, WrongUser


def cmd_pause(args: argparse.Namespace) -> int:
    """Record a pause of new uploads (for a while, or until resumed); with --now, stop the
    uploads in flight too (they go back to the queue, no attempt spent)."""
    from reka_sync.journal import Journal

    config = load(args)
    seconds: float | None = args.duration  # parsed by cli._duration
    if seconds is not None and seconds <= 0:
        raise UsageError("--for: give a duration longer than 0, such as 90m, 2h or 1d")
    refuse_other_user(config.journal.path, "pause")
    now = time.time()
    pause = OperatorPause(_who(), now, now + seconds if seconds else None, args.now)
    journal = Journal.open(config.journal.path)
    try:
        journal.set_operator_pause(pause)
    finally:
        journal.close()
    stops = (
        "uploads in flight stop now and go back to the queue"
        if args.now
        else "uploads in flight finish"
    )
    print(f"uploads {pause.describe()}; {stops}. `reka-sync resume` lifts it.")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    """Lift the operator's pause; uploads start again at the next tick."""
    from reka_sync.journal import Journal

    config = load(args)
    refuse_other_user(config.journal.path, "resume")
    journal = Journal.open(config.journal.path)
    try:
        lifted = journal.clear_operator_pause()
    finally:
        journal.close()
    if lifted is None or not lifted.in_force(time.time()):
        print("uploads were not paused; nothing to resume")
    else:
        print(f"resumed: uploads were {lifted.describe()}")
    return EXIT_OK


def refuse_other_user(journal: Path, command: str) -> None:
    """Given the journal's path, raise WrongUser unless this process runs as the user that
    owns it (or, before it exists, its folder); NoJournalYet if not even the folder is
    there (a wrong --config: a pause there would hold nothing)."""
    try:
        owner = (journal if journal.exists() else journal.parent).stat().st_uid
    except FileNotFoundError:
        raise NoJournalYet(
            f"no journal at {journal}, nor its folder: a pause recorded there would hold"
            " nothing. Check --config (or $REKA_SYNC_CONFIG)"
        ) from None
    if owner == os.geteuid():
        return
    name = _user(owner)
    raise WrongUser(
        f"the journal {journal} belongs to {name}; run this as that user, e.g. "
        f"`sudo -u {name} reka-sync {command}`: written as another user it could leave "
        "files the service cannot open"
    )


def _who() -> str:
    me = _user(os.geteuid())
    sudo = os.environ.get("SUDO_USER")
    return f"{me} (sudo by {sudo})" if sudo and sudo != me else me


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
