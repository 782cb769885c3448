"""Shared builders: entries, inline rule sets, evaluation on either backend, positions in text, and a fresh
database for each store test, on SQLite and on PostgreSQL (under CI=true PostgreSQL must be there: no skip)."""

from __future__ import annotations

import atexit
import datetime as dt
import os
import shutil
import tempfile
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from engine.model import Entry
from engine.rules.backends import DURABLE_AVAILABLE
from engine.rules.evaluate import Violation, evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import load_text
from engine.rules.ruleset import RuleSet
from engine.store.db import make_engine, session_factory, upgrade

REPO = Path(__file__).resolve().parent.parent
BUNDLED_RULES = REPO / "rules" / "acme-corp.yaml"
AS_OF = dt.date(2026, 4, 6)
CONTEXT = EvaluationContext(as_of=AS_OF)
BACKENDS = ("python", "durable")
def kill_rounds(default: int) -> int:
    """How many times a kill test kills its sync: its own number, or ``OCGATE_TEST_KILLS`` (at least 3) where a
    shorter run is wanted (CI's other Pythons: what is tested there is the interpreter, not more kill points)."""
    wanted = os.environ.get("OCGATE_TEST_KILLS")
    return max(3, int(wanted)) if wanted else default  # three: a full run among them (mattero's third)


PG_ADMIN_URL = os.environ.get("OCGATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CTX = EvaluationContext(as_of=dt.date(2026, 4, 6), period_start=dt.date(2026, 3, 1), period_end=dt.date(2026, 3, 31))


def make_entry(**fields: Any) -> Entry:
    """A valid hourly time entry; any field can be overridden (``source_id`` makes the uid unique)."""
    record: dict[str, Any] = {
        "source_system": "test",
        "source_id": "1",
        "entry_kind": "time",
        "work_date": "2026-03-10",
    }
    record.update(fields)
    return Entry(**record)


def make_expense(**fields: Any) -> Entry:
    return make_entry(**{"entry_kind": "expense", "fee_basis": "unit", **fields})


def rules_yaml(rules: str, header: str = "") -> str:
    """A complete rule file around an indented ``rules:`` block (both given without leading indentation)."""
    head = "id: test-rules\nversion: 1\n" + textwrap.dedent(header)
    body = textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ")
    return f"{head}rules:\n{body}\n"


def load_rules(rules: str, header: str = "", file: str = "rules.yaml") -> RuleSet:
    return load_text(rules_yaml(rules, header), file)


def run(
    entries: Sequence[Entry],
    ruleset: RuleSet,
    backend: str,
    context: EvaluationContext = CONTEXT,
    statuses: tuple[str, ...] = ("active", "shadow"),
) -> list[Violation]:
    return evaluate(list(entries), ruleset, context=context, backend=backend, statuses=statuses)


def flagged(violations: Sequence[Violation], rule_id: str | None = None) -> set[str]:
    """The source ids of the entries flagged (by one rule, if given)."""
    return {v.entry_uid.split(":")[2] for v in violations if rule_id is None or v.rule_id == rule_id}


def only(violations: Sequence[Violation], source_id: str, rule_id: str | None = None) -> Violation:
    found = [v for v in violations
             if v.entry_uid.split(":")[2] == source_id and (rule_id is None or v.rule_id == rule_id)]
    assert len(found) == 1, f"expected one violation for {source_id}, got {found}"
    return found[0]


def decisive(violation: Violation) -> dict[str, Any]:
    """The comparison that made the rule fire (named types put it last), as rendered for output."""
    assert violation.evidence, violation
    return violation.evidence[-1].as_dict()


def locate(text: str, token: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based line and column of the ``occurrence``-th ``token`` in ``text``."""
    start = -1
    for _ in range(occurrence):
        start = text.index(token, start + 1)
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    return line, column


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "durable" and not DURABLE_AVAILABLE:
        pytest.skip("durable-rules is not importable on this interpreter")
    return request.param


def entry(source_id: str, **changes: object) -> Entry:
    """A clean Acme entry; each source id is its own timekeeper and task, so batches hold no duplicates or long days."""
    base: dict[str, object] = dict(
        source_system="clio", source_tenant="us/1", source_id=source_id, source_version='"v1"', entry_kind="time",
        ledes_client_id="ACME01", law_firm_matter_id="2026-0017", timekeeper_ledes_id="TK1002",
        timekeeper_source_id=f"user-{source_id}", timekeeper_name="Okafor, Daniel", timekeeper_classification="PARTNR",
        work_date="2026-03-10", hours_worked="1.5", hours_billed="1.5", rate="925.00", currency="USD",
        utbms_task_code="L210", utbms_activity_code="A103",
        narrative=f"Drafted answer and affirmative defenses to the amended counterclaim ({source_id})",
    )
    base.update(changes)
    return Entry.model_validate(base)


# Databases -----------------------------------------------------------------------------------------------

def _postgres_database(template: str | None = None) -> Iterator[str]:
    """A fresh database for one test (empty, or a copy of ``template``), dropped afterwards."""
    name = f"ocgate_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
    except Exception as exc:  # server not running
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true and is not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


_TEMPLATES: dict[str, str] = {}


def _migrated_template(kind: str) -> str:
    """A store migrated to the newest revision once per test process (an SQLite file, or a PostgreSQL database
    used as a template), which each store test copies: migrating every test's store from nothing cost about half
    a second a test."""
    if kind in _TEMPLATES:
        return _TEMPLATES[kind]
    if kind == "sqlite":
        folder = tempfile.mkdtemp(prefix="ocgate-template-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = str(Path(folder) / "template.db")
        upgrade(f"sqlite:///{path}")
        _TEMPLATES[kind] = path
        return path
    name = f"ocgate_template_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # server not running
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true and is not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    finally:
        admin.dispose()

    def drop() -> None:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    atexit.register(drop)
    upgrade(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")  # disposes its engine: a template takes no connections
    _TEMPLATES[kind] = name
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it: for the tests of migrating a store from nothing."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ocgate.db"
    else:
        yield from _postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store at the newest revision, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "ocgate.db"
        shutil.copyfile(_migrated_template("sqlite"), path)
        yield f"sqlite:///{path}"
    else:
        yield from _postgres_database(_migrated_template("postgresql"))


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()
