"""Cadence enrolments: who is in which sequence, which step is next, and when it falls due."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import literal, select, text, update
from sqlalchemy.orm import Session

from tasks.cadences.schedule import after_wait, next_occurrence
from tasks.config.models import Cadence, Sending
from tasks.email.timing import recipient_zone, wall_clock
from tasks.store.models import CadenceEnrolment, EnrolmentStatus, Lead, LeadStatus
from tasks.store.upsert import among, dialect_insert, id_slices, rowcount


def at_send_hour(
    moment: dt.datetime, sending: Sending, zone: ZoneInfo | None = None
) -> dt.datetime:
    """The send time on the moment's day, or the next day's if it has passed (UTC).

    With ``send_time_local`` and the recipient's ``zone`` the send time is their wall-clock
    time, so a 10:00 send stays 10:00 local across a daylight-saving change; otherwise it is
    ``send_hour_utc``.
    """
    if sending.send_time_local is not None and zone is not None:
        local = moment.astimezone(zone)
        for days_ahead in (0, 1, 2):
            slot = wall_clock(
                local.date() + dt.timedelta(days=days_ahead), sending.send_time_local, zone
            )
            if slot >= moment:
                return slot.astimezone(dt.UTC)
    slot = moment.replace(hour=sending.send_hour_utc, minute=0, second=0, microsecond=0)
    return slot if slot >= moment else slot + dt.timedelta(days=1)


def first_due(
    start: dt.datetime,
    cadence: Cadence,
    sending: Sending,
    holidays: Sequence[dt.date] = (),
    zone: ZoneInfo | None = None,
) -> dt.datetime:
    if cadence.schedule is not None:
        return at_send_hour(next_occurrence(cadence.schedule, start, start), sending, zone)
    return at_send_hour(after_wait(start, cadence.steps[0].wait, holidays), sending, zone)


def enrol(
    session: Session,
    starts: dict[int, dt.datetime],
    cadence_name: str,
    cadence: Cadence,
    sending: Sending,
    *,
    run_id: int | None,
    holidays: Sequence[dt.date] = (),
    exclusive_with: Sequence[str] = (),
    zones: Mapping[int, ZoneInfo] | None = None,
) -> list[int]:
    """Enrol each lead from its start moment and return the new enrolments' ids; a lead already
    active in the cadence is skipped, and so is one active in any of ``exclusive_with`` (the
    other exclusive cadences, when this one is exclusive). ``zones``: the leads' own (see
    ``lead_zone``), when the caller has read them already; else they are read here when
    sending is in the recipient's time."""
    if cadence.exclusive and exclusive_with:
        busy = _active_in(session, starts, exclusive_with)
        starts = {lead: at for lead, at in starts.items() if lead not in busy}
    ids: list[int] = []
    e = CadenceEnrolment
    for insert in _inserts(
        session, starts, cadence_name, cadence, sending, run_id, holidays, zones
    ):
        guarded = insert.on_conflict_do_nothing(
            index_elements=["lead_id", "cadence"], index_where=text("status = 'active'")
        )
        ids += session.scalars(guarded.returning(e.id))
    if ids:
        for some in id_slices(session, sorted(starts)):
            session.execute(
                update(Lead)
                .where(among(session, Lead.id, some), Lead.status == LeadStatus.NEW)
                .values(status=LeadStatus.NURTURING)
                .execution_options(synchronize_session="fetch")
            )
    return ids


def enrol_new_leads(
    session: Session,
    starts: dict[int, dt.datetime],
    cadence_name: str,
    cadence: Cadence,
    sending: Sending,
    *,
    run_id: int | None,
    holidays: Sequence[dt.date] = (),
    zones: Mapping[int, ZoneInfo] | None = None,
) -> int:
    """``enrol`` for leads the caller's run created, already ``nurturing``, and enrols once per
    cadence: none can be active anywhere yet, so neither is looked for, no status is changed,
    and a second enrolment is an error, never skipped. Returns how many were enrolled (an
    import's million new leads: their ids read back cost more than the count)."""
    return sum(
        # An INSERT's count is kept only when asked for (SQLAlchemy keeps UPDATE's and DELETE's).
        rowcount(session.execute(insert.execution_options(preserve_rowcount=True)))
        for insert in _inserts(
            session, starts, cadence_name, cadence, sending, run_id, holidays, zones
        )
    )


