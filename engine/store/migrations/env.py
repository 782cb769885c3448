"""Alembic environment: runs the migrations on the URL set by engine.store.db.alembic_config."""

from __future__ import annotations

from alembic import context

from engine.store.db import make_engine
from engine.store.models import Base, for_dialect

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        dialect = connection.dialect.name
        # Autogenerate leaves alone what is made for the other database only (the findings report's index).
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          include_object=lambda item, *_: for_dialect(item, dialect))
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
