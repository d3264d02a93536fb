"""dynamic templates

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 19:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('outbox_emails', schema=None) as batch_op:
        batch_op.add_column(sa.Column('template_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('template_data', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox_emails', schema=None) as batch_op:
        batch_op.drop_column('template_data')
        batch_op.drop_column('template_id')
