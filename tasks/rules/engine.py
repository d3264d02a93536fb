"""Apply marketing's disqualification rules: one SQL statement finds each rule's leads, then the
prescribed actions run set-based, each recorded as a decision with the facts that made it true.

Rules run in order; a lead disqualified by one rule is not acted on by a later rule in the same
run. A rule fires at most once per lead per episode: per engagement cycle and owner assignment.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from dateutil.relativedelta import relativedelta
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from tasks.cadences.enrolment import exit_enrolments
from tasks.config.loader import NurtureConfig
from tasks.config.models import Rule
from tasks.deals.followups import schedule_for_leads
from tasks.decisions import NewDecision, record_decisions
from tasks.email.outbox import QueuedEmail, enqueue_emails
from tasks.owners import assign_owners
from tasks.rules.compile import compile_condition
from tasks.rules.conditions import facts_used
from tasks.rules.facts import FactSet, fact_for_display
from tasks.store.models import (
    DecisionAction,
    Lead,
    LeadStatus,
    Opportunity,
    OpportunityStatus,
)

# Rules look at leads still in play; deals with an open opportunity follow the deal lifecycle.
ELIGIBLE = (LeadStatus.NEW, LeadStatus.WORKING, LeadStatus.NURTURING, LeadStatus.QUALIFIED)


@dataclass(frozen=True)
class ComputedFacts:
    """Facts read from the columns of an inner query that computed them."""

    facts: FactSet
    inner: Any

    def value(self, fact: str) -> Any:
        return self.inner.c[fact]

    def days_bound(self, days: int) -> dt.datetime:
        return self.facts.days_bound(days)


@dataclass(frozen=True)
class Match:
    lead_id: int
    episode: str
    facts: dict[str, Any]


@dataclass
class RulesSummary:
    matched: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    emails: int = 0
    followups: int = 0


def find_matches(
    session: Session, rule: Rule, as_of: dt.datetime, *, exclude: set[int] | None = None
) -> list[Match]:
    """The leads a rule applies to as of ``as_of``, with the facts that made it true."""
    facts = FactSet(as_of, session.get_bind().dialect.name)
    used = sorted(facts_used(rule.when))
    # Facts are computed once per lead in an inner query, then filtered: a fact used in both
    # the condition and the explanation is not evaluated twice.
    inner = (
        select(
            Lead.id.label("id"),
            facts.cycle_start().label("cycle"),
            Lead.owner_assigned_at.label("owner_assigned_at"),
            *(facts.value(name).label(name) for name in used),
        )
        .where(
            Lead.merged_into_id.is_(None),
            Lead.status.in_(ELIGIBLE),
            Lead.created_at <= as_of,
            ~exists().where(
                Opportunity.lead_id == Lead.id, Opportunity.status == OpportunityStatus.OPEN
            ),
        )
        .subquery("facts")
    )
    query = (
        select(inner)
        .where(compile_condition(rule.when, ComputedFacts(facts, inner)))
        .order_by(inner.c.id)
    )
    matches = []
    for row in session.execute(query):
        if exclude and row.id in exclude:
            continue
        episode = f"{_iso(row.cycle)}|{_iso(row.owner_assigned_at)}"
        shown = {name: fact_for_display(name, getattr(row, name), as_of) for name in used}
        matches.append(Match(row.id, episode, shown))
    return matches


def apply_rules(
    session: Session, config: NurtureConfig, as_of: dt.datetime, *, run_id: int | None
) -> RulesSummary:
    summary = RulesSummary()
    disqualified: set[int] = set()
    for rule in config.rules.rules:
        if not rule.enabled:
            continue
        matches = find_matches(session, rule, as_of, exclude=disqualified)
        summary.matched[rule.name] = len(matches)
        if matches:
            disqualified |= _apply(session, config, rule, matches, as_of, run_id, summary)
    return summary


def _apply(
    session: Session,
    config: NurtureConfig,
    rule: Rule,
    matches: list[Match],
    as_of: dt.datetime,
    run_id: int | None,
    summary: RulesSummary,
) -> set[int]:
    """Run the rule's actions for its matches; return the leads it disqualified."""
    decisions = [
        NewDecision(
            dedupe_key=_key(rule, match, action.kind),
            action=_decision_action(action.kind),
            rule=rule.name,
            lead_id=match.lead_id,
            reason=_action_value(action),
            facts=match.facts,
        )
        for match in matches
        for action in rule.then
    ]
    new = record_decisions(session, decisions, run_id=run_id, as_of=as_of)
    disqualified: set[int] = set()
    for action in rule.then:
        keyed = {m.lead_id: _key(rule, m, action.kind) for m in matches}
        lead_ids = sorted(lead for lead, key in keyed.items() if key in new)
        if not lead_ids:
            continue
        summary.actions[action.kind] = summary.actions.get(action.kind, 0) + len(lead_ids)
        if action.disqualify is not None:
            _set_status(session, lead_ids, LeadStatus.DISQUALIFIED, action.disqualify.value, as_of)
            exit_enrolments(session, lead_ids, "disqualified", as_of)
            disqualified.update(lead_ids)
        elif action.send is not None:
            emails = [
                QueuedEmail(
                    dedupe_key=f"decision:{new[keyed[lead]]}",
                    lead_id=lead,
                    template=action.send,
                    context={"rule": rule.name},
                    due_at=as_of,
                    decision_id=new[keyed[lead]],
                )
                for lead in lead_ids
            ]
            summary.emails += len(
                enqueue_emails(session, config, emails, run_id=run_id, as_of=as_of)
            )
        elif action.follow_up is not None:
            requests: dict[int, tuple[str, relativedelta]] = {
                lead: (keyed[lead], action.follow_up) for lead in lead_ids
            }
            summary.followups += schedule_for_leads(
                session, config.followups, requests, as_of, run_id=run_id
            )
        elif action.release_owner:
            previous: dict[int, int | None] = {
                row.id: row.owner_id
                for row in session.execute(
                    select(Lead.id, Lead.owner_id).where(Lead.id.in_(lead_ids))
                )
            }
            session.execute(
                update(Lead)
                .where(Lead.id.in_(lead_ids))
                .values(owner_id=None, owner_assigned_at=None)
                .execution_options(synchronize_session="fetch")
            )
            assign_owners(
                session,
                lead_ids,
                as_of=as_of,
                run_id=run_id,
                exclude_owner={k: v for k, v in previous.items() if v is not None},
            )
        elif action.exit_cadences:
            exit_enrolments(session, lead_ids, f"rule:{rule.name}", as_of)
        elif action.tag is not None:
            for lead in session.execute(select(Lead).where(Lead.id.in_(lead_ids))).scalars():
                if action.tag not in (lead.tags or []):
                    lead.tags = [*(lead.tags or []), action.tag]
        elif action.set_grade is not None:
            session.execute(
                update(Lead)
                .where(Lead.id.in_(lead_ids))
                .values(grade=action.set_grade)
                .execution_options(synchronize_session="fetch")
            )
    session.flush()
    return disqualified


def _set_status(
    session: Session, lead_ids: list[int], status: LeadStatus, reason: str, as_of: dt.datetime
) -> None:
    session.execute(
        update(Lead)
        .where(Lead.id.in_(lead_ids))
        .values(status=status, status_reason=reason, status_changed_at=as_of)
        .execution_options(synchronize_session="fetch")
    )


def _key(rule: Rule, match: Match, action: str) -> str:
    return f"rule:{rule.name}:{match.lead_id}:{match.episode}:{action}"


def _decision_action(kind: str) -> DecisionAction:
    return {
        "disqualify": DecisionAction.DISQUALIFY,
        "send": DecisionAction.SEND,
        "follow_up": DecisionAction.SCHEDULE_FOLLOW_UP,
        "release_owner": DecisionAction.RELEASE_OWNER,
        "exit_cadences": DecisionAction.EXIT_CADENCE,
        "tag": DecisionAction.TAG,
        "set_grade": DecisionAction.SET_GRADE,
    }[kind]


def _action_value(action: Any) -> str | None:
    value = getattr(action, action.kind)
    if value is True or value is None:
        return None
    return str(getattr(value, "value", value))


def _iso(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else value.isoformat()
