"""lead match keys

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 10_000


def upgrade() -> None:
    table = op.create_table(
        'lead_match_keys',
        sa.Column('key', sa.BigInteger(), nullable=False),
        sa.Column('lead_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_lead_match_keys_lead_id_leads')),
        sa.PrimaryKeyConstraint('key', 'lead_id', name=op.f('pk_lead_match_keys')),
    )
    # Leads stored before fuzzy matching get their keys now, so new rows can find them. The
    # keys are computed by the matching module of this release: a later change to how keys are
    # made comes with its own migration that recomputes them.
    from tasks.ingest.matching import Person, block_keys

    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, first_name, last_name, company_key, website, email_key, phone "
            "FROM leads WHERE merged_into_id IS NULL ORDER BY id"
        )
    )
    while chunk := rows.fetchmany(BATCH):
        keys = [
            {'key': key, 'lead_id': r.id}
            for r in chunk
            for key in block_keys(
                Person(r.id, r.first_name, r.last_name, r.company_key, r.website, r.email_key, r.phone)
            )
        ]
        if keys:
            op.bulk_insert(table, keys)


def downgrade() -> None:
    op.drop_table('lead_match_keys')
