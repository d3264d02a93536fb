"""an index for role addresses

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 05:40:00

The importer looks a batch's addresses up among the leads: personal ones through the partial
unique index (NOT email_role), role ones (info@, sales@) through nothing, so any batch holding
a role address read every lead.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_leads_role_email_key",
        "leads",
        ["email_key"],
        postgresql_where=sa.text("email_role"),
        sqlite_where=sa.text("email_role"),
    )


def downgrade() -> None:
    op.drop_index("ix_leads_role_email_key", table_name="leads")
