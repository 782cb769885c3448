"""Every store test runs on SQLite and on PostgreSQL. Under CI=true PostgreSQL must be there: no skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from engine.store.db import make_engine, session_factory, upgrade

PG_ADMIN_URL = os.environ.get("OCGATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_database() -> Iterator[str]:
    """A fresh database for one test, dropped afterwards."""
    name = f"ocgate_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
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


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ocgate.db"
    else:
        yield from _postgres_database()


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()
