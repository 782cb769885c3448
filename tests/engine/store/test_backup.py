"""``ocgate db backup`` and ``ocgate db restore``, on SQLite (the online backup) and PostgreSQL (pg_dump): a backup
taken while another thread keeps ingesting, approving and invoicing holds everything committed before it started,
and the restored store is at the newest migration and takes more work."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from engine.store.db import make_engine, session_factory, transaction
from engine.store.health import head_revision, readiness
from engine.store.models import EntryRow, EntryState, InvoiceRow, ReviewAction, RuleSetStatus, ViolationRow
from engine.workflows import review
from engine.workflows.billing.invoices import BuildRequest, build
from engine.workflows.intake import ingest
from engine.workflows.rulesets import add_ruleset_version
from tests.api.conftest import ACME_TEXT, BASE, NOW, day, recent
from tests.conftest import REPO, _postgres_database

TABLES = {"entries": EntryRow, "violations": ViolationRow, "review_actions": ReviewAction, "invoices": InvoiceRow}


def ocgate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OCGATE_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def committed(sessions: sessionmaker[Session]) -> dict[str, set[int]]:
    with sessions() as session:
        return {name: set(session.scalars(select(model.id))) for name, model in TABLES.items()}


def one_round(sessions: sessionmaker[Session], n: int) -> None:
    """Ingest five entries of a matter of their own (two over the partner rate cap), approve the flagged ones,
    and invoice the matter: entries, violations, review actions and an invoice, in three transactions."""
    matter = f"2026-{5000 + n}"
    batch = [recent(f"r{n}-{i}", law_firm_matter_id=matter, work_date=day((5 * n + i) % 30),
                    **({"rate": "990.00"} if i < 2 else {})) for i in range(5)]
    with transaction(sessions) as session:
        ingest(session, batch, context=NOW)
    with transaction(sessions) as session:
        for row in session.scalars(select(EntryRow).where(EntryRow.law_firm_matter_id == matter,
                                                          EntryRow.state == EntryState.IN_REVIEW)):
            review.approve(session, row.id, expected_version=row.version, actor="backup-test", reason="agreed rate")
    with transaction(sessions) as session:
        build(session, BuildRequest(client_id="ACME01", period_start=BASE, period_end=NOW.as_of, matters=(matter,)),
              actor="backup-test")


class Workload(threading.Thread):
    """Rounds of work, one after another, until stopped."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        super().__init__(daemon=True)
        self.sessions, self.rounds, self.error = sessions, 0, None
        self.stop = threading.Event()
        self.progress = threading.Condition()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                one_round(self.sessions, self.rounds)
                with self.progress:
                    self.rounds += 1
                    self.progress.notify_all()
        except BaseException as exc:  # reported by wait_for and join_clean
            self.error = exc
            with self.progress:
                self.progress.notify_all()

    def wait_for(self, rounds: int, timeout: float = 60) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: self.rounds >= rounds or self.error is not None, timeout), \
                f"only {self.rounds} rounds in {timeout}s"
        assert self.error is None, self.error

    def join_clean(self) -> None:
        self.stop.set()
        self.join(60)
        assert not self.is_alive() and self.error is None, self.error


@contextlib.contextmanager
def empty_database(kind: str, tmp_path: Path) -> Any:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/restored.db"
    else:
        yield from _postgres_database()


@pytest.mark.slow
def test_a_backup_taken_mid_workload_restores_everything_committed_before_it(
        db_url: str, sessions: sessionmaker[Session], tmp_path: Path) -> None:
    kind = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    if kind == "postgresql" and shutil.which("pg_dump") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pg_dump is required under CI=true")
        pytest.skip("pg_dump is not installed")
    with transaction(sessions) as session:
        add_ruleset_version(session, ACME_TEXT, status=RuleSetStatus.ACTIVE, created_by="seed")
    work = Workload(sessions)
    work.start()
    try:
        work.wait_for(3)
        before = committed(sessions)  # every row here was committed before the backup starts
        rounds_before = work.rounds
        backed_up = ocgate(db_url, "db", "backup", str(tmp_path / "store.backup"))
        assert backed_up.returncode == 0, backed_up.stderr
        assert "backed up to" in backed_up.stdout
        work.wait_for(work.rounds + 1)  # the workload went on through the backup
    finally:
        work.join_clean()
    after = committed(sessions)
    assert work.rounds > rounds_before
    assert all(before[name] and before[name] < after[name] for name in TABLES), (before, after)
    assert not (tmp_path / ".store.backup.partial").exists()

    with empty_database(kind, tmp_path) as restored_url:
        restored = ocgate(restored_url, "db", "restore", str(tmp_path / "store.backup"))
        assert restored.returncode == 0, restored.stderr
        assert f"schema at revision {head_revision()}" in restored.stdout
        engine = make_engine(restored_url)
        try:
            assert readiness(engine).ready
            restored_sessions = session_factory(engine)
            found = committed(restored_sessions)
            for name in TABLES:
                missing = before[name] - found[name]
                assert not missing, f"{name} lost in the restore: {sorted(missing)[:10]}"
                assert found[name] <= after[name], f"{name}: the restore holds rows that never existed"
            with restored_sessions() as session, sessions() as live:
                # The invoices that made it are the same files, byte for byte.
                for invoice in session.scalars(select(InvoiceRow)):
                    original = live.get(InvoiceRow, invoice.id)
                    assert original is not None
                    assert (invoice.number, invoice.content, invoice.total) == \
                        (original.number, original.content, original.total)
            # The restored store takes more work: one more round, entries to invoice.
            one_round(restored_sessions, 999)
            with restored_sessions() as session:
                invoice = session.scalars(select(InvoiceRow).order_by(InvoiceRow.id.desc())).first()
                assert invoice is not None and invoice.matters == ["2026-5999"]
        finally:
            engine.dispose()
        again = ocgate(restored_url, "db", "restore", str(tmp_path / "store.backup"))
        assert again.returncode == 2 and "restore into a new" in again.stderr, again.stderr
        assert "Traceback" not in again.stderr


def test_backup_and_restore_refuse_what_they_cannot_do_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ocgate.db"
    assert ocgate(url, "db", "upgrade").returncode == 0
    target = tmp_path / "one.backup"
    assert ocgate(url, "db", "backup", str(target)).returncode == 0
    size = target.stat().st_size
    refusals = {
        "exists; choose another name": ocgate(url, "db", "backup", str(target)),
        "is not a folder": ocgate(url, "db", "backup", str(tmp_path / "no" / "such" / "x.backup")),
        "does not exist": ocgate(f"sqlite:///{tmp_path}/missing.db", "db", "backup", str(tmp_path / "m.backup")),
        "is not a backup made by": ocgate(f"sqlite:///{tmp_path}/new.db", "db", "restore", str(REPO / "README.md")),
        "cannot be restored into a postgresql database":
            ocgate("postgresql://nobody@127.0.0.1:1/none", "db", "restore", str(target)),
        "restore into a new file": ocgate(url, "db", "restore", str(target)),
    }
    for expected, done in refusals.items():
        assert done.returncode == 2, (expected, done.stdout, done.stderr)
        assert expected in done.stderr and "Traceback" not in done.stderr, (expected, done.stderr)
    assert target.stat().st_size == size  # the refused backup left the first one alone
    assert not (tmp_path / "new.db").exists()
    assert not (tmp_path / "missing.db").exists()
    replaced = ocgate(url, "db", "backup", "--force", str(target))
    assert replaced.returncode == 0, replaced.stderr
