"""Import CRM exports: deals (stage, dates, how they closed) and activities, keyed to leads.

A row is tied to its lead by email (the exact dedupe key) or by lead id. A row that cannot be
used (unknown lead, unknown stage, a lost deal without a reason) is kept as a rejected import row
with its reasons. Re-importing adds nothing: deals and activities are keyed by their external id
(an activity without one by a digest of what it says). Activities dated after ``as_of`` are
kept: every later computation filters on ``occurred_at <= as_of``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.orm import Session

from tasks.ingest.dates import parse_day, parse_moment
from tasks.ingest.leads import Outcome
from tasks.ingest.normalise import email_key, fold, normalise_email, source_slug
from tasks.ingest.reader import Kind, Record, read_records
from tasks.ingest.rows import jsonable, update_by_id
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
from tasks.store.upsert import dialect_insert, fit, table

BATCH = 5_000
ALREADY_IMPORTED = "already imported; left as is"

KIND_ALIASES: dict[str, ActivityKind] = {
    **{fold(k.value): k for k in ActivityKind},
    "emailreply": ActivityKind.REPLY, "replied": ActivityKind.REPLY,
    "inboundemail": ActivityKind.REPLY, "emailreceived": ActivityKind.REPLY,
    "outofoffice": ActivityKind.AUTO_REPLY, "autoreply": ActivityKind.AUTO_REPLY,
    "autoresponse": ActivityKind.AUTO_REPLY, "ooo": ActivityKind.AUTO_REPLY,
    "meeting": ActivityKind.MEETING_HELD, "meetingheld": ActivityKind.MEETING_HELD,
    "meetingcompleted": ActivityKind.MEETING_HELD, "meetingmissed": ActivityKind.MEETING_MISSED,
    "noshow": ActivityKind.MEETING_MISSED, "meetingnoshow": ActivityKind.MEETING_MISSED,
    "meetingscheduled": ActivityKind.MEETING_SCHEDULED,
    "meetingbooked": ActivityKind.MEETING_SCHEDULED, "phonecall": ActivityKind.CALL,
    "callmade": ActivityKind.CALL, "saidno": ActivityKind.SAID_NO, "declined": ActivityKind.SAID_NO,
    "namedfollowup": ActivityKind.NAMED_FOLLOWUP, "followupdate": ActivityKind.NAMED_FOLLOWUP,
    "followuprequested": ActivityKind.NAMED_FOLLOWUP, "stagechange": ActivityKind.STAGE_CHANGED,
    "notes": ActivityKind.NOTE,
}  # fmt: skip
LOST_REASON_ALIASES: dict[str, LostReason] = {
    **{fold(r.value): r for r in LostReason},
    "budget": LostReason.NO_BUDGET, "price": LostReason.NO_BUDGET,
    "tooexpensive": LostReason.NO_BUDGET, "pricetoohigh": LostReason.NO_BUDGET,
    "timing": LostReason.BAD_TIMING, "notnow": LostReason.BAD_TIMING,
    "losttocompetitor": LostReason.COMPETITOR, "chosecompetitor": LostReason.COMPETITOR,
    "authority": LostReason.NO_AUTHORITY, "nodecisionmaker": LostReason.NO_AUTHORITY,
    "need": LostReason.NO_NEED, "notinterested": LostReason.NO_NEED,
    "noresponse": LostReason.UNRESPONSIVE, "wentdark": LostReason.UNRESPONSIVE,
    "ghosted": LostReason.UNRESPONSIVE, "championleft": LostReason.CONTACT_LEFT,
    "leftcompany": LostReason.CONTACT_LEFT, "bankrupt": LostReason.OUT_OF_BUSINESS,
    "implementedcompetitor": LostReason.COMPETITOR_IMPLEMENTED,
}  # fmt: skip
STATUS_ALIASES: dict[str, OpportunityStatus] = {
    "": OpportunityStatus.OPEN, "open": OpportunityStatus.OPEN, "inprogress": OpportunityStatus.OPEN,
    "won": OpportunityStatus.WON, "closedwon": OpportunityStatus.WON, "win": OpportunityStatus.WON,
    "lost": OpportunityStatus.LOST, "closedlost": OpportunityStatus.LOST,
}  # fmt: skip


@dataclass
class CrmImportResult:
    counts: dict[str, int] = field(
        default_factory=lambda: {"rows": 0, "accepted": 0, "updated": 0, "rejected": 0}
    )
    # Ids of the opportunities or activities this import inserted.
    new_ids: list[int] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _LeadRef:
    id: int
    owner_id: int | None
    status: LeadStatus


@dataclass(slots=True)
class _Kept:
    """One input row and its verdict, on its way to becoming an ImportRow."""

    file: str
    record: Record
    outcome: ImportOutcome
    lead_id: int | None
    reasons: list[str]


def _read_all(files: Sequence[Path | str], kind: Kind) -> list[list[tuple[str, Record]]]:
    # Every file is read before anything is written: a structural error leaves no trace.
    batches: list[list[tuple[str, Record]]] = []
    batch: list[tuple[str, Record]] = []
    for path in files:
        for record in read_records(Path(path), kind):
            batch.append((str(path), record))
            if len(batch) >= BATCH:
                batches.append(batch)
                batch = []
    if batch:
        batches.append(batch)
    return batches


def _address_key(raw: str | None) -> str | None:
    if not raw:
        return None
    address, _ = normalise_email(raw)
    return email_key(address) if address else raw.strip().casefold()


def _leads_for(session: Session, records: list[Record]) -> dict[str, _LeadRef]:
    """The batch's leads by ``email:<key>`` and ``id:<n>``; merged-away leads by their survivor."""
    emails = {key for r in records if (key := _address_key(r.fields.get("email")))}
    ids = {int(v) for r in records if (v := r.fields.get("lead_id", "")).isdigit()}
    columns = (Lead.id, Lead.email_key, Lead.merged_into_id, Lead.owner_id, Lead.status)
    rows = session.execute(
        select(*columns).where(or_(Lead.email_key.in_(emails), Lead.id.in_(ids)))
    ).all()
    survivors: dict[int, _LeadRef] = {}
    pending = {r.merged_into_id for r in rows if r.merged_into_id}
    redirect: dict[int, int] = {}
    for _ in range(8):  # merge chains are short; the bound only guards against a cycle
        if not pending:
            break
        found = session.execute(select(*columns).where(Lead.id.in_(pending))).all()
        pending = set()
        for s in found:
            if s.merged_into_id:
                redirect[s.id] = s.merged_into_id
                pending.add(s.merged_into_id)
            else:
                survivors[s.id] = _LeadRef(s.id, s.owner_id, s.status)

    def survivor(lead_id: int) -> _LeadRef | None:
        seen = set()
        while lead_id in redirect and lead_id not in seen:
            seen.add(lead_id)
            lead_id = redirect[lead_id]
        return survivors.get(lead_id)

    index: dict[str, _LeadRef] = {}
    for r in rows:
        ref = (
            survivor(r.merged_into_id) if r.merged_into_id else _LeadRef(r.id, r.owner_id, r.status)
        )
        if ref is None:
            continue
        if r.email_key in emails:
            index[f"email:{r.email_key}"] = ref
        if r.id in ids:
            index[f"id:{r.id}"] = ref
    return index


