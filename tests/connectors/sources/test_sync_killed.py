"""A sync killed at any point (SIGKILL: between batches, mid-page, mid-transaction) and started again ends with
every activity stored exactly once, none lost, none duplicated, each at its latest version.

A real ``ocgate sync`` subprocess is killed at random moments, several times, against the fake Clio on loopback,
while activities are edited, added and deleted between the runs; the final sync completes, and the store must
mirror Clio exactly."""

from __future__ import annotations

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

from connectors.clio.fake import running_fake_clio
from engine.store.models import EntryRow, EntryState, SyncRun
from tests.conftest import kill_rounds
from tests.connectors.sources.test_clio import SECRET_ENV, assert_mirrors, connected

pytestmark = pytest.mark.slow  # long, and no Python version changes it: CI runs it on the main Python only

KILLS = kill_rounds(6)


def run_sync(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "api.cli", "sync", "clio", "--quiet", "--batch-entries", "150",
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_sync_killed_at_random_points_loses_and_duplicates_nothing(
        sessions: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = 1 if db_url.startswith("sqlite") else 2  # a different random run on each database
    rng = random.Random(seed)
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("OCGATE_SECRET_KEY", key)
    with running_fake_clio(activities=2500, seed=seed) as fake:
        # Each list page is answered a little late, so that a kill often lands mid-page or mid-transaction.
        monkeypatch.setenv(SECRET_ENV, fake.client_secret)
        env_vars = {SECRET_ENV: fake.client_secret}
        # A small overlap window: the activities are minutes old, and a wide window would re-pull them all,
        # hiding a record a killed sync lost.
        connected(sessions, fake, env_vars, overlap_minutes=0.02)
        env = {**os.environ, "OCGATE_DATABASE_URL": db_url, "OCGATE_SECRET_KEY": key, SECRET_ENV: fake.client_secret}
        killed = 0
        for round_ in range(KILLS):
            for _ in range(3):  # the source changes between runs
                victim = rng.choice(fake.state.activities)
                fake.state.edit(victim.id, note=f"Revised in round {round_}: {victim.note}"[:400])
            fake.state.add_activity(note=f"New work recorded in round {round_}")
            if round_ % 2:
                fake.state.delete(rng.choice(fake.state.activities).id)
            fake.state.slow_next(40, 0.25, path="/activities.json")
            seen = len(fake.state.log)
            process = run_sync(env, *(["--full"] if round_ == 2 else []))
            # The kill is timed from the sync's first request, not from its start: how long Python takes to start
            # depends on the machine's load, and a quiet machine would finish a small sync before a fixed delay.
            started = time.monotonic()
            while len(fake.state.log) == seen and process.poll() is None and time.monotonic() - started < 30:
                time.sleep(0.01)
            big = round_ in (0, 2)  # the first pull and the full one read every page; the others one or two
            time.sleep(rng.uniform(0.3, 3.0) if big else rng.uniform(0.0, 0.4))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed += 1
            process.wait(timeout=60)
        # The fetcher processes died with their parents: no sync is left running.
        time.sleep(0.5)
        assert not _syncs_running(db_url), "a fetcher outlived its killed sync"
        # Incremental syncs finish the job: one completes what was killed, the next takes what changed while
        # the source was being read (a full one would re-pull everything and hide a lost record).
        final = run_sync(env)
        out, err = final.communicate(timeout=300)
        assert final.returncode == 0, err.decode()
        assert run_sync(env).wait(timeout=300) == 0
        assert killed >= KILLS // 2, f"only {killed} of {KILLS} syncs were running when killed: slow the fake down"
        with sessions() as session:
            versions = dict(session.execute(select(EntryRow.source_id, EntryRow.source_version)).all())
        for activity in fake.state.activities:  # nothing lost, each at its latest version
            assert versions.get(str(activity.id)) == activity.etag, activity.id
        # Deletions show only to a full pull, which then leaves the store mirroring Clio.
        full = run_sync(env, "--full")
        assert full.wait(timeout=300) == 0
        assert_mirrors(sessions, fake)
        with sessions() as session:
            uids = session.scalar(select(func.count(EntryRow.id)))
            distinct = session.scalar(select(func.count(func.distinct(EntryRow.entry_uid))))
            live = session.scalar(select(func.count()).select_from(EntryRow).where(
                EntryRow.state != EntryState.WITHDRAWN))
            runs = list(session.scalars(select(SyncRun).order_by(SyncRun.id)))
        assert uids == distinct  # no entry stored twice
        assert live == len(fake.state.activities)
        assert runs[-1].status == "finished"
        assert b"pulled" in out


def _syncs_running(database_url: str) -> list[int]:
    """Processes running ``ocgate sync`` on ``database_url`` (a killed sync's forked fetcher has the same command
    line and environment). The database names the test: tests running at the same time have their own."""
    marker = f"OCGATE_DATABASE_URL={database_url}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                words = cmdline.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as stat:
                zombie = stat.read().split(b") ", 1)[1][:1] == b"Z"
            if not (b"api.cli" in words and b"sync" in words and b"--batch-entries" in words) or zombie:
                continue
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if marker not in environ.read().split(b"\0"):
                    continue
        except OSError:
            continue
        found.append(int(entry))
    return found
