"""Is the store usable: the database answers, and its schema is at the newest migration."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sqlalchemy import Engine, text


@cache
def head_revision() -> str | None:
    """The newest migration this code ships (read once: it cannot change while the process runs)."""
    from alembic.script import ScriptDirectory

    from engine.store.db import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()  # type: ignore[arg-type]


@dataclass(frozen=True)
class Readiness:
    database: bool  # a query answered
    revision: str | None  # the schema's migration, None for an empty database
    head: str | None
    problem: str | None  # why it is not ready, in a sentence

    @property
    def ready(self) -> bool:
        return self.problem is None


def readiness(engine: Engine) -> Readiness:
    """Query the database once and compare its migration with the newest. Never raises for a database that is
    down or unreadable: that is an answer (``problem`` says what), not an error."""
    from alembic.runtime.migration import MigrationContext

    head = head_revision()
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            revision = MigrationContext.configure(connection).get_current_revision()
    except Exception as exc:  # any driver error means "not reachable"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Readiness(False, None, head, f"the database is not reachable: {reason[:300]}")
    if revision is None:
        return Readiness(True, None, head, "the database has no schema (run: ocgate db upgrade)")
    if revision != head:
        return Readiness(True, revision, head,
                         f"the schema is at revision {revision}, not {head} (run: ocgate db upgrade)")
    return Readiness(True, revision, head, None)