def _lead_of(record: Record, leads: dict[str, _LeadRef]) -> tuple[_LeadRef | None, str | None]:
    raw_email, raw_id = record.fields.get("email"), record.fields.get("lead_id")
    if raw_email and (ref := leads.get(f"email:{_address_key(raw_email)}")):
        return ref, None
    if raw_id and raw_id.isdigit() and (ref := leads.get(f"id:{int(raw_id)}")):
        return ref, None
    if raw_email:
        return None, f"no lead with email {raw_email}"
    if raw_id:
        return None, f"no lead with id {raw_id}"
    return None, "no email or lead id to find the lead by"


def _keep_rows(
    session: Session, kind: ImportKind, kept: list[_Kept], run_id: int, result: CrmImportResult
) -> None:
    for k in kept:
        result.counts["rows"] += 1
        result.counts[k.outcome.value] += 1
        result.outcomes.append(
            Outcome(k.file, k.record.row_number, k.outcome, k.lead_id, k.reasons)
        )
    if kept:
        session.execute(
            insert(table(ImportRow)),
            [
                {
                    "run_id": run_id,
                    "kind": kind,
                    "file": fit(ImportRow.file, k.file),
                    "row_number": k.record.row_number,
                    "line_number": k.record.line_number,
                    "raw": jsonable(k.record.raw),
                    "outcome": k.outcome,
                    "lead_id": k.lead_id,
                    "reasons": k.reasons,
                }
                for k in kept
            ],
        )


def lost_reason(value: str) -> LostReason | None:
    """A lost reason from the picklist, as people write it ("Budget", "lost to competitor")."""
    return LOST_REASON_ALIASES.get(fold(value))


