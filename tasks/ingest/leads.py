"""Import lead files: every row kept with its outcome; exact-email duplicates merged.

Rows are read as a stream and written in batches with set-based SQL (one lookup per batch, bulk
inserts). The caller's transaction covers the whole import: a structural error anywhere means
nothing is written.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from tasks.decisions import NewDecision, record_decisions
from tasks.ingest.dates import parse_moment
from tasks.ingest.normalise import CleanLead, clean_lead
from tasks.ingest.reader import Record, read_records
from tasks.store.models import (
    DecisionAction,
    ImportKind,
    ImportOutcome,
    ImportRow,
    Lead,
    LeadStatus,
)

BATCH = 5_000
# Fields a duplicate row may fill on the surviving lead; it never overwrites a value.
FILLABLE = ("phone", "first_name", "last_name", "company", "title", "country", "budget",
            "authority", "need", "timing")  # fmt: skip


@dataclass(frozen=True)
class Outcome:
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


def _identity(lead: CleanLead) -> str | None:
    """The exact dedupe key: the folded email, else a phone with the person's name."""
    if lead.email_key:
        return f"email:{lead.email_key}"
    if lead.phone:
        # Colleagues share switchboards: a phone alone is not one person.
        name = f"{(lead.first_name or '').casefold()} {(lead.last_name or '').casefold()}"
        return f"phone:{lead.phone}:{name.strip()}"
    return None


def import_leads(
    session: Session,
    files: list[Path],
    *,
    run_id: int,
    as_of: dt.datetime,
    encoding: str | None = None,
) -> LeadImportResult:
    result = LeadImportResult()
    for path in files:
        batch: list[tuple[Record, CleanLead]] = []
        for record in read_records(path, "lead", encoding):
            batch.append((record, clean_lead(record.fields)))
            if len(batch) >= BATCH:
                _write_batch(session, str(path), batch, run_id, as_of, result)
                batch = []
        _write_batch(session, str(path), batch, run_id, as_of, result)
    return result


def _existing(session: Session, batch: list[tuple[Record, CleanLead]]) -> dict[str, int]:
    emails = {c.email_key for _, c in batch if c.email_key and not c.rejected}
    phones = {c.phone for _, c in batch if c.phone and not c.email_key and not c.rejected}
    found: dict[str, int] = {}
    if emails:
        for lead_id, key in session.execute(
            select(Lead.id, Lead.email_key).where(
                Lead.email_key.in_(emails), Lead.merged_into_id.is_(None)
            )
        ):
            found[f"email:{key}"] = lead_id
    if phones:
        rows = session.execute(
            select(Lead.id, Lead.phone, Lead.first_name, Lead.last_name).where(
                Lead.phone.in_(phones), Lead.email_key.is_(None), Lead.merged_into_id.is_(None)
            )
        )
        for lead_id, phone, first, last in rows:
            name = f"{(first or '').casefold()} {(last or '').casefold()}"
            found.setdefault(f"phone:{phone}:{name.strip()}", lead_id)
    return found


