"""lead match keys without a foreign key

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 01:20:00

An import writes about seven block keys per new lead. PostgreSQL checks a foreign key row by
row (a trigger and a query each): at 100k imported rows that was 600k checks, more than the
rows' own insertion cost. The keys are derived from leads by the importer in the lead's own
transaction, and leads are never deleted, so the check guarded nothing.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lead_match_keys") as batch:
        batch.drop_constraint("fk_lead_match_keys_lead_id_leads", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("lead_match_keys") as batch:
        batch.create_foreign_key(
            "fk_lead_match_keys_lead_id_leads", "leads", ["lead_id"], ["id"]
        )
