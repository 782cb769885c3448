"""Invoices, their lines and events, destinations, firm settings and portal rejections; entries get
the invoice lock and the record as the source sent it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 08:20:41.002806
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import engine.store.models

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('destinations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('clients', sa.JSON(), nullable=False),
    sa.Column('created_at', engine.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('invoices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=20), nullable=False),
    sa.Column('client_id', sa.String(length=60), nullable=False),
    sa.Column('matters', sa.JSON(), nullable=False),
    sa.Column('format', sa.String(length=8), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('invoice_date', sa.Date(), nullable=False),
    sa.Column('period_start', sa.Date(), nullable=False),
    sa.Column('period_end', sa.Date(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('total', engine.store.models.ExactDecimal(), nullable=False),
    sa.Column('fees_total', engine.store.models.ExactDecimal(), nullable=False),
    sa.Column('expenses_total', engine.store.models.ExactDecimal(), nullable=False),
    sa.Column('adjustments_total', engine.store.models.ExactDecimal(), nullable=False),
    sa.Column('tax_total', engine.store.models.ExactDecimal(), nullable=True),
    sa.Column('line_count', sa.Integer(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('profile', sa.JSON(), nullable=False),
    sa.Column('notes', sa.JSON(), nullable=False),
    sa.Column('destination', sa.String(length=120), nullable=True),
    sa.Column('destination_ref', sa.String(length=200), nullable=True),
    sa.Column('portal_state', sa.String(length=20), nullable=True),
    sa.Column('submitted_at', engine.store.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('submit_lease_until', engine.store.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('polled_at', engine.store.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_by', sa.String(length=120), nullable=False),
    sa.Column('created_at', engine.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('voided_at', engine.store.models.UtcDateTime(timezone=True), nullable=True),
    sa.Column('void_reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('number')
    )
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.create_index('ix_invoices_client', ['client_id', 'period_end'], unique=False)

    op.create_table('settings',
    sa.Column('key', sa.String(length=60), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('updated_at', engine.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('invoice_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('invoice_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=30), nullable=False),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('at', engine.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('invoice_events', schema=None) as batch_op:
        batch_op.create_index('ix_invoice_events_invoice', ['invoice_id', 'id'], unique=False)

    op.create_table('invoice_lines',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('invoice_id', sa.Integer(), nullable=False),
    sa.Column('line_number', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=2), nullable=False),
    sa.Column('entry_id', sa.Integer(), nullable=True),
    sa.Column('entry_version', sa.Integer(), nullable=True),
    sa.Column('law_firm_matter_id', sa.String(length=60), nullable=False),
    sa.Column('units', engine.store.models.ExactDecimal(), nullable=True),
    sa.Column('unit_cost', engine.store.models.ExactDecimal(), nullable=True),
    sa.Column('adjustment', engine.store.models.ExactDecimal(), nullable=False),
    sa.Column('review_adjustment', engine.store.models.ExactDecimal(), nullable=True),
    sa.Column('tax_total', engine.store.models.ExactDecimal(), nullable=True),
    sa.Column('total', engine.store.models.ExactDecimal(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('notes', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['entry_id'], ['entries.id'], ),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('invoice_id', 'line_number')
    )
    with op.batch_alter_table('invoice_lines', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_invoice_lines_entry_id'), ['entry_id'], unique=False)

    op.create_table('portal_rejections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('invoice_id', sa.Integer(), nullable=False),
    sa.Column('rejection_id', sa.String(length=120), nullable=False),
    sa.Column('entry_id', sa.Integer(), nullable=True),
    sa.Column('line_number', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('reason_code', sa.String(length=80), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('amount', engine.store.models.ExactDecimal(), nullable=True),
    sa.Column('proposal', sa.JSON(), nullable=True),
    sa.Column('received_at', engine.store.models.UtcDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', engine.store.models.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['entry_id'], ['entries.id'], ),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('portal_rejections', schema=None) as batch_op:
        batch_op.create_index('ix_portal_rejections_invoice', ['invoice_id', 'rejection_id'], unique=False)
        batch_op.create_index('ix_portal_rejections_entry', ['entry_id', 'resolved_at'], unique=False)

    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source_record', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('invoice_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_entries_invoice_id'), ['invoice_id'], unique=False)
        batch_op.create_foreign_key('fk_entries_invoice_id', 'invoices', ['invoice_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.drop_constraint('fk_entries_invoice_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_entries_invoice_id'))
        batch_op.drop_column('invoice_id')
        batch_op.drop_column('source_record')

    with op.batch_alter_table('portal_rejections', schema=None) as batch_op:
        batch_op.drop_index('ix_portal_rejections_entry')
        batch_op.drop_index('ix_portal_rejections_invoice')

    op.drop_table('portal_rejections')
    with op.batch_alter_table('invoice_lines', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_invoice_lines_entry_id'))

    op.drop_table('invoice_lines')
    with op.batch_alter_table('invoice_events', schema=None) as batch_op:
        batch_op.drop_index('ix_invoice_events_invoice')

    op.drop_table('invoice_events')
    op.drop_table('settings')
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.drop_index('ix_invoices_client')

    op.drop_table('invoices')
    op.drop_table('destinations')
