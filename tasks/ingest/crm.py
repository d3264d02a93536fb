"""Import CRM exports: deals (with stage and dates) and activities, keyed to leads by email or id.

A row that cannot be used (unknown lead, unknown stage, a lost deal without a reason) is kept as
a rejected import row with its reasons. Re-importing adds nothing: deals and activities are keyed
by their external id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from tasks.ingest.dates import parse_day, parse_moment
from tasks.ingest.reader import Kind, Record, read_records
from tasks.store.models import (
    Activity,
    ActivityKind,
    ClosedBy,
    ImportKind,
    ImportOutcome,
    ImportRow,
    Lead,
    LeadStatus,
    LostReason,
    Opportunity,
    OpportunityStatus,
)
from tasks.store.upsert import insert_ignore

BATCH = 5_000
KIND_ALIASES = {
    "emailreply": ActivityKind.REPLY, "replied": ActivityKind.REPLY,
    "outofoffice": ActivityKind.AUTO_REPLY, "autoreply": ActivityKind.AUTO_REPLY,
    "meetingheld": ActivityKind.MEETING_HELD, "meetingmissed": ActivityKind.MEETING_MISSED,
    "noshow": ActivityKind.MEETING_MISSED, "meetingscheduled": ActivityKind.MEETING_SCHEDULED,
    "meetingbooked": ActivityKind.MEETING_SCHEDULED, "saidno": ActivityKind.SAID_NO,
    "namedfollowup": ActivityKind.NAMED_FOLLOWUP, "followupdate": ActivityKind.NAMED_FOLLOWUP,
    "stagechanged": ActivityKind.STAGE_CHANGED, "stagechange": ActivityKind.STAGE_CHANGED,
}  # fmt: skip


@dataclass
class CrmImportResult:
    counts: dict[str, int] = field(
        default_factory=lambda: {"rows": 0, "accepted": 0, "updated": 0, "rejected": 0}
    )


def _fold(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def _batches(files: list[Path], kind: Kind) -> Iterator[tuple[Path, list[Record]]]:
    for path in files:
        batch: list[Record] = []
        for record in read_records(path, kind):
            batch.append(record)
            if len(batch) >= BATCH:
                yield path, batch
                batch = []
        if batch:
            yield path, batch


def _leads_for(session: Session, batch: list[Record]) -> dict[str, int]:
    """Lead ids by folded email and by id, for one batch, in two queries."""
    emails = {r.fields["email"].casefold() for r in batch if r.fields.get("email")}
    ids = {int(r.fields["lead_id"]) for r in batch if r.fields.get("lead_id", "").isdigit()}
    found: dict[str, int] = {}
    for lead_id, key, merged in session.execute(
        select(Lead.id, Lead.email_key, Lead.merged_into_id).where(Lead.email_key.in_(emails))
    ):
        found[f"email:{key}"] = merged or lead_id
    for (lead_id,) in session.execute(select(Lead.id).where(Lead.id.in_(ids))):
        found[f"id:{lead_id}"] = lead_id
    return found


def _lead_of(record: Record, leads: dict[str, int]) -> tuple[int | None, str | None]:
    if email := record.fields.get("email"):
        lead_id = leads.get(f"email:{email.casefold()}")
        return lead_id, None if lead_id else f"no lead with email {email}"
    lead_id = leads.get(f"id:{record.fields.get('lead_id')}")
    return lead_id, None if lead_id else f"no lead with id {record.fields.get('lead_id')}"


def _keep_rows(
    session: Session, kind: ImportKind, path: Path, rows: list[tuple[Record, ImportOutcome, int | None, list[str]]],
    run_id: int, result: CrmImportResult,
) -> None:  # fmt: skip
    for _, outcome, _, _ in rows:
        result.counts["rows"] += 1
        result.counts[outcome.value] += 1
    if rows:
        session.execute(
            insert(ImportRow),
            [
                {
                    "run_id": run_id,
                    "kind": kind,
                    "file": str(path),
                    "row_number": r.row_number,
                    "line_number": r.line_number,
                    "raw": {str(k): str(v) for k, v in r.raw.items()},
                    "outcome": outcome,
                    "lead_id": lead_id,
                    "reasons": reasons,
                }
                for r, outcome, lead_id, reasons in rows
            ],
        )


def import_opportunities(
    session: Session, files: list[Path], *, run_id: int, as_of: dt.datetime, stages: list[str]
) -> CrmImportResult:
    result = CrmImportResult()
    for path, batch in _batches(files, "opportunity"):
        leads = _leads_for(session, batch)
        known = set(
            session.scalars(
                select(Opportunity.external_id).where(
                    Opportunity.external_id.in_({r.fields.get("external_id") for r in batch})
                )
            )
        )
        owners: dict[int | None, int | None] = {
            row.id: row.owner_id
            for row in session.execute(
                select(Lead.id, Lead.owner_id).where(Lead.id.in_(set(leads.values())))
            )
        }
        kept: list[tuple[Record, ImportOutcome, int | None, list[str]]] = []
        new: list[dict[str, Any]] = []
        won_leads: set[int] = set()
        for record in batch:
            lead_id, problem = _lead_of(record, leads)
            row, reasons = _opportunity_row(record, lead_id, stages, as_of)
            reasons = ([problem] if problem else []) + reasons
            external = record.fields.get("external_id")
            if reasons or row is None:
                kept.append((record, ImportOutcome.REJECTED, lead_id, reasons))
            elif external and external in known:
                kept.append(
                    (record, ImportOutcome.UPDATED, lead_id, ["already imported; left as is"])
                )
            else:
                row["owner_id"] = owners.get(lead_id)
                new.append(row)
                if external:
                    known.add(external)
                if row["status"] is OpportunityStatus.WON:
                    won_leads.add(row["lead_id"])
                kept.append((record, ImportOutcome.ACCEPTED, lead_id, []))
        if new:
            session.execute(insert(Opportunity), new)
        if won_leads:
            for lead in session.scalars(select(Lead).where(Lead.id.in_(won_leads))):
                lead.status, lead.status_reason, lead.status_changed_at = (
                    LeadStatus.CUSTOMER,
                    "won",
                    as_of,
                )
        _keep_rows(session, ImportKind.OPPORTUNITY, path, kept, run_id, result)
    session.flush()
    return result


def _opportunity_row(
    record: Record, lead_id: int | None, stages: list[str], as_of: dt.datetime
) -> tuple[dict[str, Any] | None, list[str]]:
    f = record.fields
    reasons: list[str] = []
    stage = f.get("stage", "").strip().casefold().replace(" ", "_")
    if stage not in stages:
        reasons.append(f"unknown stage {f.get('stage')!r} (expected one of: {', '.join(stages)})")
    try:
        status = OpportunityStatus(f.get("status", "open").strip().casefold() or "open")
    except ValueError:
        reasons.append(f"unknown status {f.get('status')!r} (expected open, won or lost)")
        status = OpportunityStatus.OPEN
    created = parse_moment(f["created"]) if f.get("created") else as_of
    entered = parse_moment(f["stage_entered_at"]) if f.get("stage_entered_at") else created
    if created is None or entered is None:
        reasons.append("unreadable date")
    reason = competitor = None
    closed_at = None
    if status is not OpportunityStatus.OPEN:
        closed_at = parse_moment(f["closed_at"]) if f.get("closed_at") else as_of
    if status is OpportunityStatus.LOST:
        try:
            reason = LostReason(f.get("lost_reason", "").strip().casefold().replace(" ", "_"))
        except ValueError:
            # A manual close must say why: that is the treasure map for whoever comes back.
            reasons.append(
                f"a lost deal needs a lost reason from: {', '.join(r.value for r in LostReason)}; "
                f"got {f.get('lost_reason')!r}"
            )
        competitor = f.get("competitor")
    amount = f.get("amount", "").replace(",", "")
    if reasons or lead_id is None:
        return None, reasons
    return {
        "external_id": f.get("external_id"), "lead_id": lead_id, "name": f.get("name") or f"Deal {f.get('external_id', '')}",
        "amount": int(float(amount)) if amount.replace(".", "", 1).isdigit() else None,
        "stage": stage, "stage_entered_at": entered, "status": status, "created_at": created,
        "closed_at": closed_at, "closed_by": ClosedBy.PERSON if closed_at else None,
        "lost_reason": reason, "competitor": competitor,
        "lost_notes": f.get("lost_notes") if status is OpportunityStatus.LOST else None,
        "cycle": 0, "history": {},
    }, []  # fmt: skip


def import_activities(
    session: Session, files: list[Path], *, run_id: int, as_of: dt.datetime
) -> CrmImportResult:
    result = CrmImportResult()
    for path, batch in _batches(files, "activity"):
        leads = _leads_for(session, batch)
        deals: dict[str, int] = {
            str(row.external_id): row.id
            for row in session.execute(
                select(Opportunity.external_id, Opportunity.id).where(
                    Opportunity.external_id.in_(
                        {r.fields["deal_id"] for r in batch if r.fields.get("deal_id")}
                    )
                )
            )
        }
        kept: list[tuple[Record, ImportOutcome, int | None, list[str]]] = []
        rows: list[tuple[Record, dict[str, Any]]] = []
        for record in batch:
            lead_id, problem = _lead_of(record, leads)
            row, reasons = _activity_row(record, deals)
            reasons = ([problem] if problem else []) + reasons
            if reasons or row is None or lead_id is None:
                kept.append((record, ImportOutcome.REJECTED, lead_id, reasons))
            else:
                rows.append((record, {**row, "lead_id": lead_id}))
        stored = set(
            session.scalars(
                select(Activity.external_id).where(
                    Activity.external_id.in_(
                        {r["external_id"] for _, r in rows if r["external_id"]}
                    )
                )
            )
        )
        fresh: list[dict[str, Any]] = []
        for record, row in rows:
            if row["external_id"] and row["external_id"] in stored:
                kept.append(
                    (
                        record,
                        ImportOutcome.UPDATED,
                        row["lead_id"],
                        ["already imported; left as is"],
                    )
                )
                continue
            if row["external_id"]:
                stored.add(row["external_id"])
            fresh.append(row)
            kept.append((record, ImportOutcome.ACCEPTED, row["lead_id"], []))
        # insert_ignore keeps a concurrent import of the same file from duplicating anything.
        insert_ignore(session, Activity, [r for r in fresh if r["external_id"]], ["external_id"])
        if unkeyed := [r for r in fresh if not r["external_id"]]:
            session.execute(insert(Activity), unkeyed)
        _keep_rows(session, ImportKind.ACTIVITY, path, kept, run_id, result)
    session.flush()
    return result


def _activity_row(record: Record, deals: dict[str, int]) -> tuple[dict[str, Any] | None, list[str]]:
    f = record.fields
    reasons: list[str] = []
    raw_kind = f.get("kind", "")
    try:
        kind = ActivityKind(raw_kind.strip().casefold().replace(" ", "_"))
    except ValueError:
        kind = KIND_ALIASES.get(_fold(raw_kind))  # type: ignore[assignment]
        if kind is None:
            reasons.append(
                f"unknown activity type {raw_kind!r} (expected one of: {', '.join(k.value for k in ActivityKind)})"
            )
    occurred = parse_moment(f.get("occurred_at", ""))
    if occurred is None:
        reasons.append(f"unreadable date {f.get('occurred_at')!r}")
    followup_on = parse_day(f["followup_on"]) if f.get("followup_on") else None
    if kind is ActivityKind.NAMED_FOLLOWUP and followup_on is None:
        reasons.append("a named follow-up needs a Follow Up On date")
    reason = None
    if f.get("reason"):
        try:
            reason = LostReason(f["reason"].strip().casefold().replace(" ", "_"))
        except ValueError:
            reasons.append(f"unknown reason {f['reason']!r}")
    opportunity_id = None
    if deal := f.get("deal_id"):
        opportunity_id = deals.get(deal)
        if opportunity_id is None:
            reasons.append(f"no deal with id {deal}")
    if reasons:
        return None, reasons
    return {
        "external_id": f.get("external_id"), "opportunity_id": opportunity_id, "kind": kind,
        "occurred_at": occurred, "followup_on": followup_on, "reason": reason,
        "competitor": f.get("competitor"), "notes": f.get("notes"),
    }, []  # fmt: skip
