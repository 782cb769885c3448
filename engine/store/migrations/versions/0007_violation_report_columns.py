"""The findings report without a join: on each violation, the entry's columns the report groups and filters by
(work date, LEDES and source client ids, matter, timekeeper, currency) and its adjustment's amount, and a partial
index over the current findings of active-status rules by work date and entry that holds all the report reads,
and one telling whether an entry ever had a finding of an active-status rule (the report's clean entries).
Existing rows are filled in from their entries and adjustments, in chunks of violation ids.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 17:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.store.models

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 50_000
INDEX_COLUMNS = ['entry_work_date', 'entry_id', 'rule_id', 'severity', 'entry_ledes_client_id',
                 'entry_client_source_id', 'entry_matter_id', 'entry_timekeeper', 'adjustment_amount', 'entry_currency']


def upgrade() -> None:
    with op.batch_alter_table('violations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('entry_work_date', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('entry_ledes_client_id', sa.String(length=60), nullable=True))
        batch_op.add_column(sa.Column('entry_client_source_id', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('entry_matter_id', sa.String(length=60), nullable=True))
        batch_op.add_column(sa.Column('entry_timekeeper', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('entry_currency', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('adjustment_amount', engine.store.models.ExactDecimal(), nullable=True))
    fill(op.get_bind())
    with op.batch_alter_table('violations', schema=None) as batch_op:
        batch_op.create_index('ix_violations_report', INDEX_COLUMNS, unique=False,
                              postgresql_where=sa.text("current AND rule_status = 'active'"),
                              sqlite_where=sa.text("current = 1 AND rule_status = 'active'"))
        batch_op.create_index('ix_violations_entry_active', ['entry_id'], unique=False,
                              postgresql_where=sa.text("rule_status = 'active'"),
                              sqlite_where=sa.text("rule_status = 'active'"))


def fill(bind: sa.Connection, chunk: int = CHUNK) -> None:
    """Copy the entries' columns onto their violations, a range of violation ids at a time. A superseded
    violation gets its entry's present values (the report reads current ones only)."""
    if bind.dialect.name == 'postgresql':
        currency = "e.record ->> 'currency'"
        amount = "CAST(violations.adjustment ->> 'amount' AS numeric)"
    else:  # the amount stays decimal text (as ExactDecimal keeps it in SQLite)
        currency = "json_extract(e.record, '$.currency')"
        amount = "CAST(json_extract(violations.adjustment, '$.amount') AS TEXT)"
    statement = sa.text(
        "UPDATE violations SET entry_work_date = e.work_date, entry_ledes_client_id = e.ledes_client_id, "
        "entry_client_source_id = e.client_source_id, entry_matter_id = e.law_firm_matter_id, "
        f"entry_timekeeper = COALESCE(e.timekeeper_name, e.timekeeper_key), entry_currency = {currency}, "
        f"adjustment_amount = {amount} "
        "FROM entries e WHERE e.id = violations.entry_id AND violations.id > :low AND violations.id <= :high")
    top = bind.execute(sa.text("SELECT MAX(id) FROM violations")).scalar() or 0
    for low in range(0, top, chunk):
        bind.execute(statement, {"low": low, "high": low + chunk})


def downgrade() -> None:
    with op.batch_alter_table('violations', schema=None) as batch_op:
        batch_op.drop_index('ix_violations_entry_active')
        batch_op.drop_index('ix_violations_report')
        batch_op.drop_column('adjustment_amount')
        batch_op.drop_column('entry_currency')
        batch_op.drop_column('entry_timekeeper')
        batch_op.drop_column('entry_matter_id')
        batch_op.drop_column('entry_client_source_id')
        batch_op.drop_column('entry_ledes_client_id')
        batch_op.drop_column('entry_work_date')
