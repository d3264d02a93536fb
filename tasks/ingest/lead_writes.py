"""What one judged batch of lead rows writes, and the writing of it.

The writer judges a batch in Python and hands the outcome over as plain rows (``BatchWrites``);
``BatchStore`` writes them with set-based SQL in the thread that runs the session's statements,
while the writer judges the next batch. Nothing here decides anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, TableClause, select, text, true
from sqlalchemy.orm import Session

from tasks.decisions import NewDecision, note_decisions
from tasks.ingest.rows import IMPORT_ROW_COLUMNS, update_by_id
from tasks.owners import Verdict, insert_assignments
from tasks.spans import LeadSpan
from tasks.store.models import ImportRow, Lead, LeadAlias, LeadMatchKey
from tasks.store.upsert import (
    append_copy_text,
    append_rows,
    dialect_insert,
    fit,
    insert_ignore,
    insert_ignore_returning,
    staged,
    table,
    temp_name,
)

if TYPE_CHECKING:
    from tasks.cadences.new_leads import NewLeadEnrolment
    from tasks.grading import NewLeadGrades, StagedGrades

# The staged new leads' column naming their assignment decision's verdict (see ``BatchStore``).
VERDICT = "owner_verdict"
# Leads an import creates before PostgreSQL's planner is first told of them; then at each
# doubling (six ANALYZEs, 2.7 s in all, in a million-row import).
INFORM_PLANNER_FROM = 20_000


@dataclass
class BatchWrites:
    """A batch's rows to write, in the order they are written."""

    # With ids, owners and their assignment decisions' verdicts (see ``insert_assignments``).
    new_leads: list[dict[str, Any]] = field(default_factory=list)
    created_so_far: int = 0  # leads the import has created with this batch's
    updates: list[dict[str, Any]] = field(default_factory=list)  # {"id": ..., field: value}
    aliases: list[dict[str, Any]] = field(default_factory=list)
    match_keys: list[tuple[int, int]] = field(default_factory=list)  # (key, lead) beyond the log
    import_rows: list[dict[str, Any]] = field(default_factory=list)  # SQLite
    import_lines: list[str] = field(default_factory=list)  # PostgreSQL: COPY text
    decisions: list[NewDecision] = field(default_factory=list)


class BatchStore:
    """Writes batches into the import's transaction; used by one thread at a time."""

    def __init__(
        self,
        session: Session,
        run_id: int,
        as_of: dt.datetime,
        grades: NewLeadGrades | None = None,
        verdicts: Sequence[Verdict] = (),
        enrolment: NewLeadEnrolment | None = None,
    ) -> None:
        self.session, self.run_id, self.as_of, self.grades = session, run_id, as_of, grades
        self.verdicts, self.enrolment = verdicts, enrolment
        # Each batch's new leads are staged under one name: what reads them compiles once.
        self.stage_name = temp_name("staged_leads")
        # The number of leads created at which the planner is next told of them.
        self.inform_at = INFORM_PLANNER_FROM

    def write(self, batch: BatchWrites) -> None:
        self._insert_leads(batch.new_leads)
        if self.enrolment is not None:
            self.enrolment.enrol(
                self.session,
                ((r["id"], r["created_at"], r["phone"], r["country"])
                 for r in batch.new_leads if r["email"]),
            )  # fmt: skip
        self._inform_planner(batch.created_so_far)
        self._update_leads(batch.updates)
        if batch.aliases:
            insert_ignore(self.session, LeadAlias, batch.aliases, ["lead_id", "kind", "key"])
        if batch.match_keys:
            insert_ignore_returning(
                self.session,
                LeadMatchKey,
                [{"key": k, "lead_id": i} for k, i in batch.match_keys],
                ["key", "lead_id"],
                [],
            )
        if batch.import_rows:
            append_rows(self.session, ImportRow, batch.import_rows, prepared=("raw",))
        append_copy_text(self.session, ImportRow, IMPORT_ROW_COLUMNS, "".join(batch.import_lines))
        # Merges and rejections: each key names this run and an input row of it, so none can
        # exist yet.
        note_decisions(
            self.session, batch.decisions, run_id=self.run_id, as_of=self.as_of, new_keys=True
        )

    def _insert_leads(self, rows: list[dict[str, Any]]) -> None:
        """Insert the new leads (their ids taken already), staged first so that ``grades``
        scores and grades them in SQL before the one INSERT that stores them: each lead is
        written once."""
        if not rows:
            return
        names = [name for name in rows[0] if name != VERDICT]
        extra = [(VERDICT, Integer())]
        with staged(self.session, Lead, rows, "leads", name=self.stage_name, extra=extra) as stage:
            if self.grades is None:
                self._insert_staged(stage, names, None)
            else:
                span = LeadSpan(rows[0]["id"], rows[-1]["id"])
                with self.grades.over(self.session, stage, span) as born:
                    self._insert_staged(stage, names, born)
                    born.record(self.session, lost=[])
            insert_assignments(
                self.session, stage, self.verdicts, as_of=self.as_of, run_id=self.run_id
            )

    def _insert_staged(
        self, stage: TableClause, names: list[str], born: StagedGrades | None
    ) -> None:
        """Move the staged leads into ``leads``, graded when ``born`` is given.

        No ON CONFLICT: the import holds the lead-import lock (see ``import_leads``), so no
        other import can have created one of these people meanwhile, and a personal address
        already stored was found by the lookup. A conflict is a bug or a writer outside
        Nurture, and fails the import whole rather than be merged over silently.
        """
        values: dict[str, Any] = {name: stage.c[name] for name in names}
        source: Any = stage
        if born is not None:
            values["score"] = born.score(stage.c.score)
            values["grade"] = born.grade(stage.c.grade)
            source = stage.outerjoin(born.rows, born.rows.c.id == stage.c.id)
        query = select(*values.values()).select_from(source).where(true()).order_by(stage.c.id)
        self.session.execute(dialect_insert(self.session, Lead).from_select(list(values), query))

    def _inform_planner(self, created: int) -> None:
        """Let PostgreSQL's planner know the leads and aliases this import has written, each
        time the leads it created have doubled.

        Its statistics come from ANALYZE, which autovacuum runs on committed rows only: inside
        the import's one transaction it knew nothing of them, took a lookup of a batch's few
        thousand addresses for most of the table and read all of it (at a million rows, 28 s
        of lookups instead of 9). ANALYZE run inside the transaction samples its own rows.
        """
        if created < self.inform_at or self.session.get_bind().dialect.name != "postgresql":
            return
        self.inform_at = 2 * created
        self.session.execute(text(f"ANALYZE {table(Lead).name}, {table(LeadAlias).name}"))

    def _update_leads(self, changes: list[dict[str, Any]]) -> None:
        if not changes:
            return
        for change in changes:
            for name in ("first_name", "last_name", "company", "title"):
                if name in change:
                    change[name] = fit(getattr(Lead, name), change[name])
        update_by_id(self.session, Lead, changes)
