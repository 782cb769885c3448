"""Partial indexes for the review queue's other filters: the source's client and matter ids, the timekeeper, the
source, and entries with and without data-quality flags (each an ordered walk of the waiting entries only).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = "state IN ('in_review', 'held', 'conflict')"
FLAGGED = "(data_quality_flags IS NOT NULL AND CAST(data_quality_flags AS TEXT) NOT IN ('null', '[]'))"
UNFLAGGED = "(data_quality_flags IS NULL OR CAST(data_quality_flags AS TEXT) IN ('null', '[]'))"

INDEXES = [
    ('ix_entries_waiting_client_source', ['client_source_id', 'work_date', 'id'], WAITING),
    ('ix_entries_waiting_client_matter', ['client_matter_id', 'work_date', 'id'], WAITING),
    ('ix_entries_waiting_timekeeper', ['timekeeper_key', 'work_date', 'id'], WAITING),
    ('ix_entries_waiting_source', ['source_system', 'work_date', 'id'], WAITING),
    ('ix_entries_waiting_flagged', ['work_date', 'id'], f"{WAITING} AND {FLAGGED}"),
    ('ix_entries_waiting_unflagged', ['work_date', 'id'], f"{WAITING} AND {UNFLAGGED}"),
]


def upgrade() -> None:
    with op.batch_alter_table('entries', schema=None) as batch_op:
        for name, columns, where in INDEXES:
            batch_op.create_index(name, columns, postgresql_where=sa.text(where), sqlite_where=sa.text(where))


def downgrade() -> None:
    with op.batch_alter_table('entries', schema=None) as batch_op:
        for name, _, where in reversed(INDEXES):
            batch_op.drop_index(name, postgresql_where=sa.text(where), sqlite_where=sa.text(where))
