"""The pipeline's health in numbers, straight from the store: what sales managers read."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased

from tasks.grading import source_conversion, suggested_source_weights
from tasks.store.models import (
    ClosedBy,
    Decision,
    DecisionAction,
    EmailStatus,
    FollowUp,
    ImportKind,
    ImportOutcome,
    ImportRow,
    Lead,
    Opportunity,
    OpportunityStatus,
    OutboxEmail,
    Run,
    RunKind,
)


def _counts(rows: Iterable[Any]) -> dict[str, int]:
    return {str(getattr(k, "value", k)): int(n) for k, n in rows if k is not None}


def _velocity(session: Session, now: dt.datetime) -> tuple[dict[str, Any], dict[str, float]]:
    """Open deals per stage with their average days in it; average days to close, by outcome."""
    in_stage: dict[str, list[float]] = {}
    for stage, entered in session.execute(
        select(Opportunity.stage, Opportunity.stage_entered_at).where(
            Opportunity.status == OpportunityStatus.OPEN
        )
    ).tuples():
        in_stage.setdefault(stage, []).append((now - entered).total_seconds() / 86_400)
    per_stage = {
        stage: {"open_deals": len(ages), "avg_days": round(sum(ages) / len(ages), 1)}
        for stage, ages in sorted(in_stage.items())
    }
    to_close: dict[str, list[float]] = {}
    for status, created, closed in session.execute(
        select(Opportunity.status, Opportunity.created_at, Opportunity.closed_at).where(
            Opportunity.closed_at.is_not(None)
        )
    ).tuples():
        if closed is not None:
            days = (closed - created).total_seconds() / 86_400
            to_close.setdefault(str(status), []).append(days)
    return per_stage, {k: round(sum(v) / len(v), 1) for k, v in sorted(to_close.items())}


def _failures(session: Session) -> dict[str, Any]:
    """What needs a person: rejected rows by reason, failed emails, leads nobody could take."""
    reasons: Counter[str] = Counter()
    for listed in session.scalars(
        select(ImportRow.reasons).where(ImportRow.outcome == ImportOutcome.REJECTED)
    ):
        for reason in listed or []:
            reasons[str(reason).split(":", 1)[0]] += 1
    waiting = session.scalar(
        select(func.count(func.distinct(Decision.lead_id)))
        .join(Lead, Lead.id == Decision.lead_id)
        .where(Decision.rule == "unassigned", Lead.owner_id.is_(None))
    )
    failed = session.scalar(
        select(func.count())
        .select_from(OutboxEmail)
        .where(OutboxEmail.status == EmailStatus.FAILED)
    )
    return {
        "rejected_rows_by_reason": dict(reasons.most_common(10)),
        "emails_failed": int(failed or 0),
        "leads_waiting_for_an_owner": int(waiting or 0),
    }


def pipeline_summary(session: Session, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or dt.datetime.now(dt.UTC)
    velocity = _velocity(session, now)
    q = session.execute
    imports = _counts(
        q(
            select(ImportRow.outcome, func.count())
            .where(ImportRow.kind == ImportKind.LEAD)
            .group_by(ImportRow.outcome)
        ).all()
    )
    leads_by_status = _counts(
        q(
            select(Lead.status, func.count())
            .where(Lead.merged_into_id.is_(None))
            .group_by(Lead.status)
        ).all()
    )
    disqualified_by_reason = _counts(
        q(
            select(Decision.reason, func.count())
            .where(Decision.action == DecisionAction.DISQUALIFY)
            .group_by(Decision.reason)
        ).all()
    )
    released = q(
        select(func.count()).where(Decision.action == DecisionAction.RELEASE_OWNER)
    ).scalar_one()
    deals = _counts(q(select(Opportunity.status, func.count()).group_by(Opportunity.status)).all())
    lost_by = {
        by.value: _counts(
            q(
                select(Opportunity.lost_reason, func.count())
                .where(Opportunity.status == OpportunityStatus.LOST, Opportunity.closed_by == by)
                .group_by(Opportunity.lost_reason)
            ).all()
        )
        for by in ClosedBy
    }
    competitors = _counts(
        q(
            select(Opportunity.competitor, func.count())
            .where(
                Opportunity.status == OpportunityStatus.LOST, Opportunity.competitor.is_not(None)
            )
            .group_by(Opportunity.competitor)
        ).all()
    )
    followups = _counts(q(select(FollowUp.status, func.count()).group_by(FollowUp.status)).all())
    followup_basis = _counts(q(select(FollowUp.basis, func.count()).group_by(FollowUp.basis)).all())
    followup_results = _counts(
        q(select(FollowUp.resolution, func.count()).group_by(FollowUp.resolution)).all()
    )
    reopened = q(
        select(Opportunity.status, func.count())
        .where(Opportunity.reopened_from_id.is_not(None))
        .group_by(Opportunity.status)
    ).all()
    reopened_counts = _counts(reopened)
    previous = aliased(Opportunity)
    win_back: dict[str, dict[str, int]] = {}
    for reason, status, n in q(
        select(previous.lost_reason, Opportunity.status, func.count())
        .join(previous, previous.id == Opportunity.reopened_from_id)
        .group_by(previous.lost_reason, Opportunity.status)
    ).all():
        key = str(getattr(reason, "value", reason))
        entry = win_back.setdefault(key, {"reopened": 0, "won": 0})
        entry["reopened"] += int(n)
        if status == OpportunityStatus.WON:
            entry["won"] += int(n)
    at_risk = q(
        select(func.count(func.distinct(Decision.opportunity_id)))
        .join(Opportunity, Opportunity.id == Decision.opportunity_id)
        .where(
            Decision.action == DecisionAction.WARN_OWNER,
            Opportunity.status == OpportunityStatus.OPEN,
        )
    ).scalar_one()
    emails = _counts(q(select(OutboxEmail.status, func.count()).group_by(OutboxEmail.status)).all())
    templates = _counts(
        q(select(OutboxEmail.template, func.count()).group_by(OutboxEmail.template)).all()
    )
    won = deals.get("won", 0)
    lost = deals.get("lost", 0)
    by_source = [
        {"source": source, "leads": int(n), "won": int(w or 0)}
        for source, n, w in q(
            select(
                Lead.source,
                func.count(func.distinct(Lead.id)),
                func.count(
                    func.distinct(case((Opportunity.status == OpportunityStatus.WON, Lead.id)))
                ),
            )
            .outerjoin(Opportunity, Opportunity.lead_id == Lead.id)
            .where(Lead.merged_into_id.is_(None))
            .group_by(Lead.source)
            .order_by(Lead.source)
        ).all()
    ]
    # Points per source that conversion so far would suggest (grading.yaml decides; see there).
    suggested = suggested_source_weights(source_conversion(session, None))
    for row in by_source:
        row["suggested_points"] = suggested.get(row["source"])
    decisions = _counts(q(select(Decision.action, func.count()).group_by(Decision.action)).all())
    runs = q(select(func.count()).select_from(Run).where(Run.kind == RunKind.DAILY)).scalar_one()
    return {
        "daily_runs": int(runs),
        "decisions": decisions,
        "imports": imports,
        "leads_by_status": leads_by_status,
        "disqualified_by_reason": disqualified_by_reason,
        "owners_released": int(released),
        "deals": deals,
        "lost_by_reason": lost_by,
        "lost_to_competitors": competitors,
        "win_rate": round(won / (won + lost), 3) if won + lost else None,
        "followups": followups,
        "followup_results": followup_results,
        "followups_by_basis": followup_basis,
        "reopened_opportunities": reopened_counts,
        "win_back_rate": (
            round(reopened_counts.get("won", 0) / sum(reopened_counts.values()), 3)
            if reopened_counts
            else None
        ),
        "win_back_by_lost_reason": win_back,
        "open_deals_owner_warned": int(at_risk),
        "time_in_stage": velocity[0],
        "days_to_close": velocity[1],
        "needs_attention": _failures(session),
        "emails_by_status": emails,
        "emails_engaged": {
            "opened": int(
                q(
                    select(func.count())
                    .select_from(OutboxEmail)
                    .where(OutboxEmail.opened_at.is_not(None))
                ).scalar_one()
            ),
            "clicked": int(
                q(
                    select(func.count())
                    .select_from(OutboxEmail)
                    .where(OutboxEmail.clicked_at.is_not(None))
                ).scalar_one()
            ),
        },
        "emails_by_template": templates,
        "conversion_by_source": by_source,
    }
