"""The store's schema: the migrations build exactly what the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from engine.store.db import current_revision


def test_the_migrations_reach_the_newest_revision(db_url: str, sessions: sessionmaker[Session]) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from engine.store.db import alembic_config, make_engine
    from engine.store.models import Base

    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert current_revision(db_url) == head == "0004"
    engine = make_engine(db_url)
    with engine.connect() as connection:  # the migrations build exactly what the models describe
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()
