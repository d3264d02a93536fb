"""Reopen due follow-ups: each becomes a NEW opportunity linked to the lost one (or re-engages a
disqualified lead), with a re-engagement email and cadence; exactly once per follow-up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from tasks.cadences.enrolment import enrol
from tasks.config.loader import NurtureConfig
from tasks.decisions import NewDecision, record_decisions
from tasks.email.outbox import QueuedEmail, enqueue_emails
from tasks.owners import assign_owners
from tasks.store.models import (
    DecisionAction,
    FollowUp,
    FollowUpStatus,
    Lead,
    LeadStatus,
    Opportunity,
    OpportunityStatus,
    Owner,
    Suppression,
)
from tasks.store.upsert import insert_ignore


@dataclass
class ReopenSummary:
    reopened: int = 0
    reengaged: int = 0
    cancelled: dict[str, int] = field(default_factory=dict)
    emails: int = 0


def _cancel_reason(lead: Lead, suppressed: bool, has_open_deal: bool) -> str | None:
    if lead.status == LeadStatus.CUSTOMER:
        return "became_customer"
    if suppressed:
        return "suppressed"
    if has_open_deal:
        return "opportunity_already_open"
    if lead.merged_into_id is not None:
        return "lead_merged"
    return None


def reopen_due_followups(
    session: Session, config: NurtureConfig, as_of: dt.datetime, *, run_id: int | None
) -> ReopenSummary:
    summary = ReopenSummary()
    open_deal = exists().where(
        Opportunity.lead_id == Lead.id, Opportunity.status == OpportunityStatus.OPEN
    )
    due = session.execute(
        select(FollowUp, Lead, exists().where(Suppression.email_key == Lead.email_key), open_deal)
        .join(Lead, Lead.id == FollowUp.lead_id)
        .where(FollowUp.status == FollowUpStatus.SCHEDULED, FollowUp.due_on <= as_of.date())
        .order_by(FollowUp.due_on, FollowUp.id)
    ).all()
    if not due:
        return summary
    first_stage = config.pipeline.stages[0].name
    reopen_cfg = config.followups.reopen
    to_enrol: dict[int, dt.datetime] = {}
    emails: list[QueuedEmail] = []
    decisions: list[NewDecision] = []
    to_reactivate: list[int] = []
    with_deal: set[int] = set()
    # Leads whose owner left keep no owner: the assignment rules pick a new one below.
    session.execute(
        update(Lead)
        .where(
            Lead.id.in_([lead.id for _, lead, _, _ in due]),
            Lead.owner_id.in_(select(Owner.id).where(Owner.active.is_(False))),
        )
        .values(owner_id=None)
        .execution_options(synchronize_session="fetch")
    )
    for followup, lead, suppressed, has_open_deal in due:
        if reason := _cancel_reason(lead, suppressed, has_open_deal):
            followup.status = FollowUpStatus.CANCELLED
            followup.resolved_at = as_of
            followup.resolution = reason
            summary.cancelled[reason] = summary.cancelled.get(reason, 0) + 1
            decisions.append(
                NewDecision(
                    dedupe_key=f"followup:{followup.id}:cancel",
                    action=DecisionAction.CANCEL_FOLLOW_UP,
                    rule="follow_up.cancel",
                    lead_id=lead.id,
                    opportunity_id=followup.opportunity_id,
                    reason=reason,
                )
            )
            continue
        lost = (
            session.get(Opportunity, followup.opportunity_id) if followup.opportunity_id else None
        )
        context: dict[str, object] = {"whats_new": config.followups.whats_new}
        new_opp_id = None
        if lost is not None:
            history = {
                "previous_lost_reason": lost.lost_reason.value if lost.lost_reason else None,
                "previous_competitor": lost.competitor,
                "previous_notes": lost.lost_notes,
                "cycles": lost.cycle + 1,
            }
            inserted = insert_ignore(
                session,
                Opportunity,
                [
                    {
                        "lead_id": lead.id,
                        "owner_id": lead.owner_id,
                        "name": f"{lost.name} (reopened)",
                        "amount": lost.amount,
                        "stage": first_stage,
                        "stage_entered_at": as_of,
                        "status": OpportunityStatus.OPEN,
                        "created_at": as_of,
                        "reopened_from_id": lost.id,
                        "followup_id": followup.id,
                        "cycle": lost.cycle + 1,
                        "history": history,
                    }
                ],
                ["followup_id"],
            )
            if not inserted:
                continue  # another run reopened it first: the unique followup_id decided
            new_opp_id = inserted[0]
            with_deal.add(lead.id)
            context["previous_reason"] = history["previous_lost_reason"]
            summary.reopened += 1
            action, rule = DecisionAction.REOPEN, "follow_up.reopen"
        else:
            context["previous_reason"] = lead.status_reason
            summary.reengaged += 1
            action, rule = DecisionAction.REENGAGE, "follow_up.reengage"
        followup.status = FollowUpStatus.REOPENED
        followup.resolved_at = as_of
        followup.resolution = "reopened" if new_opp_id else "reengaged"
        to_reactivate.append(lead.id)
        to_enrol[lead.id] = as_of
        decisions.append(
            NewDecision(
                dedupe_key=f"followup:{followup.id}:{action.value}",
                action=action,
                rule=rule,
                lead_id=lead.id,
                opportunity_id=new_opp_id,
                reason=str(context["previous_reason"]) if context["previous_reason"] else None,
                facts={
                    "followup_id": followup.id,
                    "due_on": followup.due_on.isoformat(),
                    "reopened_from": followup.opportunity_id,
                },
            )
        )
        emails.append(
            QueuedEmail(
                dedupe_key=f"followup:{followup.id}",
                lead_id=lead.id,
                template=reopen_cfg.template,
                context=context,
                due_at=as_of,
                opportunity_id=new_opp_id,
            )
        )
    session.flush()
    if to_reactivate:
        # A reopened deal is worked by its owner; a re-engaged lead goes back to nurturing.
        for status, leads in (
            (LeadStatus.WORKING, [i for i in to_reactivate if i in with_deal]),
            (LeadStatus.NURTURING, [i for i in to_reactivate if i not in with_deal]),
        ):
            session.execute(
                update(Lead)
                .where(Lead.id.in_(leads))
                .values(
                    status=status,
                    status_reason=None,
                    status_changed_at=as_of,
                    cycle_started_at=as_of,
                )
                .execution_options(synchronize_session="fetch")
            )
        unowned = [i for i in to_reactivate if session.get(Lead, i).owner_id is None]  # type: ignore[union-attr]
        assign_owners(session, unowned, as_of=as_of, run_id=run_id, policy=config.owners)
        # New opportunities take the (possibly new) owner of their lead.
        session.execute(
            update(Opportunity)
            .where(Opportunity.followup_id.is_not(None), Opportunity.owner_id.is_(None))
            .values(
                owner_id=select(Lead.owner_id)
                .where(Lead.id == Opportunity.lead_id)
                .scalar_subquery()
            )
            .execution_options(synchronize_session="fetch")
        )
    record_decisions(session, decisions, run_id=run_id, as_of=as_of)
    cadence = config.cadences.cadences[reopen_cfg.cadence]
    enrol(
        session, to_enrol, reopen_cfg.cadence, cadence, config.sending, run_id=run_id,
        holidays=config.cadences.holidays_for(None),
        exclusive_with=config.cadences.exclusive_except(reopen_cfg.cadence),
    )  # fmt: skip
    summary.emails = len(enqueue_emails(session, config, emails, run_id=run_id, as_of=as_of))
    return summary