def _inserts(
    session: Session,
    starts: dict[int, dt.datetime],
    cadence_name: str,
    cadence: Cadence,
    sending: Sending,
    run_id: int | None,
    holidays: Sequence[dt.date],
    zones: Mapping[int, ZoneInfo] | None,
) -> Iterator[Any]:
    """The INSERT ... SELECTs that enrol the leads, unguarded.

    An import's leads mostly share a start (the import itself) and a zone: each distinct pair's
    due time is worked out once, and its leads are enrolled by one INSERT ... SELECT (per id
    slice) that carries the cadence's steps once, not a row of Python values per lead.
    """
    if sending.send_time_local is None:
        zones = {}
    elif zones is None:
        zones = _zones(session, starts, sending)
    steps = cadence.snapshot()
    for (start, zone), leads in timed_alike(starts, zones).items():
        when = first_due(start, cadence, sending, holidays, zone)
        for some in id_slices(session, leads):
            yield _enrolling(session, some, cadence_name, start, when, run_id, steps)


def timed_alike(
    starts: Mapping[int, dt.datetime], zones: Mapping[int, ZoneInfo] | None
) -> dict[tuple[dt.datetime, ZoneInfo | None], list[int]]:
    """The leads by (start, zone), ids ascending, groups in the order of their first lead:
    each group's first step falls due at one moment, worked out once (``zones`` None: none)."""
    groups: dict[tuple[dt.datetime, ZoneInfo | None], list[int]] = defaultdict(list)
    for lead_id, start in sorted(starts.items()):
        groups[start, zones.get(lead_id) if zones is not None else None].append(lead_id)
    return groups


def _enrolling(
    session: Session,
    lead_ids: Sequence[int],
    cadence_name: str,
    start: dt.datetime,
    when: dt.datetime,
    run_id: int | None,
    steps: list[dict[str, Any]],
) -> Any:
    """The INSERT ... SELECT enrolling the leads from ``start``, first step due ``when``.

    The partial unique index (one active enrolment per lead and cadence) is the guard: the
    caller skips a lead already active (``enrol``) or lets it fail (``enrol_new_leads``).
    """
    e = CadenceEnrolment
    rows = (
        select(
            Lead.id,
            literal(cadence_name, e.cadence.type),
            literal(EnrolmentStatus.ACTIVE, e.status.type),
            literal(start, e.enrolled_at.type),
            literal(0, e.next_step.type),
            literal(when, e.next_due_at.type),
            literal(run_id, e.run_id.type),
            literal(steps, e.steps.type),
        )
        .where(among(session, Lead.id, lead_ids))
        .order_by(Lead.id)
    )
    names = ["lead_id", "cadence", "status", "enrolled_at", "next_step", "next_due_at", "run_id",
             "steps"]  # fmt: skip
    return dialect_insert(session, CadenceEnrolment).from_select(names, rows)


def _active_in(session: Session, lead_ids: Iterable[int], cadences: Sequence[str]) -> set[int]:
    busy: set[int] = set()
    for ids in id_slices(session, sorted(lead_ids)):
        busy.update(
            session.scalars(
                select(CadenceEnrolment.lead_id).where(
                    among(session, CadenceEnrolment.lead_id, ids),
                    CadenceEnrolment.cadence.in_(list(cadences)),
                    CadenceEnrolment.status == EnrolmentStatus.ACTIVE,
                )
            )
        )
    return busy


def _zones(session: Session, lead_ids: Iterable[int], sending: Sending) -> dict[int, ZoneInfo]:
    zones: dict[int, ZoneInfo] = {}
    for ids in id_slices(session, sorted(lead_ids)):
        for lead_id, phone, country in session.execute(
            select(Lead.id, Lead.phone, Lead.country).where(among(session, Lead.id, ids))
        ).tuples():
            zones[lead_id] = lead_zone(phone, country, sending)
    return zones


def lead_zone(phone: str | None, country: str | None, sending: Sending) -> ZoneInfo:
    """The time zone a lead's cadence emails are timed in (its phone's, else its country's)."""
    return recipient_zone(phone, country, sending.default_timezone)


def exit_enrolments(
    session: Session,
    lead_ids: Iterable[int],
    reason: str,
    as_of: dt.datetime,
    cadence: str | None = None,
) -> int:
    """End the leads' active enrolments (in ``cadence`` only, if given); return how many."""
    exited = 0
    only = [CadenceEnrolment.cadence == cadence] if cadence is not None else []
    for ids in id_slices(session, list(lead_ids)):
        result = session.execute(
            update(CadenceEnrolment)
            .where(
                among(session, CadenceEnrolment.lead_id, ids),
                CadenceEnrolment.status == EnrolmentStatus.ACTIVE,
                *only,
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
