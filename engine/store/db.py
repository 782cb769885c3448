"""Database URL, engine and sessions, and running the migrations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_URL = "sqlite:///ocgate.db"


def database_url(url: str | None = None) -> str:
    """The URL given, else ``OCGATE_DATABASE_URL``, else an SQLite file ``ocgate.db`` in this folder.

    ``postgresql://`` URLs use the psycopg 3 driver.
    """
    url = url or os.environ.get("OCGATE_DATABASE_URL") or DEFAULT_URL
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    elif url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgres://")
    return url


def _dumps(value: object) -> str:
    """JSON columns' text (orjson: several times faster than ``json.dumps`` on the records ingest writes).
    Money and hours are in the canonical records as decimal text already; a float never gets here from them."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")


def make_engine(url: str | None = None, **kwargs: object) -> Engine:
    url = database_url(url)
    kwargs = {"json_serializer": _dumps, "json_deserializer": orjson.loads, **kwargs}
    if url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
            cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            # 32 MiB of page cache (SQLite's default is 2 MiB): a large ingest updates the entries table's indexes
            # all over; with the default most of those pages are read back from the file. Allocated only as used.
            cursor.execute("PRAGMA cache_size=-32768")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back entirely if it raises."""
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str | None = None) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(str(resources.files("engine.store") / "migrations"))))
    config.set_main_option("sqlalchemy.url", database_url(url).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` (the newest by default)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)  # type: ignore[arg-type]


def current_revision(url: str | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with make_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
