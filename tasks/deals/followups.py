"""Follow-ups: when to come back to a lost deal or a disqualified lead, scheduled exactly once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from tasks.config.models import FollowUps
from tasks.deals.calendar import next_business_day
from tasks.decisions import NewDecision, record_decisions
from tasks.rules.facts import named_followup_date
from tasks.store.models import (
    DecisionAction,
    FollowUp,
    FollowUpStatus,
    Lead,
    LostReason,
    Opportunity,
    OpportunityStatus,
    Suppression,
)
from tasks.store.upsert import insert_ignore


@dataclass(frozen=True)
class FollowUpPlan:
    due_on: dt.date
    basis: str  # "named_date", "default_delay" or "reason_delay"


def plan_followup(
    policy: FollowUps,
    closed_on: dt.date,
    reason: LostReason | None,
    named_date: dt.date | None,
) -> FollowUpPlan | None:
    """The follow-up date for a loss, or None when this loss is never chased."""
    if reason in policy.never_for:
        return None
    if named_date and named_date > closed_on:
        return FollowUpPlan(next_business_day(named_date, policy.holidays), "named_date")
    delay = policy.delay_for(reason)
    basis = "reason_delay" if reason in policy.per_reason else "default_delay"
    return FollowUpPlan(next_business_day(closed_on + delay, policy.holidays), basis)


def schedule_for_lost_deals(
    session: Session, policy: FollowUps, as_of: dt.datetime, *, run_id: int | None
) -> int:
    """Schedule a follow-up for every lost deal (closed by us or by a person) that has none."""
    latest_named = named_followup_date(Opportunity.lead_id, as_of, correlate=Opportunity)
    rows = session.execute(
        select(
            Opportunity.id,
            Opportunity.lead_id,
            Opportunity.closed_at,
            Opportunity.lost_reason,
            latest_named,
            exists().where(Suppression.email_key == Lead.email_key),
        )
        .join(Lead, Lead.id == Opportunity.lead_id)
        .where(
            Opportunity.status == OpportunityStatus.LOST,
            Opportunity.closed_at <= as_of,
            ~exists().where(FollowUp.opportunity_id == Opportunity.id),
        )
        .order_by(Opportunity.id)
    ).all()
    plans: list[tuple[int, int, FollowUpPlan]] = []
    decisions: list[NewDecision] = []
    for opp_id, lead_id, closed_at, reason, named_date, suppressed in rows:
        plan = None if suppressed else plan_followup(policy, closed_at.date(), reason, named_date)
        if plan is None:
            continue
        plans.append((opp_id, lead_id, plan))
        decisions.append(
            NewDecision(
                dedupe_key=f"followup:opportunity:{opp_id}",
                action=DecisionAction.SCHEDULE_FOLLOW_UP,
                rule=f"follow_up.{plan.basis}",
                lead_id=lead_id,
                opportunity_id=opp_id,
                reason=reason.value if reason else None,
                facts={"due_on": plan.due_on.isoformat(), "named_date": _iso(named_date)},
            )
        )
    record_decisions(session, decisions, run_id=run_id, as_of=as_of)
    return len(
        insert_ignore(
            session,
            FollowUp,
            [
                {
                    "lead_id": lead_id,
                    "opportunity_id": opp_id,
                    "dedupe_key": f"opportunity:{opp_id}",
                    "due_on": plan.due_on,
                    "basis": plan.basis,
                    "status": FollowUpStatus.SCHEDULED,
                    "created_at": as_of,
                    "run_id": run_id,
                }
                for opp_id, lead_id, plan in plans
            ],
            ["dedupe_key"],
        )
    )


def schedule_for_leads(
    session: Session,
    policy: FollowUps,
    requests: dict[int, tuple[str, dt.date, str]],
    as_of: dt.datetime,
    *,
    run_id: int | None,
) -> int:
    """Lead-level follow-ups asked for by a rule: {lead_id: (decision key, day, basis)}.

    The day moves to the next business day, as every follow-up does.
    """
    # Thousands of leads share a handful of days: each day is moved once.
    days = {day for _, day, _ in requests.values()}
    moved = {day: next_business_day(day, policy.holidays) for day in days}
    rows = [
        {
            "lead_id": lead_id,
            "opportunity_id": None,
            "dedupe_key": key,
            "due_on": moved[day],
            "basis": basis,
            "status": FollowUpStatus.SCHEDULED,
            "created_at": as_of,
            "run_id": run_id,
        }
        for lead_id, (key, day, basis) in sorted(requests.items())
    ]
    return len(insert_ignore(session, FollowUp, rows, ["dedupe_key"]))


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None
