"""Cadence timing: waits in business days around weekends and holidays, and the weekly cap."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.cadences.enrolment import enrol, enrol_new_leads
from tasks.cadences.schedule import after_wait
from tasks.cadences.steps import send_due_steps
from tasks.config.loader import NurtureConfig
from tasks.config.models import BusinessDays, Cadences, Caps
from tasks.deals.calendar import add_business_days
from tasks.store.models import CadenceEnrolment, OutboxEmail
from tests.builders import lead

FRIDAY = dt.datetime(2026, 12, 18, 14, tzinfo=dt.UTC)


def test_business_days_skip_weekends_and_holidays() -> None:
    christmas = [dt.date(2026, 12, 25)]
    assert add_business_days(dt.date(2026, 12, 18), 1) == dt.date(2026, 12, 21)  # Fri -> Mon
    assert add_business_days(dt.date(2026, 12, 18), 5, christmas) == dt.date(2026, 12, 28)
    assert add_business_days(dt.date(2026, 12, 19), 0) == dt.date(2026, 12, 21)  # Sat -> Mon
    moved = after_wait(FRIDAY, BusinessDays(5), christmas)
    assert moved == dt.datetime(2026, 12, 28, 14, tzinfo=dt.UTC)  # the time of day is kept


def test_waits_read_as_people_write_them() -> None:
    cadences = Cadences.model_validate(
        {
            "cadences": {
                "c": {
                    "steps": [
                        {"wait": "3 business days", "template": "welcome"},
                        {"wait": "1 business day", "template": "welcome"},
                        {"wait": "2 weeks", "template": "welcome"},
                    ]
                }
            }
        }
    )
    waits = [s.wait for s in cadences.cadences["c"].steps]
    assert waits[:2] == [BusinessDays(3), BusinessDays(1)]
    assert cadences.model_dump()["cadences"]["c"]["steps"][0]["wait"] == "3 business days"
    with pytest.raises(ValueError, match="expected a duration"):
        Cadences.model_validate(
            {"cadences": {"c": {"steps": [{"wait": "3 busy days", "template": "w"}]}}}
        )


def with_cadences(config: NurtureConfig, **changes: object) -> NurtureConfig:
    return dataclasses.replace(config, cadences=config.cadences.model_copy(update=changes))


def test_a_business_day_step_honours_the_recipients_holidays(
    session: Session, config: NurtureConfig
) -> None:
    cadence = Cadences.model_validate(
        {
            "cadences": {
                "c": {
                    "steps": [
                        {"wait": "0 days", "template": "welcome"},
                        {"wait": "2 business days", "template": "nurture_value"},
                    ]
                }
            }
        }
    ).cadences["c"]
    holidays = {"DE": [dt.date(2026, 12, 24), dt.date(2026, 12, 25)], "default": []}
    cfg = with_cadences(config, cadences={"c": cadence}, holidays=holidays)
    german = lead(session, FRIDAY - dt.timedelta(days=30), country="DE")
    other = lead(session, FRIDAY - dt.timedelta(days=30), country="US")
    wednesday = dt.datetime(2026, 12, 23, 6, tzinfo=dt.UTC)  # before 10:00 in both zones
    enrol(
        session, {german.id: wednesday, other.id: wednesday}, "c", cadence, cfg.sending, run_id=None
    )
    # By the evening both first steps (10:00 in Berlin and in New York) have gone out.
    send_due_steps(session, cfg, wednesday + dt.timedelta(hours=17), run_id=None)
    due = {e.lead_id: e.next_due_at for e in session.scalars(select(CadenceEnrolment))}
    assert due[other.id].date() == dt.date(2026, 12, 25)  # Thu, Fri
    assert due[german.id].date() == dt.date(2026, 12, 29)  # Christmas off: Mon 28, Tue 29


def test_the_weekly_cap_puts_a_step_off_a_day(session: Session, config: NurtureConfig) -> None:
    cadences = Cadences.model_validate(
        {
            "cadences": {
                name: {
                    "steps": [
                        {"wait": "0 days", "template": "welcome"},
                        {"wait": "1 day", "template": "nurture_value"},
                    ]
                }
                for name in ("a", "b")
            }
        }
    )
    cfg = with_cadences(config, cadences=cadences.cadences, caps=Caps(per_lead_per_week=2))
    person = lead(session, FRIDAY - dt.timedelta(days=30))
    for name in ("a", "b"):
        enrol(session, {person.id: FRIDAY}, name, cadences.cadences[name], cfg.sending, run_id=None)
    # 10:00 in New York (the default zone) is 15:00 UTC.
    first = send_due_steps(session, cfg, FRIDAY + dt.timedelta(hours=2), run_id=None)
    assert (first.queued, first.capped) == (2, 0)
    saturday = FRIDAY + dt.timedelta(days=1, hours=2)
    second = send_due_steps(session, cfg, saturday, run_id=None)
    assert (second.queued, second.capped) == (0, 2)  # two this week already
    emails = session.scalars(select(OutboxEmail.due_at)).all()
    assert len(emails) == 2
    later = send_due_steps(session, cfg, FRIDAY + dt.timedelta(days=7, hours=2), run_id=None)
    assert later.queued == 2  # a week on, the steps go out


def test_preview_plans_each_step_in_local_and_utc_time_and_writes_nothing(
    session: Session, config: NurtureConfig
) -> None:
    from tasks.cadences.preview import preview

    berlin = lead(session, FRIDAY, country="DE", phone="+493012345678")
    session.commit()
    planned = preview(session, config, "new_lead_nurture", [berlin.id], FRIDAY)
    steps = config.cadences.cadences["new_lead_nurture"].steps
    assert [p.step for p in planned] == list(range(1, len(steps) + 1))
    assert [p.template for p in planned] == [s.template for s in steps]
    for p in planned:
        assert p.zone == "Europe/Berlin" and p.due_local.isoweekday() <= 5
        assert dt.time(9) <= p.due_local.time() < dt.time(17, 30)
        assert p.due_utc == p.due_local  # the same moment, shown twice
    assert planned == sorted(planned, key=lambda p: p.due_utc)
    assert session.scalar(select(OutboxEmail.id)) is None
    with pytest.raises(ValueError, match=r"no cadence 'nope'.*new_lead_nurture"):
        preview(session, config, "nope", [berlin.id], FRIDAY)
    with pytest.raises(ValueError, match="no lead with id 999999"):
        preview(session, config, "new_lead_nurture", [999999], FRIDAY)


def test_a_10_oclock_send_stays_10_oclock_local_across_the_dst_change(
    session: Session, config: NurtureConfig
) -> None:
    from zoneinfo import ZoneInfo

    weekly = Cadences.model_validate(
        {
            "cadences": {
                "w": {
                    "steps": [
                        {"wait": "0 days", "template": "welcome"},
                        {"wait": "7 days", "template": "nurture_value"},
                        {"wait": "7 days", "template": "nurture_checkin"},
                    ]
                }
            }
        }
    ).cadences["w"]
    cfg = with_cadences(config, cadences={"w": weekly})
    assert cfg.sending.send_time_local == dt.time(10)
    berlin = lead(session, dt.datetime(2026, 1, 5, tzinfo=dt.UTC), country="DE")
    start = dt.datetime(2026, 3, 27, 6, tzinfo=dt.UTC)  # the Friday before the change (Mar 29)
    enrol(session, {berlin.id: start}, "w", weekly, cfg.sending, run_id=None)
    moments = []
    for _ in range(3):
        enrolment = session.scalar(select(CadenceEnrolment))
        assert enrolment is not None and enrolment.next_due_at is not None
        moments.append(enrolment.next_due_at)
        send_due_steps(session, cfg, enrolment.next_due_at, run_id=None)
    local = [m.astimezone(ZoneInfo("Europe/Berlin")) for m in moments]
    assert [m.time() for m in local] == [dt.time(10)] * 3
    assert [m.utcoffset() for m in local] == [
        dt.timedelta(hours=1),
        dt.timedelta(hours=2),
        dt.timedelta(hours=2),
    ]
    assert [m.hour for m in moments] == [9, 8, 8]  # UTC moves, local time does not


def test_a_cadence_can_end_on_a_booked_meeting_or_a_stage_reached(
    session: Session, config: NurtureConfig
) -> None:
    from tasks.store.models import Activity, ActivityKind, EnrolmentStatus
    from tests.builders import deal

    cadence = config.cadences.cadences["new_lead_nurture"]
    assert cadence.exit_on_meeting_booked and cadence.exit_on_stage == "demo"
    start = dt.datetime(2026, 3, 2, 6, tzinfo=dt.UTC)
    met, advanced, early, quiet = (lead(session, start - dt.timedelta(days=40)) for _ in range(4))
    enrol(session, {p.id: start for p in (met, advanced, early, quiet)}, "new_lead_nurture", cadence,
          config.sending, run_id=None)  # fmt: skip
    session.add(
        Activity(
            lead_id=met.id,
            kind=ActivityKind.MEETING_SCHEDULED,
            occurred_at=start + dt.timedelta(days=1),
        )
    )
    deal(session, advanced.id, "proposal", start + dt.timedelta(days=2))  # past demo
    deal(session, early.id, "discovery", start + dt.timedelta(days=2))  # not yet
    session.flush()
    summary = send_due_steps(session, config, start + dt.timedelta(days=3), run_id=None)
    assert summary.exited == {"meeting_booked": 1, "reached_demo": 1}
    ended = {e.lead_id: (e.status, e.end_reason) for e in session.scalars(select(CadenceEnrolment))}
    assert ended[met.id] == (EnrolmentStatus.EXITED, "meeting_booked")
    assert ended[advanced.id] == (EnrolmentStatus.EXITED, "reached_demo")
    assert ended[early.id][0] is ended[quiet.id][0] is EnrolmentStatus.ACTIVE


def test_an_exit_stage_must_exist(cfg_dir: Path) -> None:
    from tests.conftest import config_problems

    path = cfg_dir / "cadences.yaml"
    path.write_text(path.read_text().replace("exit_on_stage: demo", "exit_on_stage: dmeo"))
    assert any("cadences.yaml" in p and "no stage 'dmeo'" in p for p in config_problems(cfg_dir))


@pytest.mark.parametrize("policy", ["finish_started", "next_step"])
def test_editing_a_running_cadence_follows_its_policy(
    session: Session, config: NurtureConfig, policy: str
) -> None:
    def cadence(second: str, wait: str) -> object:
        return Cadences.model_validate(
            {
                "cadences": {
                    "c": {
                        "on_change": policy,
                        "steps": [
                            {"wait": "0 days", "template": "welcome"},
                            {"wait": wait, "template": second},
                            {"wait": "3 days", "template": "nurture_last_touch"},
                        ],
                    }
                }
            }
        ).cadences["c"]

    before = cadence("nurture_value", "2 days")
    after = cadence("nurture_case_study", "5 days")
    start = dt.datetime(2026, 3, 2, 6, tzinfo=dt.UTC)
    early = lead(session, start - dt.timedelta(days=40))
    enrol(session, {early.id: start}, "c", before, config.sending, run_id=None)  # type: ignore[arg-type]
    send_due_steps(
        session,
        with_cadences(config, cadences={"c": before}),
        start + dt.timedelta(hours=12),
        run_id=None,
    )
    edited = with_cadences(config, cadences={"c": after})
    late = lead(session, start - dt.timedelta(days=40))
    enrol(session, {late.id: start}, "c", after, config.sending, run_id=None)  # type: ignore[arg-type]
    day = start + dt.timedelta(hours=12)
    for _ in range(12):  # every day for twelve days, as the daily flow would
        send_due_steps(session, edited, day, run_id=None)
        day += dt.timedelta(days=1)
    sent = {
        lead_id: [t for _, t in sorted((d, t) for lid, d, t in rows if lid == lead_id)]
        for rows in [
            session.execute(select(OutboxEmail.lead_id, OutboxEmail.due_at, OutboxEmail.template))
            .tuples()
            .all()
        ]
        for lead_id in (early.id, late.id)
    }
    assert sent[late.id] == ["welcome", "nurture_case_study", "nurture_last_touch"]
    if policy == "finish_started":
        assert sent[early.id] == ["welcome", "nurture_value", "nurture_last_touch"]
    else:
        assert sent[early.id] == ["welcome", "nurture_case_study", "nurture_last_touch"]


def test_daily_caps_per_recipient_domain_and_per_owner(
    session: Session, config: NurtureConfig
) -> None:
    from tests.builders import owner

    cadence = Cadences.model_validate(
        {"cadences": {"c": {"steps": [{"wait": "0 days", "template": "welcome"}]}}}
    ).cadences["c"]
    cfg = with_cadences(
        config, cadences={"c": cadence}, caps=Caps(per_domain_per_day=2, per_owner_per_day=3)
    )
    rep = owner(session)
    start = dt.datetime(2026, 3, 2, 6, tzinfo=dt.UTC)
    same_domain = [
        lead(session, start - dt.timedelta(days=9), email=f"p{i}@bigco.example") for i in range(3)
    ]
    one_owner = [lead(session, start - dt.timedelta(days=9), owner_id=rep.id) for _ in range(4)]
    everyone = same_domain + one_owner
    enrol(session, {p.id: start for p in everyone}, "c", cadence, cfg.sending, run_id=None)
    first = send_due_steps(session, cfg, start + dt.timedelta(hours=12), run_id=None)
    assert (first.queued, first.capped) == (5, 2)  # 2 of 3 at bigco, 3 of 4 for the rep
    second = send_due_steps(session, cfg, start + dt.timedelta(days=1, hours=12), run_id=None)
    assert (second.queued, second.capped) == (2, 0)  # the next day, the rest


def test_a_step_window_overrides_business_hours(session: Session, config: NurtureConfig) -> None:
    from zoneinfo import ZoneInfo

    cadence = Cadences.model_validate(
        {
            "cadences": {
                "c": {
                    "steps": [
                        {
                            "wait": "0 days",
                            "template": "welcome",
                            "window": {"start": "14:00", "end": "15:00", "days": ["wed"]},
                        }
                    ]
                }
            }
        }
    ).cadences["c"]
    cfg = with_cadences(config, cadences={"c": cadence})
    monday = dt.datetime(2026, 3, 2, 6, tzinfo=dt.UTC)
    person = lead(session, monday - dt.timedelta(days=30), country="DE")
    enrol(session, {person.id: monday}, "c", cadence, cfg.sending, run_id=None)
    send_due_steps(session, cfg, monday + dt.timedelta(hours=12), run_id=None)
    due = session.scalar(select(OutboxEmail.due_at))
    assert due is not None
    local = due.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.date(), local.time()) == (dt.date(2026, 3, 4), dt.time(14))  # Wednesday 14:00


@pytest.mark.parametrize("policy", ["next_step", "latest"])
def test_a_paused_cadence_never_bursts(
    session: Session, config: NurtureConfig, policy: str
) -> None:
    base = config.cadences.cadences["new_lead_nurture"]
    cadence = base.model_copy(update={"catch_up": policy, "exclusive": False})
    cfg = with_cadences(config, cadences={"new_lead_nurture": cadence})
    start = dt.datetime(2026, 3, 2, 6, tzinfo=dt.UTC)
    person = lead(session, start - dt.timedelta(days=30))
    enrol(session, {person.id: start}, "new_lead_nurture", cadence, cfg.sending, run_id=None)
    # Nothing ran for three weeks (the server was down): then the flow runs again, daily.
    resumed = start + dt.timedelta(days=21, hours=20)
    first = send_due_steps(session, cfg, resumed, run_id=None)
    second = send_due_steps(session, cfg, resumed + dt.timedelta(days=1), run_id=None)
    templates = list(session.scalars(select(OutboxEmail.template).order_by(OutboxEmail.id)))
    assert first.queued == 1 and second.queued == 0  # one email, and the next waits its interval
    if policy == "latest":
        assert templates == ["nurture_last_touch"] and first.skipped == 4
    else:
        assert templates == ["welcome"] and first.skipped == 0


def test_an_exclusive_cadence_takes_no_lead_active_in_another(
    session: Session, config: NurtureConfig
) -> None:
    cadences = config.cadences.cadences
    assert cadences["new_lead_nurture"].exclusive and cadences["not_now_nurture"].exclusive
    person = lead(session, FRIDAY - dt.timedelta(days=30))
    enrol(session, {person.id: FRIDAY}, "not_now_nurture", cadences["not_now_nurture"], config.sending,
          run_id=None, exclusive_with=config.cadences.exclusive_except("not_now_nurture"))  # fmt: skip
    taken = enrol(session, {person.id: FRIDAY}, "new_lead_nurture", cadences["new_lead_nurture"],
                  config.sending, run_id=None, exclusive_with=config.cadences.exclusive_except("new_lead_nurture"))  # fmt: skip
    assert taken == []
    assert [e.cadence for e in session.scalars(select(CadenceEnrolment))] == ["not_now_nurture"]


def test_a_reply_mid_cadence_a_bounce_and_a_late_joiner(
    session: Session, config: NurtureConfig
) -> None:
    from tasks.store.models import Activity, ActivityKind, Delivery, EnrolmentStatus

    cadence = config.cadences.cadences["new_lead_nurture"]
    start = dt.datetime(2026, 3, 2, 6, tzinfo=dt.UTC)
    replier, bouncer, steady = (lead(session, start - dt.timedelta(days=30)) for _ in range(3))
    enrol(session, {p.id: start for p in (replier, bouncer, steady)}, "new_lead_nurture", cadence,
          config.sending, run_id=None)  # fmt: skip
    day = start + dt.timedelta(hours=20)
    send_due_steps(session, config, day, run_id=None)
    session.add(
        Activity(
            lead_id=replier.id, kind=ActivityKind.REPLY, occurred_at=day + dt.timedelta(days=1)
        )
    )
    first_to_bouncer = session.scalar(select(OutboxEmail).where(OutboxEmail.lead_id == bouncer.id))
    assert first_to_bouncer is not None
    first_to_bouncer.delivery = Delivery.BOUNCED
    late = lead(session, start - dt.timedelta(days=30))
    for n in range(1, 40):
        if n == 10:  # joins ten days late: starts at step one, no burst of past steps
            enrol(session, {late.id: day}, "new_lead_nurture", cadence, config.sending, run_id=None)
        day += dt.timedelta(days=1)
        send_due_steps(session, config, day, run_id=None)
        send_due_steps(session, config, day, run_id=None)  # a rerun the same day changes nothing
    sent = {p.id: len(session.scalars(select(OutboxEmail.id).where(OutboxEmail.lead_id == p.id)).all())
            for p in (replier, bouncer, steady, late)}  # fmt: skip
    assert sent == {replier.id: 1, bouncer.id: 1, steady.id: 5, late.id: 5}
    ended = {e.lead_id: e.end_reason for e in session.scalars(select(CadenceEnrolment))}
    assert ended[replier.id] == "replied" and ended[bouncer.id] == "bounced"
    assert ended[steady.id] == ended[late.id] == "finished"
    keys = session.scalars(select(OutboxEmail.dedupe_key)).all()
    assert len(keys) == len(set(keys)) == 12
    assert EnrolmentStatus.ACTIVE not in {
        e.status for e in session.scalars(select(CadenceEnrolment))
    }


def test_new_leads_are_enrolled_as_any_lead_is_without_the_checks(
    session: Session, config: NurtureConfig
) -> None:
    """``enrol_new_leads``: the same enrolment as the checked path; enrolling such a lead twice is
    then an error, never a silent second enrolment (the checked path skips it)."""
    name, cadence = next((n, c) for n, c in config.cadences.cadences.items() if c.enrol)
    checked, fresh = (lead(session, FRIDAY - dt.timedelta(days=1)) for _ in range(2))
    enrol(session, {checked.id: FRIDAY}, name, cadence, config.sending, run_id=None)
    assert enrol_new_leads(session, {fresh.id: FRIDAY}, name, cadence, config.sending,
                           run_id=None) == 1  # fmt: skip
    rows = {
        e.lead_id: (e.status, e.next_step, e.next_due_at, e.steps)
        for e in session.scalars(select(CadenceEnrolment))
    }
    assert rows[checked.id] == rows[fresh.id] and len(rows) == 2
    assert enrol(session, {checked.id: FRIDAY}, name, cadence, config.sending, run_id=None) == []
    with pytest.raises(Exception, match=r"uq_|UNIQUE"), session.begin_nested():
        enrol_new_leads(session, {fresh.id: FRIDAY}, name, cadence, config.sending, run_id=None)
