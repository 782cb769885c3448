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
    assert current_revision(db_url) == head == "0009"
    engine = make_engine(db_url)
    with engine.connect() as connection:  # the migrations build exactly what the models describe
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_migration_0009_keeps_one_current_evaluation_per_entry_and_version(db_url: str) -> None:
    """A store with two current evaluations of an entry by one version (intake never writes that; an old store
    might hold it) goes to 0009 with the newer one current, the older one and its findings superseded; the index
    then refuses a second current evaluation."""
    import pytest
    from alembic import command
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from engine.store.db import alembic_config, make_engine, session_factory, transaction
    from engine.store.models import Evaluation, RuleSetStatus, ViolationRow
    from engine.workflows.intake import ingest
    from engine.workflows.rulesets import add_ruleset_version
    from tests.conftest import CTX, REPO, entry

    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        add_ruleset_version(session, (REPO / "rules" / "acme-corp.yaml").read_text(), status=RuleSetStatus.ACTIVE)
        ingest(session, [entry("1", rate="990.00"), entry("2")], context=CTX)
    engine.dispose()
    command.downgrade(alembic_config(db_url), "0008")

    def copy(row: object, **changes: object) -> dict[str, object]:
        table = type(row).__table__  # type: ignore[attr-defined]
        return {**{c.key: getattr(row, c.key) for c in table.columns if c.key != "id"}, **changes}

    with transaction(sessions) as session:  # a second current evaluation of "1", with its finding
        old = session.scalar(select(Evaluation).join(ViolationRow, ViolationRow.evaluation_id == Evaluation.id))
        found = session.scalars(select(ViolationRow).where(ViolationRow.evaluation_id == old.id)).all()
        newer = Evaluation(**copy(old))
        session.add(newer)
        session.flush()
        session.add_all(ViolationRow(**copy(v, evaluation_id=newer.id)) for v in found)
        old_id, newer_id, entry_id, version_id = old.id, newer.id, old.entry_id, old.ruleset_version_id
    upgrade(db_url)
    assert current_revision(db_url) == "0009"
    with sessions() as session:
        current = {e.id: e.current for e in session.scalars(select(Evaluation).where(
            Evaluation.entry_id == entry_id, Evaluation.ruleset_version_id == version_id))}
        assert current == {old_id: False, newer_id: True}
        assert {v.current for v in session.scalars(select(ViolationRow).where(ViolationRow.evaluation_id == old_id))
                } == {False}
        assert {v.current for v in session.scalars(select(ViolationRow).where(
            ViolationRow.evaluation_id == newer_id))} == {True}
        assert session.query(Evaluation).filter(Evaluation.current.is_(True)).count() == 2  # "1" once, "2" once
    with pytest.raises(IntegrityError), transaction(sessions) as session:
        newest = session.get(Evaluation, newer_id)
        session.add(Evaluation(**copy(newest)))
    engine.dispose()
