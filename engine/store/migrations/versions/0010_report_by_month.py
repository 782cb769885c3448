"""The findings report's index leads with the month and the entry's client, matter and timekeeper (the groups the
report adds up), then the rule and the entry, so that the groups stream out of it in order, each counting its
distinct entries as it goes, instead of being sorted (SQLite) or hashed from a row per entry (PostgreSQL). It
replaces the index by work date. The month is an expression, one per database: SQLite's text prefix, PostgreSQL's
``date_trunc`` (which indexes only immutable expressions).

SQLite's schema reflection does not read an index on expressions back: a later migration that makes Alembic copy
the violations table (a batch operation that recreates it) must create this index again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = {'sqlite': "current = 1 AND rule_status = 'active'", 'postgresql': "current AND rule_status = 'active'"}
MONTH = {'sqlite': "substr(entry_work_date, 1, 7)",
         'postgresql': "date_trunc('month', CAST(entry_work_date AS timestamp))"}
TAIL = ("COALESCE(entry_ledes_client_id, entry_client_source_id), entry_matter_id, entry_timekeeper, rule_id, "
        "entry_id, severity, entry_work_date, entry_currency, adjustment_amount, entry_ledes_client_id, "
        "entry_client_source_id")
BY_DATE = ['entry_work_date', 'entry_id', 'rule_id', 'severity', 'entry_ledes_client_id', 'entry_client_source_id',
           'entry_matter_id', 'entry_timekeeper', 'adjustment_amount', 'entry_currency']


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(f"CREATE INDEX IF NOT EXISTS ix_violations_report_{dialect} ON violations ({MONTH[dialect]}, {TAIL}) "
               f"WHERE {WHERE[dialect]}")
    op.drop_index('ix_violations_report', table_name='violations')


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_index('ix_violations_report', 'violations', BY_DATE, postgresql_where=sa.text(WHERE['postgresql']),
                    sqlite_where=sa.text(WHERE['sqlite']))
    op.execute(f'DROP INDEX IF EXISTS ix_violations_report_{dialect}')
