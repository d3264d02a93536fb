"""Close dead deals: the prospect said no, missed meetings, or the deal rotted in its stage.

Each close is a decision with its facts, a structured lost reason, a treasure-map note for
whoever picks the account up later, and (where it makes sense) a courteous exit email.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, literal, or_, select, update
from sqlalchemy.orm import Session, aliased

from tasks.config.loader import NurtureConfig
from tasks.decisions import NewDecision, record_decisions
from tasks.email.outbox import QueuedEmail, enqueue_emails
from tasks.rules.facts import EPOCH, greatest
from tasks.store.models import (
    PROGRESS_KINDS,
    Activity,
    ActivityKind,
    ClosedBy,
    DecisionAction,
    LostReason,
    Opportunity,
    OpportunityStatus,
)


@dataclass(frozen=True)
class Close:
    opportunity_id: int
    lead_id: int
    trigger: str  # said_no | missed_meetings | rotting
    reason: LostReason
    competitor: str | None
    note: str
    facts: dict[str, Any]


@dataclass(frozen=True)
class RotWarning:
    opportunity_id: int
    lead_id: int
    stage: str
    rots_on: dt.date


@dataclass
class CloseSummary:
    closed: dict[str, int] = field(default_factory=dict)
    exit_emails: int = 0
    owners_warned: int = 0


def _latest(kind: ActivityKind, as_of: dt.datetime, column: Any) -> Any:
    act = aliased(Activity)
    return (
        select(column(act))
        .where(
            act.opportunity_id == Opportunity.id,
            act.kind == kind,
            act.occurred_at <= as_of,
            act.occurred_at >= Opportunity.created_at,
        )
        .order_by(act.occurred_at.desc(), act.id.desc())
        .limit(1)
        .correlate(Opportunity)
        .scalar_subquery()
    )


def find_dead_deals(
    session: Session, config: NurtureConfig, as_of: dt.datetime
) -> tuple[list[Close], list[RotWarning]]:
    """Open deals that are dead as of ``as_of``, with why, and the ones about to rot.

    Reads only, decides nothing.
    """
    dialect = session.get_bind().dialect.name
    dead = config.pipeline.dead_deals
    act = aliased(Activity)
    last_held = (
        select(func.max(act.occurred_at))
        .where(
            act.opportunity_id == Opportunity.id,
            act.kind == ActivityKind.MEETING_HELD,
            act.occurred_at <= as_of,
        )
        .correlate(Opportunity)
        .scalar_subquery()
    )
    missed = aliased(Activity)
    missed_count = (
        select(func.count(missed.id))
        .where(
            missed.opportunity_id == Opportunity.id,
            missed.kind == ActivityKind.MEETING_MISSED,
            missed.occurred_at <= as_of,
            missed.occurred_at
            > func.coalesce(last_held, literal(EPOCH, Opportunity.created_at.type)),
        )
        .correlate(Opportunity)
        .scalar_subquery()
    )
    prog = aliased(Activity)
    # Progress on the deal itself, or a real reply from its contact while the deal is open.
    last_progress = (
        select(func.max(prog.occurred_at))
        .where(
            or_(
                and_(prog.opportunity_id == Opportunity.id, prog.kind.in_(PROGRESS_KINDS)),
                and_(prog.lead_id == Opportunity.lead_id, prog.kind == ActivityKind.REPLY),
            ),
            prog.occurred_at <= as_of,
            prog.occurred_at >= Opportunity.created_at,
        )
        .correlate(Opportunity)
        .scalar_subquery()
    )
    inbound = aliased(Activity)
    # Guardrail: inbound activity within the grace period keeps a deal open (but a "no" is a no).
    recent_inbound = (
        select(func.count(inbound.id))
        .where(
            inbound.lead_id == Opportunity.lead_id,
            inbound.kind.in_([ActivityKind.REPLY, ActivityKind.CALL, ActivityKind.MEETING_HELD]),
            inbound.occurred_at <= as_of,
            inbound.occurred_at > as_of - _days(dead.grace_period, as_of),
        )
        .correlate(Opportunity)
        .scalar_subquery()
    )
    upcoming = aliased(Activity)
    # Guardrail: a meeting booked in the coming two weeks keeps a deal open.
    next_meeting = (
        select(func.count(upcoming.id))
        .where(
            upcoming.opportunity_id == Opportunity.id,
            upcoming.kind == ActivityKind.MEETING_SCHEDULED,
            upcoming.occurred_at > as_of,
            upcoming.occurred_at <= as_of + dt.timedelta(days=14),
        )
        .correlate(Opportunity)
        .scalar_subquery()
    )
    any_act = aliased(Activity)
    # Any touch at all on the deal, or from its contact (an out-of-office is not a touch).
    last_activity = (
        select(func.max(any_act.occurred_at))
        .where(
            or_(
                any_act.opportunity_id == Opportunity.id,
                and_(
                    any_act.lead_id == Opportunity.lead_id,
                    any_act.kind != ActivityKind.AUTO_REPLY,
                ),
            ),
            any_act.occurred_at <= as_of,
            any_act.occurred_at >= Opportunity.created_at,
        )
        .correlate(Opportunity)
        .scalar_subquery()
    )
    said_no_at = _latest(ActivityKind.SAID_NO, as_of, lambda a: a.occurred_at)
    said_no_reason = _latest(ActivityKind.SAID_NO, as_of, lambda a: a.reason)
    said_no_competitor = _latest(ActivityKind.SAID_NO, as_of, lambda a: a.competitor)
    since = greatest(dialect, Opportunity.stage_entered_at, last_progress)
    rows = session.execute(
        select(
            Opportunity.id,
            Opportunity.lead_id,
            Opportunity.stage,
            since.label("since"),
            greatest(dialect, Opportunity.created_at, last_activity).label("last_activity"),
            missed_count.label("missed"),
            next_meeting.label("upcoming"),
            recent_inbound.label("recent_inbound"),
            said_no_at.label("said_no_at"),
            said_no_reason.label("said_no_reason"),
            said_no_competitor.label("said_no_competitor"),
        )
        .where(Opportunity.status == OpportunityStatus.OPEN, Opportunity.created_at <= as_of)
        .order_by(Opportunity.id)
    ).all()
    closes: list[Close] = []
    warnings: list[RotWarning] = []
    warn_before = dead.warn_owner_before
    for row in rows:
        since_at = _as_datetime(row.since)
        if row.said_no_at is not None:
            reason = (
                LostReason(row.said_no_reason)
                if row.said_no_reason
                else dead.said_no_default_reason
            )
            closes.append(
                Close(
                    row.id,
                    row.lead_id,
                    "said_no",
                    reason,
                    row.said_no_competitor,
                    "The prospect said no.",
                    {"said_no_at": _as_datetime(row.said_no_at).isoformat()},
                )
            )
            continue
        if row.upcoming or row.recent_inbound:
            continue
        if row.missed >= dead.missed_meetings:
            closes.append(
                Close(
                    row.id,
                    row.lead_id,
                    "missed_meetings",
                    dead.missed_meetings_reason,
                    None,
                    f"Missed {row.missed} meetings in a row.",
                    {"missed_meetings": row.missed, "limit": dead.missed_meetings},
                )
            )
            continue
        quiet_since = _as_datetime(row.last_activity).date()
        if dead.no_activity_after and quiet_since + dead.no_activity_after < as_of.date():
            quiet = (as_of.date() - quiet_since).days
            closes.append(
                Close(
                    row.id,
                    row.lead_id,
                    "no_activity",
                    dead.rot_reason,
                    None,
                    f"No activity at all for {quiet} days.",
                    {"days_without_activity": quiet},
                )
            )
            continue
        stage = config.pipeline.stage(row.stage)
        if stage is None:
            continue  # an unknown stage is reported by import, not guessed at here
        rots_on = since_at.date() + stage.rot_after + dt.timedelta(days=1)
        if warn_before is not None and rots_on - warn_before <= as_of.date() < rots_on:
            warnings.append(RotWarning(row.id, row.lead_id, row.stage, rots_on))
        # Whole calendar days: a 21-day limit closes on day 22, whatever the hour of the run.
        if since_at.date() + stage.rot_after < as_of.date():
            idle = (as_of.date() - since_at.date()).days
            limit = (since_at.date() + stage.rot_after - since_at.date()).days
            closes.append(
                Close(
                    row.id,
                    row.lead_id,
                    "rotting",
                    dead.rot_reason,
                    None,
                    f"No progress for {idle} days in stage {row.stage} (limit {limit} days).",
                    {"stage": row.stage, "days_without_progress": idle, "limit_days": limit},
                )
            )
    return closes, warnings


def close_dead_deals(
    session: Session, config: NurtureConfig, as_of: dt.datetime, *, run_id: int | None
) -> CloseSummary:
    summary = CloseSummary()
    closes, warnings = find_dead_deals(session, config, as_of)
    # One warning per deal and rot date: progress moves the date, and a new warning is due.
    warned = record_decisions(
        session,
        [
            NewDecision(
                dedupe_key=f"warn:{w.opportunity_id}:{w.rots_on.isoformat()}",
                action=DecisionAction.WARN_OWNER,
                rule="dead_deals.warn_owner",
                lead_id=w.lead_id,
                opportunity_id=w.opportunity_id,
                reason="about_to_rot",
                facts={"stage": w.stage, "rots_on": w.rots_on.isoformat()},
            )
            for w in warnings
        ],
        run_id=run_id,
        as_of=as_of,
    )
    summary.owners_warned = len(warned)
    new = record_decisions(
        session,
        [
            NewDecision(
                dedupe_key=f"close:{c.opportunity_id}",
                action=DecisionAction.CLOSE_LOST,
                rule=f"dead_deals.{c.trigger}",
                lead_id=c.lead_id,
                opportunity_id=c.opportunity_id,
                reason=c.reason.value,
                facts=c.facts,
            )
            for c in closes
        ],
        run_id=run_id,
        as_of=as_of,
    )
    emails: list[QueuedEmail] = []
    exit_email = config.pipeline.dead_deals.exit_email
    for close in closes:
        decision_id = new.get(f"close:{close.opportunity_id}")
        if decision_id is None:
            continue
        session.execute(
            update(Opportunity)
            .where(
                Opportunity.id == close.opportunity_id, Opportunity.status == OpportunityStatus.OPEN
            )
            .values(
                status=OpportunityStatus.LOST,
                closed_at=as_of,
                closed_by=ClosedBy.ENGINE,
                lost_reason=close.reason,
                competitor=close.competitor,
                lost_notes=close.note,
            )
            .execution_options(synchronize_session="fetch")
        )
        summary.closed[close.reason.value] = summary.closed.get(close.reason.value, 0) + 1
        if close.reason not in exit_email.not_for:
            emails.append(
                QueuedEmail(
                    dedupe_key=f"decision:{decision_id}",
                    lead_id=close.lead_id,
                    template=exit_email.template,
                    context={"reason": close.reason.value, "trigger": close.trigger},
                    due_at=as_of,
                    opportunity_id=close.opportunity_id,
                    decision_id=decision_id,
                )
            )
    summary.exit_emails = len(enqueue_emails(session, config, emails, run_id=run_id, as_of=as_of))
    return summary


def _days(delta: Any, as_of: dt.datetime) -> dt.timedelta:
    """A relativedelta as the timedelta it spans just before ``as_of``."""
    return as_of - (as_of - delta)


def _as_datetime(value: Any) -> dt.datetime:
    if isinstance(value, str):  # SQLite returns computed timestamps as text
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
