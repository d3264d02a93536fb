"""What became of every input row of a lead import: kept in the store, read back, written out."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.store.models import ImportKind, ImportOutcome, ImportRow


class Outcome(NamedTuple):
    """What became of one input row: ``(file, row, outcome, lead_id, reasons)``."""

    file: str
    row: int
    outcome: ImportOutcome
    lead_id: int | None
    reasons: list[str]


@dataclass
class LeadImportResult:
    counts: dict[str, int] = field(
        default_factory=lambda: {"rows": 0, "accepted": 0, "merged": 0, "rejected": 0}
    )
    new_lead_ids: list[int] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


def stored_outcomes(session: Session, run_id: int) -> Iterator[Outcome]:
    """An import's per-row outcomes, read back from the store in input order, streamed."""
    rows = session.execute(
        select(
            ImportRow.file, ImportRow.row_number, ImportRow.outcome, ImportRow.lead_id,
            ImportRow.reasons,
        )
        .where(ImportRow.run_id == run_id, ImportRow.kind == ImportKind.LEAD)
        .order_by(ImportRow.id)
        .execution_options(yield_per=10_000)
    )  # fmt: skip
    for row in rows:
        yield Outcome(row.file, row.row_number, row.outcome, row.lead_id, list(row.reasons))


def write_outcomes_csv(path: Path, outcomes: Iterable[Outcome], *, several_files: bool) -> None:
    """``row,outcome,lead_id,reasons`` (row = 1-based data row), plus ``file`` for several files."""
    several = several_files
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "outcome", "lead_id", "reasons", *(["file"] if several else [])])
        for o in outcomes:
            line = [o.row, o.outcome.value, "" if o.lead_id is None else o.lead_id,
                    "; ".join(o.reasons)]  # fmt: skip
            writer.writerow(line + ([o.file] if several else []))
