"""Apply marketing's disqualification rules: one SQL statement finds each rule's leads, then the
prescribed actions run set-based, each recorded as a decision with the facts that made it true.

Rules run in order; a lead disqualified by one rule is not acted on by a later rule in the same
run. A rule acts once per lead per condition episode (see ``episodes.py``): when the condition
starts to hold, not on every day it still holds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from tasks.cadences.enrolment import exit_enrolments
from tasks.config.loader import NurtureConfig
from tasks.config.models import FollowUpWhen, Rule
from tasks.deals.followups import schedule_for_leads
from tasks.decisions import NewDecision, record_decisions
from tasks.email.outbox import QueuedEmail, enqueue_emails
from tasks.owners import assign_owners
from tasks.rules.compile import compile_condition
from tasks.rules.conditions import facts_used
from tasks.rules.episodes import step_episodes
from tasks.rules.facts import FactSet, fact_for_display
from tasks.spans import LeadSpan
from tasks.store.models import (
    IN_PLAY,
    DecisionAction,
    Lead,
    LeadStatus,
    Opportunity,
    OpportunityStatus,
)
from tasks.store.upsert import among

# Rules look at leads still in play; deals with an open opportunity follow the deal lifecycle.
# Leads acted on per slice of statements.
ACTION_BATCH = 5_000


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
    facts: dict[str, Any]


@dataclass
class RulesSummary:
    # Leads for which the condition holds, and those among them whose episode began now.
    matched: dict[str, int] = field(default_factory=dict)
    fired: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    emails: int = 0
    followups: int = 0


def find_matches(
    session: Session,
    rule: Rule,
    as_of: dt.datetime,
    *,
    exclude: set[int] | None = None,
    span: LeadSpan | None = None,
) -> list[Match]:
    """The leads a rule applies to as of ``as_of`` (``span``: among those), with the facts that
    made it true."""
    facts = FactSet(as_of, session.get_bind().dialect.name, span)
    used = sorted(facts_used(rule.when))
    # Facts are computed once per lead in an inner query, then filtered: a fact used in both
    # the condition and the explanation is not evaluated twice.
    inner = (
        facts.select_facts(used)
        .where(
            Lead.merged_into_id.is_(None),
            Lead.status.in_(IN_PLAY),
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
        shown = {name: fact_for_display(name, getattr(row, name), as_of) for name in used}
        matches.append(Match(row.id, shown))
    return matches


def apply_rules(
    session: Session,
    config: NurtureConfig,
    as_of: dt.datetime,
    *,
    run_id: int | None,
    span: LeadSpan | None = None,
) -> RulesSummary:
    """Every enabled rule in order, over the leads in play (``span``: among those)."""
    summary = RulesSummary()
    disqualified: set[int] = set()
    for rule in config.rules.rules:
        if not rule.enabled:
            continue
        matches = find_matches(session, rule, as_of, exclude=disqualified, span=span)
        began = step_episodes(session, rule.name, [m.lead_id for m in matches], as_of, run_id, span)
        firing = [m for m in matches if m.lead_id in began]
        summary.matched[rule.name] = len(matches)
        summary.fired[rule.name] = len(firing)
        # In slices: each action's statements name their leads, and a store bounds the
        # parameters one statement may carry (PostgreSQL: 65,535).
        for start in range(0, len(firing), ACTION_BATCH):
            batch = firing[start : start + ACTION_BATCH]
            disqualified |= _apply(session, config, rule, batch, began, as_of, run_id, summary)
    return summary


def _apply(
    session: Session,
    config: NurtureConfig,
    rule: Rule,
    matches: list[Match],
    episodes: dict[int, dt.datetime],
    as_of: dt.datetime,
    run_id: int | None,
    summary: RulesSummary,
) -> set[int]:
    """Run the rule's actions for leads whose episode began; return the leads it disqualified."""

    def key(lead_id: int, action: str) -> str:
        return f"rule:{rule.name}:{lead_id}:{episodes[lead_id].isoformat()}:{action}"

    decisions = [
        NewDecision(
            dedupe_key=key(match.lead_id, action.kind),
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
        keyed = {m.lead_id: key(m.lead_id, action.kind) for m in matches}
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
            summary.followups += _follow_up(
                session, config, action.follow_up, keyed, lead_ids, as_of, run_id
            )
        elif action.release_owner:
            previous: dict[int, int | None] = {
                row.id: row.owner_id
                for row in session.execute(
                    select(Lead.id, Lead.owner_id).where(among(session, Lead.id, lead_ids))
                )
            }
            session.execute(
                update(Lead)
                .where(among(session, Lead.id, lead_ids))
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
            for lead in session.execute(
                select(Lead).where(among(session, Lead.id, lead_ids))
            ).scalars():
                if action.tag not in (lead.tags or []):
                    lead.tags = [*(lead.tags or []), action.tag]
        elif action.set_grade is not None:
            session.execute(
                update(Lead)
                .where(among(session, Lead.id, lead_ids))
                .values(grade=action.set_grade)
                .execution_options(synchronize_session="fetch")
            )
    session.flush()
    return disqualified


def _follow_up(
    session: Session,
    config: NurtureConfig,
    when: FollowUpWhen,
    keyed: dict[int, str],
    lead_ids: list[int],
    as_of: dt.datetime,
    run_id: int | None,
) -> int:
    """Schedule the rule's follow-ups: on the date fact where the lead has one, else the delay."""
    named: dict[int, dt.date | None] = {}
    if when.on:
        facts = FactSet(as_of, session.get_bind().dialect.name)
        query = facts.select_facts([when.on]).where(among(session, Lead.id, lead_ids))
        named = dict(session.execute(query).tuples().all())
    requests: dict[int, tuple[str, dt.date, str]] = {}
    for lead in lead_ids:
        due = when.due_on(as_of.date(), named.get(lead))
        if due is not None:
            requests[lead] = (keyed[lead], *due)
    return schedule_for_leads(session, config.followups, requests, as_of, run_id=run_id)


def _set_status(
    session: Session, lead_ids: list[int], status: LeadStatus, reason: str, as_of: dt.datetime
) -> None:
    session.execute(
        update(Lead)
        .where(among(session, Lead.id, lead_ids))
        .values(status=status, status_reason=reason, status_changed_at=as_of)
        .execution_options(synchronize_session="fetch")
    )


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