def _date_field(
    fields: dict[str, str], name: str, label: str, default: dt.datetime | None, reasons: list[str]
) -> dt.datetime | None:
    raw = fields.get(name)
    if not raw:
        return default
    moment = parse_moment(raw)
    if moment is None:
        reasons.append(f"unreadable {label} {raw!r}")
    return moment


def _amount(raw: str | None, flags: list[str]) -> int | None:
    if not raw:
        return None
    # "$12,500.00", "12500 EUR": the figure is what counts; the currency is the book's.
    text = re.sub(r"[^\d.\-]", "", raw.replace(",", ""))
    try:
        return round(float(text))
    except ValueError:
        flags.append(f"unreadable amount {raw!r}")
        return None


# --- opportunities -----------------------------------------------------------------------------


def import_opportunities(
    session: Session,
    files: Sequence[Path | str],
    *,
    run_id: int,
    as_of: dt.datetime,
    stages: list[str],
    competitors: Sequence[str] = (),
) -> CrmImportResult:
    """Import deals; ``stages`` are the configured pipeline stages a deal may be in, and
    ``competitors`` the picklist a competitor is checked against (flagged when off it)."""
    result = CrmImportResult()
    by_slug = {source_slug(s): s for s in stages}
    for batch in _read_all(files, "opportunity"):
        records = [r for _, r in batch]
        leads = _leads_for(session, records)
        wanted = {r.fields["external_id"] for r in records if r.fields.get("external_id")}
        stored = set(
            session.scalars(
                select(Opportunity.external_id).where(Opportunity.external_id.in_(wanted))
            )
        )
        kept: list[_Kept] = []
        new: dict[str, tuple[_Kept, dict[str, Any]]] = {}
        for file, record in batch:
            lead, problem = _lead_of(record, leads)
            row, reasons, flags = _opportunity_row(record, by_slug, as_of)
            if row is not None:
                row["competitor"] = picklist_competitor(row["competitor"], competitors, flags)
            lead_id = lead.id if lead else None
            if problem:
                reasons.insert(0, problem)
            external = record.fields.get("external_id", "")
            if reasons or row is None or lead is None:
                kept.append(_Kept(file, record, ImportOutcome.REJECTED, lead_id, reasons))
            elif external in stored or external in new:
                flags.insert(0, ALREADY_IMPORTED)
                kept.append(_Kept(file, record, ImportOutcome.UPDATED, lead_id, flags))
            else:
                row |= {"lead_id": lead.id, "owner_id": lead.owner_id}
                verdict = _Kept(file, record, ImportOutcome.ACCEPTED, lead_id, flags)
                new[external] = (verdict, row)
                kept.append(verdict)
        inserted = _insert_absent(session, Opportunity, [row for _, row in new.values()])
        for external, (verdict, _) in new.items():
            if external in inserted:
                result.new_ids.append(inserted[external])
            else:  # imported by a concurrent run between our lookup and our insert
                verdict.outcome = ImportOutcome.UPDATED
                verdict.reasons = [ALREADY_IMPORTED, *verdict.reasons]
        won = [row for external, (_, row) in new.items() if external in inserted]
        _mark_customers(session, won, leads, as_of)
        _keep_rows(session, ImportKind.OPPORTUNITY, kept, run_id, result)
    session.flush()
    return result


def _insert_absent(
    session: Session, model: type[Opportunity] | type[Activity], rows: list[dict[str, Any]]
) -> dict[str, int]:
    """Insert-if-absent by external id, as ``insert_ignore`` does, but one multi-row statement.

    Returns {external id: new id} of the rows inserted: a row whose id is already stored (a
    concurrent import of the same file) inserts nothing and is not returned.
    """
    if not rows:
        return {}
    columns = table(model).c
    stmt = (
        dialect_insert(session, model)
        .on_conflict_do_nothing(index_elements=["external_id"])
        .returning(columns.external_id, columns.id)
    )
    return {external: new_id for external, new_id in session.execute(stmt, rows)}


def _mark_customers(
    session: Session, rows: list[dict[str, Any]], leads: dict[str, _LeadRef], as_of: dt.datetime
) -> None:
    """A lead with a won deal is a customer, from the day it was won (never after ``as_of``)."""
    current = {ref.id: ref.status for ref in leads.values()}
    since: dict[int, dt.datetime] = {}
    for row in rows:
        lead_id = row["lead_id"]
        if row["status"] is OpportunityStatus.WON and current.get(lead_id) != LeadStatus.CUSTOMER:
            at = min(row["closed_at"] or as_of, as_of)
            since[lead_id] = min(since.get(lead_id, at), at)
    if since:
        update_by_id(
            session,
            Lead,
            [
                {"id": lead_id, "status": LeadStatus.CUSTOMER, "status_reason": "won",
                 "status_changed_at": at}
                for lead_id, at in since.items()
            ],
        )  # fmt: skip


