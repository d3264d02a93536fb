"""an index of owner assignments by round robin

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 06:00:00

A round robin resumes after the owner its latest assignment chose. That was found by walking
the decisions back from the newest one until an assignment of that pool: through every
decision made since (an import of a million rows makes two million).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_decisions_assignments",
        "decisions",
        ["rule", "id"],
        postgresql_where=sa.text("action = 'assign_owner'"),
        sqlite_where=sa.text("action = 'assign_owner'"),
    )


def downgrade() -> None:
    op.drop_index("ix_decisions_assignments", table_name="decisions")
