"""Budgets and the evaluation context: on entries, the source's matter id, the task code and the amount charged
(what a budget sums in the database), the as-of date and billing period each entry is judged with, and an index
on (matter, work date) for matter-days and budget totals. Existing rows are filled in from their records.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 17:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.store.models

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 2000


def upgrade() -> None:
    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('matter_source_id', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('utbms_task_code', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('charged_amount', engine.store.models.ExactDecimal(), nullable=True))
        batch_op.add_column(sa.Column('as_of', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('period_start', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('period_end', sa.Date(), nullable=True))
        batch_op.create_index('ix_entries_matter_date', ['law_firm_matter_id', 'work_date'], unique=False)
    _fill()


def _fill() -> None:
    """The new columns of the stored entries, from their records (as intake writes them)."""
    from engine.model import Entry
    from engine.rules.types.staffing import charged

    bind = op.get_bind()
    entries = sa.table('entries', sa.column('id', sa.Integer()), sa.column('record', sa.JSON()),
                       sa.column('matter_source_id', sa.String()), sa.column('utbms_task_code', sa.String()),
                       sa.column('charged_amount', engine.store.models.ExactDecimal()))
    last = 0
    while True:
        rows = bind.execute(sa.select(entries.c.id, entries.c.record).where(entries.c.id > last)
                            .order_by(entries.c.id).limit(CHUNK)).all()
        if not rows:
            return
        values = []
        for entry_id, record in rows:
            entry = Entry.model_validate(record)
            values.append({"b_id": entry_id, "matter_source_id": entry.matter_source_id,
                           "utbms_task_code": entry.utbms_task_code, "charged_amount": charged(entry, True)})
        bind.execute(entries.update().where(entries.c.id == sa.bindparam('b_id')), values)
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.drop_index('ix_entries_matter_date')
        batch_op.drop_column('period_end')
        batch_op.drop_column('period_start')
        batch_op.drop_column('as_of')
        batch_op.drop_column('charged_amount')
        batch_op.drop_column('utbms_task_code')
        batch_op.drop_column('matter_source_id')
