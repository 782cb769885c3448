"""SQLite only: the findings report's index leads with the month and the entry's client, matter and timekeeper
(the groups the report adds up), so that SQLite, which has no hash aggregate, streams the groups out of the index
instead of sorting a year's entries into them; it replaces the index by work date there. PostgreSQL, which
hashes the groups, keeps its index by work date.

The index is on expressions, which SQLite's schema reflection does not read back: a later migration that makes
Alembic copy the violations table (a batch operation that recreates it) must create this index again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = "current = 1 AND rule_status = 'active'"
BY_MONTH = ("CREATE INDEX IF NOT EXISTS ix_violations_report_months ON violations ("
            "substr(entry_work_date, 1, 7), COALESCE(entry_ledes_client_id, entry_client_source_id), "
            "entry_matter_id, entry_timekeeper, rule_id, entry_id, severity, entry_work_date, entry_currency, "
            f"adjustment_amount, entry_ledes_client_id, entry_client_source_id) WHERE {WHERE}")
BY_DATE = ['entry_work_date', 'entry_id', 'rule_id', 'severity', 'entry_ledes_client_id', 'entry_client_source_id',
           'entry_matter_id', 'entry_timekeeper', 'adjustment_amount', 'entry_currency']


def upgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    op.execute(BY_MONTH)
    op.drop_index('ix_violations_report', table_name='violations', sqlite_where=sa.text(WHERE))


def downgrade() -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    op.create_index('ix_violations_report', 'violations', BY_DATE, sqlite_where=sa.text(WHERE))
    op.execute('DROP INDEX IF EXISTS ix_violations_report_months')