def picklist_competitor(name: str | None, picklist: Sequence[str], flags: list[str]) -> str | None:
    """The picklist's spelling of a competitor; one off the list is kept as given, and flagged."""
    if not name or not picklist:
        return name
    known = {p.casefold(): p for p in picklist}
    if name.casefold() in known:
        return known[name.casefold()]
    flags.append(
        f"competitor {name!r} is not on the picklist (pipeline.yaml: {', '.join(picklist)})"
    )
    return name


def _opportunity_row(
    record: Record, stages: dict[str, str], as_of: dt.datetime
) -> tuple[dict[str, Any] | None, list[str], list[str]]:
    """(row, reasons to reject, flags on an accepted row)."""
    f = record.fields
    reasons: list[str] = []
    flags: list[str] = []
    external = f.get("external_id")
    if not external:
        reasons.append("no deal id: a deal needs one so that a re-import does not duplicate it")
    stage = stages.get(source_slug(f.get("stage", "")))
    if stage is None:
        reasons.append(
            f"unknown stage {f.get('stage', '')!r} (expected one of: {', '.join(stages.values())})"
        )
    status = STATUS_ALIASES.get(fold(f.get("status", "")))
    if status is None:
        reasons.append(f"unknown status {f.get('status')!r} (expected open, won or lost)")
    created = _date_field(f, "created", "created date", as_of, reasons)
    entered = _date_field(f, "stage_entered_at", "stage entered date", created, reasons)
    closed_at = reason = None
    if status in (OpportunityStatus.WON, OpportunityStatus.LOST):
        closed_at = _date_field(f, "closed_at", "close date", as_of, reasons)
    if status is OpportunityStatus.LOST:
        reason = lost_reason(f.get("lost_reason", ""))
        if reason is None:
            # A manual close must say why: that is the treasure map for whoever comes back.
            reasons.append(
                f"a lost deal needs a lost reason from: {', '.join(r.value for r in LostReason)}; "
                f"got {f.get('lost_reason', '')!r}"
            )
    amount = _amount(f.get("amount"), flags)
    if reasons:
        return None, reasons, flags
    return (
        {
            "external_id": external,
            "name": fit(Opportunity.name, f.get("name") or f"Deal {external}"),
            "amount": amount,
            "stage": stage,
            "stage_entered_at": entered,
            "status": status,
            "created_at": created,
            "closed_at": closed_at,
            "closed_by": ClosedBy.PERSON if closed_at else None,
            "lost_reason": reason,
            "competitor": fit(Opportunity.competitor, f.get("competitor")),
            "lost_notes": f.get("lost_notes") if status is OpportunityStatus.LOST else None,
            "cycle": 0,
            "history": {},
        },
        [],
        flags,
    )


# --- activities --------------------------------------------------------------------------------


def import_activities(
    session: Session,
    files: Sequence[Path | str],
    *,
    run_id: int,
    as_of: dt.datetime,
    competitors: Sequence[str] = (),
) -> CrmImportResult:
    """Import activities once each, keyed by external id; unknown leads or deals are rejected."""
    result = CrmImportResult()
    for batch in _read_all(files, "activity"):
        records = [r for _, r in batch]
        leads = _leads_for(session, records)
        deal_ids = {r.fields["deal_id"] for r in records if r.fields.get("deal_id")}
        deals = {
            external: (opportunity_id, lead_id)
            for external, opportunity_id, lead_id in session.execute(
                select(Opportunity.external_id, Opportunity.id, Opportunity.lead_id).where(
                    Opportunity.external_id.in_(deal_ids)
                )
            )
        }
        kept: list[_Kept] = []
        candidates: list[tuple[_Kept, dict[str, Any]]] = []
        for file, record in batch:
            lead, problem = _lead_of(record, leads)
            lead_id = lead.id if lead else None
            row, reasons, flags = _activity_row(record, deals, lead_id)
            if row is not None:
                row["competitor"] = picklist_competitor(row["competitor"], competitors, flags)
            if problem:
                reasons.insert(0, problem)
            if reasons or row is None or lead is None:
                kept.append(_Kept(file, record, ImportOutcome.REJECTED, lead_id, reasons))
                continue
            verdict = _Kept(file, record, ImportOutcome.ACCEPTED, lead_id, flags)
            candidates.append((verdict, {**row, "lead_id": lead.id}))
            kept.append(verdict)
        _insert_activities(session, candidates, result)
        _keep_rows(session, ImportKind.ACTIVITY, kept, run_id, result)
    session.flush()
    return result