def _write_batch(
    session: Session,
    file: str,
    batch: list[tuple[Record, CleanLead]],
    run_id: int,
    as_of: dt.datetime,
    result: LeadImportResult,
) -> None:
    if not batch:
        return
    known = _existing(session, batch)
    creating: dict[str, tuple[Record, CleanLead]] = {}
    fills: dict[str, dict[str, Any]] = {}
    for record, lead in batch:
        key = _identity(lead)
        if lead.rejected or key is None:
            continue
        if key not in known and key not in creating:
            creating[key] = (record, lead)
        else:
            fill = fills.setdefault(key, {})
            for name in FILLABLE:
                if (value := getattr(lead, name)) is not None:
                    fill.setdefault(name, value)
    if creating:
        rows = [_lead_row(record, lead, run_id, as_of) for record, lead in creating.values()]
        ids = session.scalars(
            insert(Lead).returning(Lead.id, sort_by_parameter_order=True), rows
        ).all()
        known.update(zip(creating, ids, strict=True))
        result.new_lead_ids.extend(ids)
    _fill_empty_fields(session, {known[k]: v for k, v in fills.items() if v})

    import_rows, outcomes = [], []
    first_rows = {id(record) for record, _ in creating.values()}
    for record, lead in batch:
        key = _identity(lead)
        lead_id: int | None = None
        if lead.rejected or key is None:
            outcome = ImportOutcome.REJECTED
        else:
            outcome = ImportOutcome.ACCEPTED if id(record) in first_rows else ImportOutcome.MERGED
            lead_id = known[key]
        result.counts["rows"] += 1
        result.counts[outcome.value] += 1
        outcomes.append(Outcome(file, record.row_number, outcome, lead_id, lead.reasons))
        import_rows.append(
            {
                "run_id": run_id,
                "kind": ImportKind.LEAD,
                "file": file,
                "row_number": record.row_number,
                "line_number": record.line_number,
                "raw": _jsonable(record.raw),
                "outcome": outcome,
                "lead_id": lead_id,
                "reasons": lead.reasons,
            }
        )
    row_ids = session.scalars(
        insert(ImportRow).returning(ImportRow.id, sort_by_parameter_order=True), import_rows
    ).all()
    result.outcomes.extend(outcomes)
    decisions = [
        NewDecision(
            dedupe_key=f"{o.outcome.value}:{row_id}",
            action=DecisionAction.MERGE
            if o.outcome is ImportOutcome.MERGED
            else DecisionAction.REJECT,
            rule="exact_match" if o.outcome is ImportOutcome.MERGED else "ingest",
            lead_id=o.lead_id,
            reason="; ".join(o.reasons)[:100]
            if o.outcome is ImportOutcome.REJECTED
            else "same email or phone and name",
            facts={"file": Path(o.file).name, "row": o.row},
        )
        for o, row_id in zip(outcomes, row_ids, strict=True)
        if o.outcome is not ImportOutcome.ACCEPTED
    ]
    record_decisions(session, decisions, run_id=run_id, as_of=as_of)


def _lead_row(record: Record, lead: CleanLead, run_id: int, as_of: dt.datetime) -> dict[str, Any]:
    created = parse_moment(record.fields["created"]) if record.fields.get("created") else None
    # A lead exists from its creation date on: flows only see leads created by their as_of.
    created = created or as_of
    return {
        "email": lead.email, "email_key": lead.email_key, "phone": lead.phone,
        "first_name": lead.first_name, "last_name": lead.last_name, "company": lead.company,
        "title": lead.title, "country": lead.country, "source": lead.source,
        "budget": lead.budget, "authority": lead.authority, "need": lead.need, "timing": lead.timing,
        "tags": lead.tags, "status": LeadStatus.NEW, "status_changed_at": created,
        "created_at": created, "cycle_started_at": created, "created_run_id": run_id, "score": 0,
    }  # fmt: skip


def _fill_empty_fields(session: Session, fills: dict[int, dict[str, Any]]) -> None:
    if not fills:
        return
    current = {lead.id: lead for lead in session.scalars(select(Lead).where(Lead.id.in_(fills)))}
    for lead_id, values in fills.items():
        lead = current[lead_id]
        for name, value in values.items():
            if getattr(lead, name) in (None, ""):
                setattr(lead, name, value)
    session.flush()


def _jsonable(raw: dict[str, Any]) -> dict[str, Any]:
    return {str(k): v if isinstance(v, str | int | float | bool | type(None) | list | dict) else str(v)
            for k, v in raw.items()}  # fmt: skip


def write_outcomes_csv(path: Path, outcomes: list[Outcome]) -> None:
    """``row,outcome,lead_id,reasons`` (row = 1-based data row; file added when several)."""
    several = len({o.file for o in outcomes}) > 1
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "outcome", "lead_id", "reasons", *(["file"] if several else [])])
        for o in outcomes:
            row = [o.row, o.outcome.value, o.lead_id or "", "; ".join(o.reasons)]
            writer.writerow(row + ([o.file] if several else []))
