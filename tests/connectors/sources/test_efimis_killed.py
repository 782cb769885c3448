"""An Efimis sync killed at any point (SIGKILL: mid-slice, mid-batch, mid-transaction) and started again leaves the
store mirroring Efimis: every finalised or billed work item stored once, at its latest version, and nothing else
live.

A real ``ocgate sync efimis`` subprocess is killed at random moments against the fake Efimis on loopback, while
work items are edited, re-dated, finalised, unfinalised, written off, added and deleted between the runs. Runs on
SQLite and PostgreSQL (the ``sessions`` fixture)."""

from __future__ import annotations

import datetime as dt
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

from connectors.efimis.fake import running_fake_efimis
from engine.store.models import EntryRow, SyncRun
from engine.workflows import sources
from tests.conftest import kill_rounds
from tests.connectors.sources.test_efimis import SECRET_ENV, assert_mirrors, connected, live
from tests.connectors.sources.test_sync_killed import _syncs_running

pytestmark = pytest.mark.slow  # long, and no Python version changes it: CI runs it on the main Python only

KILLS = kill_rounds(4)


def run_sync(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "api.cli", "sync", "efimis", "--quiet", "--batch-entries", "150",
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def efimis_syncs_running(database_url: str) -> list[int]:
    """The ``ocgate sync efimis`` processes still running (others' syncs of other sources are not ours)."""
    found = []
    for pid in _syncs_running(database_url):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"efimis" in cmdline.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            continue
    return found


def test_a_sync_killed_at_random_points_loses_and_duplicates_nothing(
        sessions: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(sources.SECRET_KEY_ENV, key)
    with running_fake_efimis(work_items=2500, seed=3) as fake:
        connected(sessions, fake, {SECRET_ENV: fake.client_secret})
        env = {**os.environ, "OCGATE_DATABASE_URL": db_url, "OCGATE_SECRET_KEY": key, SECRET_ENV: fake.client_secret}
        state, killed = fake.state, 0
        for round_ in range(KILLS):
            items = state.work_items
            for _ in range(3):
                victim = rng.choice(items)
                state.edit(victim.id, title=f"Revised in round {round_}: {victim.title}"[:300])
            moved = rng.choice([w for w in items if live(w)])
            state.edit(moved.id, entry_date=moved.entry_date + dt.timedelta(days=rng.choice((-9, 12))))
            state.add_work_item(title=f"New work recorded in round {round_}")
            state.unfinalise(rng.choice([w for w in items if w.state == "Finalised"]).id)
            state.finalise(rng.choice([w for w in items if w.state == "Pending"]).id)
            state.write_off(rng.choice([w for w in items if w.state == "Finalised"]).id)
            if round_ % 2:
                state.delete(rng.choice(items).id)
            state.slow_next(6, 0.2, path="/graphql")  # each slice answered late: a kill often lands mid-slice
            process = run_sync(env, *(["--full"] if round_ == 2 else []))
            time.sleep(rng.uniform(0.7, 1.8))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed += 1
            process.wait(timeout=60)
            state.clear_faults()
        time.sleep(0.5)
        assert not efimis_syncs_running(db_url), "a fetcher outlived its killed sync"
        # Incremental syncs finish the job: one completes what was killed, the next takes what changed while the
        # first read. Withdrawals are rows too (deleted ones are listed), so no full sync is needed.
        final = run_sync(env)
        out, err = final.communicate(timeout=120)
        assert final.returncode == 0, err.decode()
        assert run_sync(env).wait(timeout=120) == 0
        assert killed >= KILLS // 2, "the syncs finished before they could be killed: slow the fake down"
        assert_mirrors(sessions, fake)
        with sessions() as session:
            rows = session.scalar(select(func.count(EntryRow.id)))
            distinct = session.scalar(select(func.count(func.distinct(EntryRow.entry_uid))))
            runs = list(session.scalars(select(SyncRun).order_by(SyncRun.id)))
        assert rows == distinct  # no work item stored twice
        assert [run.status for run in runs[-2:]] == ["finished", "finished"] and b"pulled" in out
