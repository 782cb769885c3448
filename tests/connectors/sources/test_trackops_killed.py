"""A real ``ocgate sync trackops`` killed with SIGKILL at random points (between batches, mid-page, mid-transaction)
and started again ends with every line of every approved or committed entry stored exactly once, at its latest
version, and every line that stopped being billable withdrawn with the reason in the audit trail.

The fake Trackops runs on loopback in this process; the syncs are subprocesses, on SQLite and on PostgreSQL. Between
the runs, and while a run pages, entries are voided, sent back, declined, committed, edited, trimmed and added."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from connectors.sources.sync import sync
from connectors.trackops.fake import running_fake_trackops
from engine.store.models import Connection, EntryRow, EntryState, ReviewAction, SyncRun
from engine.workflows import sources
from tests.conftest import kill_rounds
from tests.connectors.sources.test_sync_killed import _syncs_running
from tests.connectors.sources.test_trackops import BILLABLE, TOKEN_ENV, assert_mirrors, connected

pytestmark = pytest.mark.slow  # long, and no Python version changes it: CI runs it on the main Python only

ROUNDS = kill_rounds(5)


def run_sync(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "api.cli", "sync", "trackops", "--quiet", "--batch-entries", "120",
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def started_run(sessions: sessionmaker[Session], process: subprocess.Popen[bytes], *, after: int) -> None:
    """Wait until ``process`` has started a sync run later than run ``after`` (the command takes a second or two
    to import and start)."""
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        with sessions() as session:
            if (session.scalar(select(func.max(SyncRun.id))) or 0) > after:
                return
        time.sleep(0.02)


def saved_cursor(sessions: sessionmaker[Session]) -> dict[str, object]:
    with sessions() as session:
        text = sources.cursor(session, session.scalar(select(Connection.id)))
    return json.loads(text) if text else {}


def batch_committed(sessions: sessionmaker[Session], process: subprocess.Popen[bytes],
                    before: dict[str, object]) -> None:
    """Wait until ``process`` has committed a batch and not yet finished its pull (a new mid-pull cursor)."""
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        cursor = saved_cursor(sessions)
        if "page" in cursor and cursor != before:
            return
        time.sleep(0.01)


def test_a_sync_killed_at_random_points_loses_and_duplicates_nothing(
        sessions: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(4)
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(sources.SECRET_KEY_ENV, key)
    with running_fake_trackops(lines=2500, seed=4) as fake:
        env_vars = {TOKEN_ENV: fake.api_token}
        options = connected(sessions, fake, env_vars, overlap_minutes=0.001)  # no overlap to hide a lost record
        sync(sessions, "trackops", options=options)  # everything held: what changes later must be withdrawn
        env = {**os.environ, "OCGATE_DATABASE_URL": db_url, sources.SECRET_KEY_ENV: key, **env_vars}
        killed = mid_pull = 0
        for round_ in range(ROUNDS):
            approved = [e for e in fake.state.entries if e.status in BILLABLE]
            for victim in rng.sample(approved, 3):  # the source changes between runs
                fake.state.set_status(victim.id, rng.choice(("voided", "pending", "declined", "committed")))
            trimmed = next(e for e in rng.sample(approved, 20) if len(e.lines) > 1)
            fake.state.remove_line(trimmed.id, trimmed.lines[-1].id)
            for edited in rng.sample(approved, 150):  # two pages of an incremental pull
                fake.state.edit_line(edited.id, edited.lines[0].id, quantity=f"{rng.randint(1, 40) / 4}")
            fake.state.add_entry(user_id=5102, casefile_id=6004, entry_date=dt.date(2026, 3, 20),
                                 lines=[(305, "35.00", str(rng.randint(1, 4)))], notes=f"Searches, round {round_}")
            # Pages answered late, and changes while the list is paged, so that kills land mid-page.
            fake.state.slow_next(60, 0.08, path="/expense/entries")
            moved, voided = rng.choice(fake.state.entries), rng.choice(approved)
            fake.state.between_pages(2, lambda state, moved=moved: state.edit(moved.id, notes="Touched mid-pull"))
            fake.state.between_pages(3, lambda state, voided=voided: state.set_status(voided.id, "voided"))
            before = saved_cursor(sessions)
            process = run_sync(env, *(["--full"] if round_ % 2 else []))
            started_run(sessions, process, after=round_ + 1)
            if round_ % 2:  # a full pull: killed once at least one batch is in, at a random point of the next
                batch_committed(sessions, process, before)
                time.sleep(rng.uniform(0.0, 0.3))
            else:  # anywhere: before the first page, mid-page, mid-transaction or between batches
                time.sleep(rng.uniform(0.0, 1.2))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed += 1
                process.wait(timeout=60)
                after = saved_cursor(sessions)
                mid_pull += "page" in after and after != before  # killed after a batch, before the pull's end
            process.wait(timeout=60)
        time.sleep(0.5)
        assert not _syncs_running(db_url), "a fetcher outlived its killed sync"
        # One incremental sync completes what was killed, the next takes what changed while it read.
        final = run_sync(env)
        out, err = final.communicate(timeout=300)
        assert final.returncode == 0, err.decode()
        assert run_sync(env).wait(timeout=300) == 0
        assert killed >= min(3, ROUNDS - 1) and mid_pull >= 1, (killed, mid_pull)  # else the syncs were too fast
        assert_mirrors(sessions, fake)
        with sessions() as session:
            uids = session.scalar(select(func.count(EntryRow.id)))
            distinct = session.scalar(select(func.count(func.distinct(EntryRow.entry_uid))))
            withdrawn = session.scalar(select(func.count()).select_from(EntryRow).where(
                EntryRow.state == EntryState.WITHDRAWN))
            audit = session.scalar(select(func.count()).select_from(ReviewAction).where(
                ReviewAction.action == "withdrawn"))
            runs = list(session.scalars(select(SyncRun).order_by(SyncRun.id)))
        assert uids == distinct  # no line stored twice
        assert withdrawn >= 3 * ROUNDS and audit >= withdrawn  # each withdrawal in the audit trail
        assert runs[-1].status == "finished" and b"pulled" in out
