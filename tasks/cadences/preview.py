"""``nurture cadence preview``: who would get which email of a cadence when, writing nothing.

The schedule is the cadence's plan from a start moment: each wait (calendar or business days,
with the recipient's holidays), the send hour, then the recipient's business hours in their
time zone. Caps and exits depend on what happens meanwhile, so the preview does not apply them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.cadences.enrolment import at_send_hour
from tasks.cadences.schedule import after_wait
from tasks.config.loader import NurtureConfig
from tasks.email.timing import recipient_zone, within_hours
from tasks.store.models import IN_PLAY, Lead


@dataclass(frozen=True)
class PlannedEmail:
    lead_id: int
    step: int  # 1-based
    template: str
    due_utc: dt.datetime
    due_local: dt.datetime
    zone: str


def sample_leads(session: Session, n: int) -> list[int]:
    """The first ``n`` leads in play with an address."""
    return list(
        session.scalars(
            select(Lead.id)
            .where(Lead.email.is_not(None), Lead.merged_into_id.is_(None), Lead.status.in_(IN_PLAY))
            .order_by(Lead.id)
            .limit(n)
        )
    )


def preview(
    session: Session,
    config: NurtureConfig,
    name: str,
    lead_ids: Sequence[int],
    start: dt.datetime,
) -> list[PlannedEmail]:
    cadence = config.cadences.cadences.get(name)
    if cadence is None:
        known = ", ".join(sorted(config.cadences.cadences))
        raise ValueError(f"no cadence {name!r} in cadences.yaml (there are: {known})")
    people = session.execute(
        select(Lead.id, Lead.phone, Lead.country).where(Lead.id.in_(list(lead_ids)))
    ).all()
    found = {row.id for row in people}
    missing = [i for i in lead_ids if i not in found]
    if missing:
        raise ValueError(f"no lead with id {', '.join(map(str, missing))}")
    sending = config.sending
    planned: list[PlannedEmail] = []
    for person in sorted(people, key=lambda p: list(lead_ids).index(p.id)):
        zone = recipient_zone(person.phone, person.country, sending.default_timezone)
        holidays = config.cadences.holidays_for(person.country)
        moment = start
        for number, step in enumerate(cadence.steps, 1):
            moment = at_send_hour(after_wait(moment, step.wait, holidays), sending, zone)
            due = within_hours(moment, zone, sending.business_hours)
            planned.append(
                PlannedEmail(person.id, number, step.template, due, due.astimezone(zone), str(zone))
            )
    return planned
