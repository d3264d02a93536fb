"""Cadence enrolments: who is in which sequence, which step is next, and when it falls due."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from tasks.cadences.schedule import after_wait
from tasks.config.models import Cadence, Sending
from tasks.store.models import CadenceEnrolment, EnrolmentStatus, Lead, LeadStatus
from tasks.store.upsert import among, id_slices, insert_ignore, rowcount


def at_send_hour(moment: dt.datetime, sending: Sending) -> dt.datetime:
    """The configured send hour on the moment's day, or the next day's if it has passed."""
    slot = moment.replace(hour=sending.send_hour_utc, minute=0, second=0, microsecond=0)
    return slot if slot >= moment else slot + dt.timedelta(days=1)


def first_due(
    start: dt.datetime, cadence: Cadence, sending: Sending, holidays: Sequence[dt.date] = ()
) -> dt.datetime:
    return at_send_hour(after_wait(start, cadence.steps[0].wait, holidays), sending)


def enrol(
    session: Session,
    starts: dict[int, dt.datetime],
    cadence_name: str,
    cadence: Cadence,
    sending: Sending,
    *,
    run_id: int | None,
    holidays: Sequence[dt.date] = (),
) -> list[int]:
    """Enrol each lead from its start moment; a lead already active in the cadence is skipped."""
    rows = [
        {
            "lead_id": lead_id,
            "cadence": cadence_name,
            "status": EnrolmentStatus.ACTIVE,
            "enrolled_at": start,
            "next_step": 0,
            "next_due_at": first_due(start, cadence, sending, holidays),
            "run_id": run_id,
        }
        for lead_id, start in sorted(starts.items())
    ]
    # The partial unique index (one active enrolment per lead and cadence) is the guard.
    ids = insert_ignore(
        session,
        CadenceEnrolment,
        rows,
        ["lead_id", "cadence"],
        where=text("status = 'active'"),
    )
    if ids:
        for some in id_slices(session, sorted(starts)):
            session.execute(
                update(Lead)
                .where(among(session, Lead.id, some), Lead.status == LeadStatus.NEW)
                .values(status=LeadStatus.NURTURING)
                .execution_options(synchronize_session="fetch")
            )
    return ids


def exit_enrolments(
    session: Session, lead_ids: Iterable[int], reason: str, as_of: dt.datetime
) -> int:
    exited = 0
    for ids in id_slices(session, list(lead_ids)):
        result = session.execute(
            update(CadenceEnrolment)
            .where(
                among(session, CadenceEnrolment.lead_id, ids),
                CadenceEnrolment.status == EnrolmentStatus.ACTIVE,
            )
            .values(
                status=EnrolmentStatus.EXITED, ended_at=as_of, end_reason=reason, next_due_at=None
            )
            .execution_options(synchronize_session="fetch")
        )
        exited += rowcount(result)
    return exited


def active_lead_ids(session: Session, lead_ids: Iterable[int]) -> set[int]:
    active: set[int] = set()
    for ids in id_slices(session, list(lead_ids)):
        active.update(
            session.scalars(
                select(CadenceEnrolment.lead_id).where(
                    among(session, CadenceEnrolment.lead_id, ids),
                    CadenceEnrolment.status == EnrolmentStatus.ACTIVE,
                )
            )
        )
    return active
