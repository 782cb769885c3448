"""At most one current evaluation of an entry by a rule set version: a unique partial index. Intake has always
superseded an entry's evaluations before recording new ones; should a store hold two current ones of an entry by
one version anyway, the older is superseded first (with its findings), as intake would have done.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 02:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 1000

evaluations = sa.table('evaluations', sa.column('id', sa.Integer), sa.column('entry_id', sa.Integer),
                       sa.column('ruleset_version_id', sa.Integer), sa.column('current', sa.Boolean))
violations = sa.table('violations', sa.column('evaluation_id', sa.Integer), sa.column('current', sa.Boolean))


def upgrade() -> None:
    bind = op.get_bind()
    newer = evaluations.alias('newer')
    older = bind.execute(sa.select(evaluations.c.id).where(
        evaluations.c.current.is_(True),
        sa.exists().where(newer.c.entry_id == evaluations.c.entry_id,
                          newer.c.ruleset_version_id == evaluations.c.ruleset_version_id,
                          newer.c.current.is_(True), newer.c.id > evaluations.c.id))).scalars().all()
    for start in range(0, len(older), CHUNK):
        chunk = older[start:start + CHUNK]
        bind.execute(sa.update(evaluations).where(evaluations.c.id.in_(chunk)).values(current=False))
        bind.execute(sa.update(violations).where(violations.c.evaluation_id.in_(chunk)).values(current=False))
    op.create_index('ux_evaluations_current', 'evaluations', ['entry_id', 'ruleset_version_id'], unique=True,
                    postgresql_where=sa.text('current'), sqlite_where=sa.text('current = 1'))


def downgrade() -> None:
    op.drop_index('ux_evaluations_current', table_name='evaluations', postgresql_where=sa.text('current'),
                  sqlite_where=sa.text('current = 1'))
