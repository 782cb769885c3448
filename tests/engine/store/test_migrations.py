"""The store's schema: the migrations build exactly what the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

from engine.store.db import current_revision, upgrade


def test_the_migrations_reach_the_newest_revision(empty_db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from engine.store.db import alembic_config, make_engine
    from engine.store.models import Base

    db_url = empty_db_url
    assert current_revision(db_url) is None
    upgrade(db_url)
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert current_revision(db_url) == head == "0008"
    engine = make_engine(db_url)
    with engine.connect() as connection:  # the migrations build exactly what the models describe
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()
