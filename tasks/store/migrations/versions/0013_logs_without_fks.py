"""the import's logs and provenance pointers without foreign keys

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 12:00:00

An import of a million rows writes about two million decisions, a million import rows, a
million leads and a million enrolments; PostgreSQL checks every foreign key of every one of
them row by row (a trigger and a query each, ~10 microseconds), which at 100k rows cost more
than a tenth of the whole import. These columns are written by a run about the run itself
(``run_id``, ``created_run_id``) or, in the decision and import-row logs, about leads that
run created or read; runs and leads are never deleted, so the checks guarded nothing, as with
the match keys (0010). The foreign keys that carry the domain (an enrolment's, an alias's or
an opportunity's lead, a lead's owner, a merge's survivor) stay.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, constraint, column, referred table)
DROPPED = (
    ("decisions", "fk_decisions_lead_id_leads", "lead_id", "leads"),
    ("decisions", "fk_decisions_run_id_runs", "run_id", "runs"),
    ("import_rows", "fk_import_rows_lead_id_leads", "lead_id", "leads"),
    ("import_rows", "fk_import_rows_run_id_runs", "run_id", "runs"),
    ("leads", "fk_leads_created_run_id_runs", "created_run_id", "runs"),
    ("cadence_enrolments", "fk_cadence_enrolments_run_id_runs", "run_id", "runs"),
)


def upgrade() -> None:
    for table, constraint, _, _ in DROPPED:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(constraint, type_="foreignkey")


def downgrade() -> None:
    for table, constraint, column, referred in DROPPED:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(constraint, referred, [column], ["id"])
