"""Sources: connection credentials and the sync lease, sync runs, webhook events and subscriptions; the
firm's timekeeper table with source user ids and standard rates; data-quality flags on entries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 10:31:28.986952
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.store.models

UTC = engine.store.models.UtcDateTime(timezone=True)

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('timekeepers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ledes_id', sa.String(length=60), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('first_name', sa.String(length=100), nullable=True),
    sa.Column('last_name', sa.String(length=100), nullable=True),
    sa.Column('classification', sa.String(length=10), nullable=True),
    sa.Column('title', sa.String(length=100), nullable=True),
    sa.Column('updated_at', UTC, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('ledes_id')
    )
    op.create_table('sync_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('full', sa.Boolean(), nullable=False),
    sa.Column('started_at', UTC, nullable=False),
    sa.Column('finished_at', UTC, nullable=True),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['connection_id'], ['connections.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sync_runs', schema=None) as batch_op:
        batch_op.create_index('ix_sync_runs_connection', ['connection_id', 'id'], unique=False)

    op.create_table('timekeeper_rates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('timekeeper_id', sa.Integer(), nullable=False),
    sa.Column('rate', engine.store.models.ExactDecimal(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('effective_from', sa.Date(), nullable=False),
    sa.Column('effective_to', sa.Date(), nullable=True),
    sa.ForeignKeyConstraint(['timekeeper_id'], ['timekeepers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('timekeeper_id', 'currency', 'effective_from')
    )
    with op.batch_alter_table('timekeeper_rates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_timekeeper_rates_timekeeper_id'), ['timekeeper_id'], unique=False)

    op.create_table('timekeeper_source_ids',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('timekeeper_id', sa.Integer(), nullable=False),
    sa.Column('source_system', sa.String(length=40), nullable=False),
    sa.Column('source_user_id', sa.String(length=120), nullable=False),
    sa.ForeignKeyConstraint(['timekeeper_id'], ['timekeepers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source_system', 'source_user_id')
    )
    with op.batch_alter_table('timekeeper_source_ids', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_timekeeper_source_ids_timekeeper_id'), ['timekeeper_id'], unique=False)

    op.create_table('webhook_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('delivery_key', sa.String(length=128), nullable=False),
    sa.Column('event', sa.String(length=40), nullable=False),
    sa.Column('model', sa.String(length=40), nullable=True),
    sa.Column('record_id', sa.String(length=120), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('received_at', UTC, nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('processed_at', UTC, nullable=True),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['connection_id'], ['connections.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('connection_id', 'delivery_key')
    )
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_events_pending', ['processed_at', 'id'], unique=False)

    op.create_table('webhook_subscriptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=False),
    sa.Column('remote_id', sa.String(length=120), nullable=False),
    sa.Column('model', sa.String(length=40), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('secret', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('expires_at', UTC, nullable=True),
    sa.Column('created_at', UTC, nullable=False),
    sa.Column('renewed_at', UTC, nullable=True),
    sa.ForeignKeyConstraint(['connection_id'], ['connections.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('connection_id', 'remote_id')
    )
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('credentials', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('credentials_expire_at', UTC, nullable=True))
        batch_op.add_column(sa.Column('sync_lease_until', UTC, nullable=True))
        batch_op.add_column(sa.Column('sync_lease_owner', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('last_sync_at', UTC, nullable=True))

    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('data_quality_flags', sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.drop_column('data_quality_flags')

    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.drop_column('last_sync_at')
        batch_op.drop_column('sync_lease_owner')
        batch_op.drop_column('sync_lease_until')
        batch_op.drop_column('credentials_expire_at')
        batch_op.drop_column('credentials')

    op.drop_table('webhook_subscriptions')
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_events_pending')

    op.drop_table('webhook_events')
    with op.batch_alter_table('timekeeper_source_ids', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_timekeeper_source_ids_timekeeper_id'))

    op.drop_table('timekeeper_source_ids')
    with op.batch_alter_table('timekeeper_rates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_timekeeper_rates_timekeeper_id'))

    op.drop_table('timekeeper_rates')
    with op.batch_alter_table('sync_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_sync_runs_connection')

    op.drop_table('sync_runs')
    op.drop_table('timekeepers')
