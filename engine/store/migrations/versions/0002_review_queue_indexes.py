"""Partial indexes for the review queue (entries waiting for review, by date and by last change).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 06:47:01.121545
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


WAITING = sa.text("state IN ('in_review', 'held', 'conflict')")


def upgrade() -> None:
    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.create_index('ix_entries_waiting_date', ['work_date', 'id'], postgresql_where=WAITING,
                                sqlite_where=WAITING)
        batch_op.create_index('ix_entries_waiting_updated', ['updated_at', 'id'], postgresql_where=WAITING,
                                sqlite_where=WAITING)
        batch_op.create_index('ix_entries_waiting_client', ['ledes_client_id', 'work_date', 'id'],
                              postgresql_where=WAITING, sqlite_where=WAITING)
        batch_op.create_index('ix_entries_waiting_matter', ['law_firm_matter_id', 'work_date', 'id'],
                              postgresql_where=WAITING, sqlite_where=WAITING)



def downgrade() -> None:
    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.drop_index('ix_entries_waiting_matter', postgresql_where=WAITING, sqlite_where=WAITING)
        batch_op.drop_index('ix_entries_waiting_client', postgresql_where=WAITING, sqlite_where=WAITING)
        batch_op.drop_index('ix_entries_waiting_updated', postgresql_where=WAITING,
                                sqlite_where=WAITING)
        batch_op.drop_index('ix_entries_waiting_date', postgresql_where=WAITING,
                                sqlite_where=WAITING)

