"""Advance cadence enrolments whose next step is due: queue the step's email, schedule the next.

Exits come first: a lead who replied, was disqualified, became a customer, bounced or
unsubscribed leaves every cadence before anything more is queued for them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from tasks.cadences.enrolment import at_send_hour, exit_enrolments
from tasks.cadences.schedule import after_wait, next_occurrence
from tasks.config.loader import NurtureConfig
from tasks.config.models import Cadence, Step
from tasks.email.outbox import QueuedEmail, enqueue_emails
from tasks.email.timing import recipient_zone
from tasks.store.models import (
    Activity,
    ActivityKind,
    CadenceEnrolment,
    Delivery,
    EmailStatus,
    EnrolmentStatus,
    Lead,
    LeadStatus,
    Opportunity,
    OpportunityStatus,
    OutboxEmail,
    Suppression,
)

BATCH = 5_000
# Emails that count against a cap: on their way or gone, not the ones never sent.
COUNTED = (EmailStatus.QUEUED, EmailStatus.CLAIMED, EmailStatus.SENDING, EmailStatus.SENT,
           EmailStatus.RECORDED)  # fmt: skip


@dataclass
class StepSummary:
    queued: int = 0
    completed: int = 0
    capped: int = 0  # steps put off by a cap
    skipped: int = 0  # steps whose time had passed, skipped by catch_up: latest
    enrolled: dict[str, int] = field(default_factory=dict)  # audience cadences, per cadence
    exited: dict[str, int] = field(default_factory=dict)


def exit_finished_leads(
    session: Session, as_of: dt.datetime, config: NurtureConfig | None = None
) -> dict[str, int]:
    """End the active enrolments of leads who should hear no more from a cadence."""
    active = select(CadenceEnrolment.lead_id).where(
        CadenceEnrolment.status == EnrolmentStatus.ACTIVE
    )
    replied = select(Activity.lead_id).where(
        Activity.lead_id.in_(active),
        Activity.kind == ActivityKind.REPLY,
        Activity.occurred_at <= as_of,
        Activity.occurred_at
        >= select(CadenceEnrolment.enrolled_at)
        .where(
            CadenceEnrolment.lead_id == Activity.lead_id,
            CadenceEnrolment.status == EnrolmentStatus.ACTIVE,
        )
        .order_by(CadenceEnrolment.enrolled_at)
        .limit(1)
        .correlate(Activity)
        .scalar_subquery(),
    )
    closed = select(Lead.id).where(
        Lead.id.in_(active),
        Lead.status.in_([LeadStatus.DISQUALIFIED, LeadStatus.CUSTOMER]),
    )
    bounced = select(OutboxEmail.lead_id).where(
        OutboxEmail.lead_id.in_(active), OutboxEmail.delivery == Delivery.BOUNCED
    )
    suppressed = select(Lead.id).where(
        Lead.id.in_(active),
        exists().where(Suppression.email_key == Lead.email_key),
    )
    counts: dict[str, int] = {}
    for reason, query in (
        ("replied", replied),
        ("disqualified_or_customer", closed),
        ("bounced", bounced),
        ("suppressed", suppressed),
    ):
        lead_ids = set(session.execute(query).scalars())
        if n := exit_enrolments(session, lead_ids, reason, as_of):
            counts[reason] = n
    if config is not None:
        for name, cadence in config.cadences.cadences.items():
            for reason, query in _own_exits(name, cadence, config, as_of):
                lead_ids = set(session.execute(query).scalars())
                if n := exit_enrolments(session, lead_ids, reason, as_of, cadence=name):
                    counts[reason] = counts.get(reason, 0) + n
    return counts


def _own_exits(
    name: str, cadence: Cadence, config: NurtureConfig, as_of: dt.datetime
) -> list[tuple[str, Select[tuple[int]]]]:
    """The exits a cadence adds: a booked meeting since enrolment, a deal that reached a stage."""
    enrolled = (
        select(CadenceEnrolment.lead_id, CadenceEnrolment.enrolled_at)
        .where(CadenceEnrolment.status == EnrolmentStatus.ACTIVE, CadenceEnrolment.cadence == name)
        .subquery()
    )
    exits: list[tuple[str, Select[tuple[int]]]] = []
    if cadence.exit_on_meeting_booked:
        exits.append((
            "meeting_booked",
            select(enrolled.c.lead_id).join(Activity, Activity.lead_id == enrolled.c.lead_id).where(
                Activity.kind.in_([ActivityKind.MEETING_SCHEDULED, ActivityKind.MEETING_HELD]),
                Activity.occurred_at >= enrolled.c.enrolled_at,
                Activity.occurred_at <= as_of,
            ),
        ))  # fmt: skip
    if cadence.exit_on_stage is not None:
        order = [s.name for s in config.pipeline.stages]
        later = (
            order[order.index(cadence.exit_on_stage) :] if cadence.exit_on_stage in order else []
        )
        exits.append((
            f"reached_{cadence.exit_on_stage}",
            select(enrolled.c.lead_id).join(Opportunity, Opportunity.lead_id == enrolled.c.lead_id).where(
                or_(
                    and_(Opportunity.status == OpportunityStatus.OPEN, Opportunity.stage.in_(later)),
                    Opportunity.status == OpportunityStatus.WON,
                ),
                Opportunity.stage_entered_at <= as_of,
            ),
        ))  # fmt: skip
    return exits


def _skip_to_latest(
    enrolment: CadenceEnrolment,
    cadence: Cadence,
    steps: list[Step],
    holidays: list[dt.date],
    as_of: dt.datetime,
) -> int:
    """Move an overdue enrolment to the latest step whose planned time has come; return how
    many steps it skipped (never the last one's send: one email goes out)."""
    assert enrolment.next_due_at is not None
    planned = enrolment.next_due_at
    skipped = 0
    while enrolment.next_step + 1 < len(steps):
        if cadence.schedule is not None:
            following = next_occurrence(cadence.schedule, enrolment.enrolled_at, planned)
        else:
            following = after_wait(planned, steps[enrolment.next_step + 1].wait, holidays)
        if following > as_of:
            break
        planned = following
        enrolment.next_step += 1
        skipped += 1
    return skipped


def _today_counts(session: Session, as_of: dt.datetime) -> dict[tuple[str, object], int]:
    """Cadence emails already due in the 24 hours to ``as_of``, per recipient domain and owner."""
    rows = session.execute(
        select(Lead.email_key, Lead.owner_id)
        .join(OutboxEmail, OutboxEmail.lead_id == Lead.id)
        .where(
            OutboxEmail.enrolment_id.is_not(None),
            OutboxEmail.status.in_(COUNTED),
            OutboxEmail.due_at > as_of - dt.timedelta(days=1),
            OutboxEmail.due_at <= as_of,
        )
    ).tuples()
    counts: dict[tuple[str, object], int] = defaultdict(int)
    for address, owner_id in rows:
        counts[("domain", (address or "").rpartition("@")[2])] += 1
        if owner_id is not None:
            counts[("owner", owner_id)] += 1
    return dict(counts)


def _steps_for(enrolment: CadenceEnrolment, cadence: Cadence, config: NurtureConfig) -> list[Step]:
    """The steps this enrolment follows: the version it started on (``finish_started``, as
    long as its templates still exist), else the cadence as it is now, which it then records."""
    current = cadence.snapshot()
    if enrolment.steps and enrolment.steps != current and cadence.on_change == "finish_started":
        started = _parsed(json.dumps(enrolment.steps, sort_keys=True))
        if all(step.template in config.templates for step in started):
            return started
    if enrolment.steps != current:
        enrolment.steps = current
    return list(cadence.steps)


@lru_cache(maxsize=256)
def _parsed(snapshot: str) -> list[Step]:
    return [Step.model_validate(step) for step in json.loads(snapshot)]


def send_due_steps(
    session: Session, config: NurtureConfig, as_of: dt.datetime, *, run_id: int | None
) -> StepSummary:
    summary = StepSummary(exited=exit_finished_leads(session, as_of, config))
    due_now = (
        CadenceEnrolment.status == EnrolmentStatus.ACTIVE,
        CadenceEnrolment.next_due_at <= as_of,
        Lead.created_at <= as_of,
    )
    due = session.execute(
        select(CadenceEnrolment, Lead.country, Lead.phone, Lead.email_key, Lead.owner_id)
        .join(Lead, Lead.id == CadenceEnrolment.lead_id)
        .where(*due_now)
        .order_by(CadenceEnrolment.id)
    ).tuples()
    cap = config.cadences.caps.per_lead_per_week
    # Emails each due lead already has in the last seven days, every cadence and flow counted.
    this_week: dict[int, int] = defaultdict(int)
    if cap is not None:
        leads_due = (
            select(CadenceEnrolment.lead_id)
            .join(Lead, Lead.id == CadenceEnrolment.lead_id)
            .where(*due_now)
        )
        this_week.update(
            session.execute(
                select(OutboxEmail.lead_id, func.count())
                .where(
                    OutboxEmail.lead_id.in_(leads_due),
                    OutboxEmail.status.in_(COUNTED),
                    OutboxEmail.due_at > as_of - dt.timedelta(days=7),
                    OutboxEmail.due_at <= as_of,
                )
                .group_by(OutboxEmail.lead_id)
            )
            .tuples()
            .all()
        )
    caps = config.cadences.caps
    daily_caps = caps.per_domain_per_day is not None or caps.per_owner_per_day is not None
    today = _today_counts(session, as_of) if daily_caps else {}
    emails: list[QueuedEmail] = []
    local = config.sending.send_time_local is not None
    for enrolment, country, phone, address, owner_id in due:
        holidays = config.cadences.holidays_for(country)
        zone = recipient_zone(phone, country, config.sending.default_timezone) if local else None
        domain = ("domain", (address or "").rpartition("@")[2])
        owner = ("owner", owner_id)
        over_day = (caps.per_domain_per_day is not None and today.get(domain, 0) >= caps.per_domain_per_day) or (
            caps.per_owner_per_day is not None and owner_id is not None
            and today.get(owner, 0) >= caps.per_owner_per_day
        )  # fmt: skip
        if (cap is not None and this_week[enrolment.lead_id] >= cap) or over_day:
            # Over a cap: this step waits for the next send time (and is counted again then).
            enrolment.next_due_at = at_send_hour(
                as_of + dt.timedelta(hours=1), config.sending, zone
            )
            summary.capped += 1
            continue
        cadence = config.cadences.cadences.get(enrolment.cadence)
        steps = _steps_for(enrolment, cadence, config) if cadence is not None else []
        if cadence is None or enrolment.next_step >= len(steps):
            enrolment.status = EnrolmentStatus.COMPLETED
            enrolment.ended_at = as_of
            enrolment.end_reason = "cadence removed" if cadence is None else "finished"
            continue
        assert enrolment.next_due_at is not None
        if cadence.catch_up == "latest":
            summary.skipped += _skip_to_latest(enrolment, cadence, steps, holidays, as_of)
        step = steps[enrolment.next_step]
        emails.append(
            QueuedEmail(
                dedupe_key=f"cadence:{enrolment.id}:{enrolment.next_step}",
                lead_id=enrolment.lead_id,
                template=step.template,
                context={"cadence": enrolment.cadence, "step": enrolment.next_step + 1},
                due_at=enrolment.next_due_at,
                enrolment_id=enrolment.id,
                step=enrolment.next_step,
                hours=step.window,
            )
        )
        this_week[enrolment.lead_id] += 1
        if daily_caps:
            today[domain] = today.get(domain, 0) + 1
            today[owner] = today.get(owner, 0) + 1
        enrolment.next_step += 1
        if enrolment.next_step >= len(steps):
            enrolment.status = EnrolmentStatus.COMPLETED
            enrolment.ended_at = as_of
            enrolment.end_reason = "finished"
            enrolment.next_due_at = None
            summary.completed += 1
        else:
            # Catch-up policy: a paused or late run sends one step, then the next step waits
            # its full interval from now, never a burst of past-due emails.
            base = max(
                enrolment.next_due_at,
                at_send_hour(as_of, config.sending, zone) - dt.timedelta(days=1),
            )
            if cadence.schedule is not None:
                moment = next_occurrence(cadence.schedule, enrolment.enrolled_at, base)
            else:
                moment = after_wait(base, steps[enrolment.next_step].wait, holidays)
            enrolment.next_due_at = at_send_hour(moment, config.sending, zone)
        if len(emails) >= BATCH:
            summary.queued += len(
                enqueue_emails(session, config, emails, run_id=run_id, as_of=as_of)
            )
            emails = []
    summary.queued += len(enqueue_emails(session, config, emails, run_id=run_id, as_of=as_of))
    session.flush()
    return summary
