"""A real ``ocgate sync`` of a mattero source, SIGKILLed at random points while it reads large exports, then run
again: every cost is stored exactly once, none lost, none duplicated, each as the newest export has it (on SQLite
and PostgreSQL)."""

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

from connectors.mattero.fake import running_fake_mattero
from engine.store.models import EntryRow, SyncRun
from tests.conftest import kill_rounds
from tests.connectors.sources.test_mattero import KEY_ENV, connected
from tests.connectors.sources.test_sync_killed import _syncs_running

pytestmark = pytest.mark.slow  # long, and no Python version changes it: CI runs it on the main Python only

KILLS = kill_rounds(5)


def run_sync(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "api.cli", "sync", "mattero", "--quiet", "--batch-entries", "150",
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_mattero_sync_killed_at_random_points_loses_and_duplicates_nothing(
        sessions: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    rng = random.Random(4)
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("OCGATE_SECRET_KEY", key)
    exports = tmp_path / "exports"  # type: ignore[operator]
    exports.mkdir()
    with running_fake_mattero(records=6000, seed=9) as fake:
        connected(sessions, fake, {KEY_ENV: fake.api_key}, exports)
        env = {**os.environ, "OCGATE_DATABASE_URL": db_url, "OCGATE_SECRET_KEY": key, KEY_ENV: fake.api_key}
        fake.state.write_export(exports / "00-all-costs.csv")
        killed = 0
        for round_ in range(KILLS):
            fake.state.slow_next(2, 0.3, path="/contacts")  # each run starts a little late
            runs_before = _runs(sessions)
            process = run_sync(env, *(["--full"] if round_ == 2 else []))
            deadline = time.monotonic() + 30
            while _runs(sessions) == runs_before and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)  # until the sync has started (the interpreter takes a while to import)
            time.sleep(rng.uniform(0.1, 2.0))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed += 1
            process.wait(timeout=60)
            # The firm edits costs and exports again: a new file holding the changed ones and a new one.
            changed = [fake.state.edit_record(r.id, description=f"Round {round_}: {r.description}"[:200])
                       for r in rng.sample(fake.state.records, 3)]
            added = fake.state.add_record(minutes=rng.randint(5, 90))
            fake.state.write_export(exports / f"{round_ + 1:02d}-changes.csv", ids=[r.id for r in changed]
                                    + [added.id])
        time.sleep(0.5)
        assert not _syncs_running(db_url), "a fetcher outlived its killed sync"
        final = run_sync(env)
        out, err = final.communicate(timeout=300)
        assert final.returncode == 0, err.decode()
        assert b"pulled" in out
        assert killed >= min(3, KILLS - 1), "the syncs finished before they could be killed: make the export larger"
        with sessions() as session:
            rows = {row.source_id: row.record for row in session.scalars(select(EntryRow))}
            total = session.scalar(select(func.count(EntryRow.id)))
            distinct = session.scalar(select(func.count(func.distinct(EntryRow.entry_uid))))
            runs = list(session.scalars(select(SyncRun).order_by(SyncRun.id)))
        records = fake.state.records
        assert total == distinct == len(records) == 6000 + KILLS  # none lost, none twice
        for record in records:  # each as the newest export has it
            assert rows[record.id]["narrative"] == record.description, record.id
        assert runs[-1].status == "finished" and any(run.status != "finished" for run in runs)


def _runs(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count(SyncRun.id))) or 0
