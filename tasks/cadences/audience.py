"""Enrol each day the leads a cadence's audience describes, by its re-enrolment policy.

The audience is a condition in the rules language over lead facts (status, grade, source,
country, tags, timing, engagement...), compiled to one set-based query per cadence. A lead
already active in the cadence is never enrolled twice; ``reenrol`` says whether a lead who was
in it before may come back (``once``: never; ``if_not_active`` and ``anytime``: yes, once
``min_gap`` has passed since their last touch: that enrolment's end, or any email); ``exclusive`` cadences take no lead who is
active in another exclusive cadence.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session

from tasks.cadences.enrolment import enrol
from tasks.cadences.steps import COUNTED
from tasks.config.loader import NurtureConfig
from tasks.rules.compile import compile_condition
from tasks.rules.conditions import facts_used
from tasks.rules.engine import ComputedFacts
from tasks.rules.facts import FactSet
from tasks.store.models import IN_PLAY, CadenceEnrolment, EnrolmentStatus, Lead, OutboxEmail


def enrol_audiences(
    session: Session, config: NurtureConfig, as_of: dt.datetime, *, run_id: int | None
) -> dict[str, int]:
    """{cadence: leads enrolled now} for the cadences with ``enrol: audience``."""
    enrolled: dict[str, int] = {}
    for name, cadence in config.cadences.cadences.items():
        if cadence.enrol != "audience" or cadence.audience is None:
            continue
        facts = FactSet(as_of, session.get_bind().dialect.name)
        used = sorted(facts_used(cadence.audience))
        inner = (
            facts.select_facts(used)
            .where(
                Lead.merged_into_id.is_(None),
                Lead.status.in_(IN_PLAY),
                Lead.email.is_not(None),
                Lead.created_at <= as_of,
            )
            .subquery("audience")
        )
        lead = inner.c.id
        here = and_(CadenceEnrolment.lead_id == lead, CadenceEnrolment.cadence == name)
        query = select(lead).where(
            compile_condition(cadence.audience, ComputedFacts(facts, inner)),
            ~exists().where(here, CadenceEnrolment.status == EnrolmentStatus.ACTIVE),
        )
        if cadence.reenrol == "once":
            query = query.where(~exists().where(here))
        else:
            # The gap runs from the lead's last touch: the end of their last enrolment here, and
            # the last email they got from any flow.
            gap_from = as_of - cadence.min_gap
            query = query.where(
                ~exists().where(here, CadenceEnrolment.ended_at > gap_from),
                ~exists().where(
                    OutboxEmail.lead_id == lead,
                    OutboxEmail.status.in_(COUNTED),
                    OutboxEmail.due_at > gap_from,
                    OutboxEmail.due_at <= as_of,
                ),
            )
        # Exclusivity is enrol()'s to enforce, on every enrolment path alike.
        starts = {lead_id: as_of for lead_id in session.scalars(query.order_by(lead))}
        if starts:
            ids = enrol(
                session, starts, name, cadence, config.sending, run_id=run_id,
                holidays=config.cadences.holidays_for(None),
                exclusive_with=config.cadences.exclusive_except(name),
            )  # fmt: skip
            if ids:
                enrolled[name] = len(ids)
    return enrolled