def _insert_activities(
    session: Session, candidates: list[tuple[_Kept, dict[str, Any]]], result: CrmImportResult
) -> None:
    keys = {row["external_id"] for _, row in candidates}
    stored = set(
        session.scalars(select(Activity.external_id).where(Activity.external_id.in_(keys)))
    )
    fresh: dict[str, dict[str, Any]] = {}
    for verdict, row in candidates:
        if row["external_id"] in stored or row["external_id"] in fresh:
            verdict.outcome = ImportOutcome.UPDATED
            verdict.reasons = [ALREADY_IMPORTED, *verdict.reasons]
        else:
            fresh[row["external_id"]] = row
    inserted = _insert_absent(session, Activity, list(fresh.values()))
    result.new_ids.extend(inserted.values())
    for verdict, row in candidates:
        if verdict.outcome is ImportOutcome.ACCEPTED and row["external_id"] not in inserted:
            # Imported by a concurrent run between our lookup and our insert.
            verdict.outcome = ImportOutcome.UPDATED
            verdict.reasons = [ALREADY_IMPORTED, *verdict.reasons]


def activity_kind(value: str) -> ActivityKind | None:
    """An activity kind as CRMs name it ("Email reply", "Meeting held", "No show")."""
    return KIND_ALIASES.get(fold(value))


def _derived_id(row: dict[str, Any], deal: str | None) -> str:
    """An id for an activity the export gave none: the same row always gets the same one."""
    facts = [row["lead_id"], row["kind"].value, row["occurred_at"].isoformat(), deal,
             str(row["followup_on"]), row["reason"] and row["reason"].value, row["competitor"],
             row["notes"]]  # fmt: skip
    return "derived:" + hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:40]


def _activity_row(
    record: Record, deals: dict[str, tuple[int, int]], lead_id: int | None
) -> tuple[dict[str, Any] | None, list[str], list[str]]:
    """(row, reasons to reject, flags on an accepted row)."""
    f = record.fields
    reasons: list[str] = []
    flags: list[str] = []
    kind = activity_kind(f.get("kind", ""))
    if kind is None:
        reasons.append(
            f"unknown activity type {f.get('kind', '')!r} "
            f"(expected one of: {', '.join(k.value for k in ActivityKind)})"
        )
    occurred = _date_field(f, "occurred_at", "date", None, reasons)
    if occurred is None and not f.get("occurred_at"):
        reasons.append("no date: an activity needs the moment it happened")
    followup_on = None
    if raw_day := f.get("followup_on"):
        followup_on = parse_day(raw_day)
        if followup_on is None:
            (reasons if kind is ActivityKind.NAMED_FOLLOWUP else flags).append(
                f"unreadable follow-up date {raw_day!r}"
            )
    if kind is ActivityKind.NAMED_FOLLOWUP and followup_on is None and not raw_day:
        reasons.append("a named follow-up needs a Follow Up On date")
    reason = None
    if raw_reason := f.get("reason"):
        reason = lost_reason(raw_reason)
        if reason is None:
            # A prospect's "no" is kept even when its reason is off the picklist.
            reason = LostReason.OTHER
            flags.append(f"reason {raw_reason!r} is not on the picklist; recorded as other")
    opportunity_id = None
    deal = f.get("deal_id")
    if deal:
        found = deals.get(deal)
        if found is None:
            reasons.append(f"no deal with id {deal}")
        elif lead_id is not None and found[1] != lead_id:
            reasons.append(f"deal {deal} belongs to another lead")
        else:
            opportunity_id = found[0]
    if reasons or lead_id is None:
        return None, reasons, flags
    row: dict[str, Any] = {
        "opportunity_id": opportunity_id,
        "kind": kind,
        "occurred_at": occurred,
        "followup_on": followup_on,
        "reason": reason,
        "competitor": fit(Activity.competitor, f.get("competitor")),
        "notes": f.get("notes"),
    }
    row["external_id"] = fit(Activity.external_id, f.get("external_id")) or _derived_id(
        {**row, "lead_id": lead_id}, deal
    )
    return row, [], flags
