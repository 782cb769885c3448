"""The store's schema: the migrations build exactly what the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from engine.store.db import current_revision, upgrade


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_the_migrations_reach_the_newest_revision(empty_db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.schema import CreateIndex

    from engine.store.db import alembic_config, make_engine
    from engine.store.models import Base, for_dialect

    db_url = empty_db_url
    assert current_revision(db_url) is None
    upgrade(db_url)
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert current_revision(db_url) == head == "0010"
    engine = make_engine(db_url)
    dialect = engine.dialect.name

    def built_here(item: object, *_: object) -> bool:  # an index made for the other database only is not built here
        return for_dialect(item, dialect)

    with engine.connect() as connection:  # the migrations build exactly what the models describe
        context = MigrationContext.configure(connection, opts={"include_object": built_here})
        assert compare_metadata(context, Base.metadata) == []
        indexes = {row[0]: row[1] for row in connection.exec_driver_sql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'violations'" if dialect == "postgresql"
            else "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'violations'")}
    # Alembic reads no index on expressions back from SQLite: the report's is compared with the model's here.
    report = Base.metadata.tables["violations"].indexes
    wanted = {index.name for index in report if index.name.startswith("ix_violations_report")
              and for_dialect(index, dialect)}
    assert wanted == {f"ix_violations_report_{dialect}"}
    assert {name for name in indexes if name.startswith("ix_violations_report")} == wanted
    (index,) = (index for index in report if index.name in wanted)
    declared = str(CreateIndex(index).compile(dialect=engine.dialect))

    if dialect == "sqlite":
        assert " ".join(indexes[index.name].split()) == " ".join(declared.split())
    else:  # PostgreSQL gives back its own rendering: compare with its rendering of the model's, made and undone
        with engine.connect() as connection, connection.begin() as scratch:
            connection.exec_driver_sql(declared.replace(index.name, "ix_scratch_declared", 1))
            (rendered,) = connection.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_scratch_declared'").one()
            scratch.rollback()
        assert indexes[index.name] == rendered.replace("ix_scratch_declared", index.name, 1)
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
    assert current_revision(db_url) == "0010"
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


def test_migration_0010_moves_the_report_index_to_months_and_back(db_url: str) -> None:
    """0010 replaces the report's index by work date with the one by month (its own for each database), and its
    downgrade puts the old one back; the report's answer stays the same either way."""
    from alembic import command

    from engine.store.db import alembic_config, make_engine, session_factory, transaction
    from engine.store.models import RuleSetStatus
    from engine.workflows.intake import ingest
    from engine.workflows.reports import as_json, findings_report
    from engine.workflows.rulesets import add_ruleset_version
    from tests.conftest import CTX, REPO, entry

    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        add_ruleset_version(session, (REPO / "rules" / "acme-corp.yaml").read_text(), status=RuleSetStatus.ACTIVE)
        ingest(session, [entry("1", rate="990.00"), entry("2", narrative="x"), entry("3")], context=CTX)

    def report_indexes() -> set[str]:
        sql = ("SELECT indexname FROM pg_indexes WHERE tablename = 'violations'" if engine.dialect.name == "postgresql"
               else "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'violations'")
        with engine.connect() as connection:
            return {name for (name,) in connection.exec_driver_sql(sql) if name.startswith("ix_violations_report")}

    def report() -> dict[str, object]:
        with sessions() as session:
            return as_json(findings_report(session))

    by_month = {f"ix_violations_report_{engine.dialect.name}"}
    answer = report()
    assert answer["findings"] >= 2  # type: ignore[operator]
    assert report_indexes() == by_month
    command.downgrade(alembic_config(db_url), "0009")
    assert report_indexes() == {"ix_violations_report"}
    assert report() == answer
    upgrade(db_url)
    assert report_indexes() == by_month
    assert report() == answer
    engine.dispose()
