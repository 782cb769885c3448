"""``entry_facts``: a narrow copy of each entry's fields that rules compare most (timekeeper, classification,
fee basis, currency, codes, narrative, rates, hours, amounts, billable and no-charge flags, client and matter ids,
work date), one row per entry, so that a backtest's database scans it instead of the wide entries table.
Existing entries are copied by the database itself, from their records and columns. And an index of the entries
each rule set version judged.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 20:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.store.models

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Columns of entries copied as they are, and fields read from the record (text, then decimals).
COPIED = ('entry_uid', 'timekeeper_key', 'work_date', 'entry_kind', 'source_system', 'ledes_client_id',
          'client_source_id', 'law_firm_matter_id', 'client_matter_id', 'matter_source_id', 'timekeeper_name', 'rate',
          'hours_billed', 'amount')
TEXTS = ('timekeeper_classification', 'timekeeper_ledes_id', 'timekeeper_source_id', 'fee_basis', 'currency',
         'unit_of_measure', 'utbms_task_code', 'utbms_activity_code', 'utbms_expense_code', 'narrative')
DECIMALS = ('standard_rate', 'hours_worked', 'quantity', 'adjustment_amount')
BOOLEANS = ('billable', 'no_charge')


def upgrade() -> None:
    op.create_table(
        'entry_facts',
        sa.Column('entry_id', sa.Integer(), nullable=False),
        sa.Column('entry_uid', sa.String(length=400), nullable=False),
        sa.Column('withdrawn', sa.Boolean(), nullable=False),
        sa.Column('timekeeper_key', sa.Text(), nullable=True),
        sa.Column('work_date', sa.Date(), nullable=False),
        sa.Column('entry_kind', sa.String(length=10), nullable=False),
        *[sa.Column(name, sa.Text(), nullable=True) for name in
          ('source_system', 'ledes_client_id', 'client_source_id', 'law_firm_matter_id', 'client_matter_id',
           'matter_source_id', 'timekeeper_name', *TEXTS)],
        *[sa.Column(name, engine.store.models.ExactDecimal(), nullable=True) for name in
          ('rate', 'standard_rate', 'hours_billed', 'hours_worked', 'quantity', 'amount', 'adjustment_amount')],
        *[sa.Column(name, sa.Boolean(), nullable=True) for name in BOOLEANS],
        sa.ForeignKeyConstraint(['entry_id'], ['entries.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('entry_id'),
    )
    # The record keeps every field that is not None, decimals as text (NUMERIC keeps their scale).
    if op.get_bind().dialect.name == 'postgresql':
        read = [f"record->>'{name}'" for name in TEXTS] + [f"(record->>'{name}')::numeric" for name in DECIMALS]
        read += [f"(record->>'{name}')::boolean" for name in BOOLEANS]
    else:  # json_extract gives JSON true and false as 1 and 0
        read = [f"json_extract(record, '$.{name}')" for name in (*TEXTS, *DECIMALS, *BOOLEANS)]
    names = ('entry_id', 'withdrawn', *COPIED, *TEXTS, *DECIMALS, *BOOLEANS)
    op.execute(f"INSERT INTO entry_facts ({', '.join(names)}) SELECT id, state = 'withdrawn', {', '.join(COPIED)}, "
               f"{', '.join(read)} FROM entries")
    op.create_index('ix_entry_facts_timekeeper_day', 'entry_facts', ['timekeeper_key', 'work_date', 'entry_id'],
                    unique=False)
    op.create_index('ix_evaluations_version', 'evaluations', ['ruleset_version_id', 'current', 'entry_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_evaluations_version', table_name='evaluations')
    op.drop_index('ix_entry_facts_timekeeper_day', table_name='entry_facts')
    op.drop_table('entry_facts')
