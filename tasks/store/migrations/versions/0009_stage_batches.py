"""stage batches

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 21:46:38
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tasks.store.models

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stage_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("lo", sa.BigInteger(), nullable=True),
        sa.Column("hi", sa.BigInteger(), nullable=True),
        sa.Column("done_at", tasks.store.models.UTCDateTime(), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_stage_batches_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_batches")),
        sa.UniqueConstraint("run_id", "seq", "lo", name=op.f("uq_stage_batches_run_id_seq_lo")),
    )


def downgrade() -> None:
    op.drop_table("stage_batches")
