"""Audience cadences: who is enrolled each day, re-enrolment, exclusivity, RRULE schedules."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tasks.cadences.audience import enrol_audiences
from tasks.cadences.steps import send_due_steps
from tasks.config.loader import NurtureConfig
from tasks.store.models import CadenceEnrolment, EnrolmentStatus, OutboxEmail
from tests.builders import lead
from tests.conftest import config_problems

T = dt.datetime(2026, 3, 2, 6, tzinfo=dt.UTC)  # a Monday


def people(session: Session) -> dict[str, int]:
    made = {
        "not_now": lead(session, T - dt.timedelta(days=90), timing="no", need="yes"),
        "no_need": lead(session, T - dt.timedelta(days=90), timing="no", need="no"),
        "ready": lead(session, T - dt.timedelta(days=90), timing="yes", need="yes"),
        "future": lead(session, T + dt.timedelta(days=5), timing="no", need="yes"),
    }
    session.flush()
    return {k: v.id for k, v in made.items()}


def enrolments(session: Session, cadence: str) -> dict[int, list[EnrolmentStatus]]:
    found: dict[int, list[EnrolmentStatus]] = {}
    for e in session.scalars(
        select(CadenceEnrolment)
        .where(CadenceEnrolment.cadence == cadence)
        .order_by(CadenceEnrolment.id)
    ):
        found.setdefault(e.lead_id, []).append(e.status)
    return found


def test_the_audience_is_enrolled_once_while_active_and_again_after_the_gap(
    session: Session, config: NurtureConfig
) -> None:
    who = people(session)
    assert enrol_audiences(session, config, T, run_id=None) == {"not_now_nurture": 1}
    assert set(enrolments(session, "not_now_nurture")) == {who["not_now"]}
    assert enrol_audiences(session, config, T + dt.timedelta(days=1), run_id=None) == {}
    # The enrolment ends; within the three-month gap nothing, after it a new enrolment.
    session.execute(
        update(CadenceEnrolment).values(
            status=EnrolmentStatus.COMPLETED, ended_at=T + dt.timedelta(days=2)
        )
    )
    # Two months on: the lead created since joins; the first is within its three-month rest.
    enrol_audiences(session, config, T + dt.timedelta(days=60), run_id=None)
    counts = {k: len(v) for k, v in enrolments(session, "not_now_nurture").items()}
    assert counts == {who["not_now"]: 1, who["future"]: 1}
    enrol_audiences(session, config, T + dt.timedelta(days=100), run_id=None)
    assert enrolments(session, "not_now_nurture")[who["not_now"]] == [
        EnrolmentStatus.COMPLETED,
        EnrolmentStatus.ACTIVE,
    ]


def test_once_means_once_and_exclusive_cadences_exclude_each_other(
    session: Session, config: NurtureConfig
) -> None:
    who = people(session)
    cadence = config.cadences.cadences["not_now_nurture"]
    once = dataclasses.replace(config, cadences=config.cadences.model_copy(update={
        "cadences": {**config.cadences.cadences, "not_now_nurture": cadence.model_copy(update={"reenrol": "once"})}}))  # fmt: skip
    # Already in the (exclusive) new-lead nurture: not taken.
    session.add(
        CadenceEnrolment(
            lead_id=who["not_now"],
            cadence="new_lead_nurture",
            enrolled_at=T,
            next_step=1,
            next_due_at=T,
        )
    )
    session.flush()
    assert enrol_audiences(session, once, T, run_id=None) == {}
    session.execute(update(CadenceEnrolment).values(status=EnrolmentStatus.COMPLETED, ended_at=T))
    assert enrol_audiences(session, once, T + dt.timedelta(days=1), run_id=None) == {
        "not_now_nurture": 1
    }
    session.execute(update(CadenceEnrolment).where(CadenceEnrolment.cadence == "not_now_nurture")
                    .values(status=EnrolmentStatus.COMPLETED, ended_at=T + dt.timedelta(days=2)))  # fmt: skip
    enrol_audiences(session, once, T + dt.timedelta(days=400), run_id=None)
    assert len(enrolments(session, "not_now_nurture")[who["not_now"]]) == 1  # never again


def test_a_scheduled_cadence_sends_on_each_occurrence_of_its_rule(
    session: Session, config: NurtureConfig
) -> None:
    who = people(session)
    enrol_audiences(session, config, T, run_id=None)
    day = T
    for _ in range(130):  # the daily flow, every day for four months and more
        send_due_steps(session, config, day + dt.timedelta(hours=20), run_id=None)
        day += dt.timedelta(days=1)
    sent = (
        session.execute(
            select(OutboxEmail.due_at, OutboxEmail.template)
            .where(OutboxEmail.lead_id == who["not_now"])
            .order_by(OutboxEmail.due_at)
        )
        .tuples()
        .all()
    )
    # Second Tuesdays: March 10, April 14, May 12, June 9 2026; 10:00 in New York.
    assert [d.date() for d, _ in sent] == [
        dt.date(2026, 3, 10),
        dt.date(2026, 4, 14),
        dt.date(2026, 5, 12),
        dt.date(2026, 6, 9),
    ]
    assert [t for _, t in sent] == [
        "nurture_value",
        "nurture_case_study",
        "nurture_checkin",
        "nurture_last_touch",
    ]
    assert {d.astimezone(dt.timezone(dt.timedelta(hours=-4))).hour for d, _ in sent[1:]} == {10}


def test_bad_schedules_and_audiences_are_config_errors_with_lines(cfg_dir: Path) -> None:
    path = cfg_dir / "cadences.yaml"
    text = path.read_text()
    path.write_text(text.replace("FREQ=MONTHLY;BYDAY=TU;BYSETPOS=2", "FREQ=FORTNIGHTLY")
                    .replace('timing == "no" and need', 'timin == "no" and need'))  # fmt: skip
    shown = config_problems(cfg_dir)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "schedule:" in t)
    assert any(f"cadences.yaml, line {line}" in p and "not a valid RRULE" in p for p in shown), (
        shown
    )
    assert any("unknown fact 'timin'; did you mean 'timing'" in p for p in shown), shown


def test_the_gap_also_runs_from_the_last_email(session: Session, config: NurtureConfig) -> None:
    from tests.builders import sent_email

    who = people(session)
    sent_email(session, who["not_now"], T - dt.timedelta(days=30))  # a month ago, another flow
    assert enrol_audiences(session, config, T, run_id=None) == {}  # min_gap is three months
    assert enrol_audiences(session, config, T + dt.timedelta(days=61), run_id=None) == {
        "not_now_nurture": 2
    }
