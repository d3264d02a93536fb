"""Dated scenarios for the deal lifecycle on a real store (SQLite and PostgreSQL)."""

import dataclasses
import datetime as dt
import threading

import pytest
from dateutil.relativedelta import relativedelta
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.deals.calendar import next_business_day
from tasks.deals.close import close_dead_deals
from tasks.deals.followups import plan_followup, schedule_for_lost_deals
from tasks.deals.reopen import reopen_due_followups
from tasks.owners import sync_owners
from tasks.store.models import (
    ActivityKind,
    CadenceEnrolment,
    ClosedBy,
    Decision,
    FollowUp,
    FollowUpStatus,
    LostReason,
    Opportunity,
    OpportunityStatus,
    OutboxEmail,
)
from tests.builders import activity, days, deal, lead, owner

ENTERED = dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC)  # a Monday


def end_of(day: dt.datetime) -> dt.datetime:
    return day.replace(hour=23, minute=59, second=59)


def test_a_deal_rots_on_day_limit_plus_one_and_not_on_day_limit(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    person = lead(session, ENTERED - days(5), owner_id=owner(session).id)
    opp = deal(session, person.id, "discovery", ENTERED)  # rots after 21 days

    on_limit = close_dead_deals(session, config, end_of(ENTERED + days(21)), run_id=run_id)
    assert on_limit.closed == {}
    after = close_dead_deals(session, config, end_of(ENTERED + days(22)), run_id=run_id)
    session.commit()
    session.expire_all()

    assert after.closed == {"unresponsive": 1}
    closed = session.get(Opportunity, opp.id)
    assert closed.status == OpportunityStatus.LOST
    assert closed.closed_by == ClosedBy.ENGINE
    assert closed.lost_reason == LostReason.UNRESPONSIVE
    assert "No progress for 22 days in stage discovery (limit 21 days)" in closed.lost_notes
    exit_email = session.scalars(select(OutboxEmail)).one()
    assert exit_email.template == "exit_courteous"
    assert "Is it not the right time, or not a fit?" in exit_email.body_text


def test_progress_and_a_booked_meeting_keep_a_deal_open(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    person = lead(session, ENTERED - days(5))
    progressing = deal(session, person.id, "discovery", ENTERED)
    activity(
        session,
        person.id,
        ActivityKind.MEETING_HELD,
        ENTERED + days(15),
        opportunity_id=progressing.id,
    )
    other = lead(session, ENTERED - days(5))
    booked = deal(session, other.id, "discovery", ENTERED)
    activity(
        session,
        other.id,
        ActivityKind.MEETING_SCHEDULED,
        ENTERED + days(25),
        opportunity_id=booked.id,
    )

    summary = close_dead_deals(session, config, end_of(ENTERED + days(23)), run_id=run_id)
    assert summary.closed == {}


def test_a_no_and_missed_meetings_close_with_their_reasons(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    said_no = lead(session, ENTERED)
    no_deal = deal(session, said_no.id, "proposal", ENTERED)
    activity(
        session,
        said_no.id,
        ActivityKind.SAID_NO,
        ENTERED + days(3),
        opportunity_id=no_deal.id,
        reason=LostReason.COMPETITOR,
        competitor="HubSpot",
    )
    ghost = lead(session, ENTERED)
    ghost_deal = deal(session, ghost.id, "demo", ENTERED)
    for n in (2, 4):
        activity(
            session,
            ghost.id,
            ActivityKind.MEETING_MISSED,
            ENTERED + days(n),
            opportunity_id=ghost_deal.id,
        )

    summary = close_dead_deals(session, config, end_of(ENTERED + days(5)), run_id=run_id)
    session.commit()
    session.expire_all()

    assert summary.closed == {"competitor": 1, "unresponsive": 1}
    lost = session.get(Opportunity, no_deal.id)
    assert (lost.lost_reason, lost.competitor) == (LostReason.COMPETITOR, "HubSpot")
    rules = set(session.scalars(select(Decision.rule)))
    assert rules == {"dead_deals.said_no", "dead_deals.missed_meetings"}


def test_followup_dates(config: NurtureConfig) -> None:
    policy = config.followups
    closed = dt.date(2026, 3, 2)
    # A named date wins over the 60-day default.
    named = plan_followup(policy, closed, LostReason.BAD_TIMING, dt.date(2026, 3, 17))
    assert named is not None and (named.due_on, named.basis) == (dt.date(2026, 3, 17), "named_date")
    default = plan_followup(policy, closed, LostReason.UNRESPONSIVE, None)
    assert default is not None and default.due_on == dt.date(2026, 5, 1)
    assert plan_followup(policy, closed, LostReason.NO_BUDGET, None).due_on == dt.date(2026, 7, 2)  # type: ignore[union-attr]
    for permanent in (
        LostReason.NO_NEED,
        LostReason.OUT_OF_BUSINESS,
        LostReason.COMPETITOR_IMPLEMENTED,
    ):
        assert plan_followup(policy, closed, permanent, None) is None
    # 2026-03-07 is a Saturday: Monday 9th. 2026-12-25 is a holiday (Friday): Monday 28th.
    assert next_business_day(dt.date(2026, 3, 7)) == dt.date(2026, 3, 9)
    assert next_business_day(dt.date(2026, 12, 25), policy.holidays) == dt.date(2026, 12, 28)


def test_reopen_makes_one_linked_opportunity_with_history_whatever_reruns_do(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    sync_owners(session, config.owners)
    person = lead(session, ENTERED - days(30))
    lost = deal(
        session,
        person.id,
        "proposal",
        ENTERED,
        status=OpportunityStatus.LOST,
        lost_reason=LostReason.BAD_TIMING,
        closed_at=ENTERED + days(1),
    )
    lost.lost_notes = "Budget frees up after Q2"
    activity(
        session,
        person.id,
        ActivityKind.NAMED_FOLLOWUP,
        ENTERED + days(1),
        followup_on=dt.date(2026, 4, 4),
    )
    assert (
        schedule_for_lost_deals(session, config.followups, end_of(ENTERED + days(2)), run_id=run_id)
        == 1
    )
    assert (
        schedule_for_lost_deals(session, config.followups, end_of(ENTERED + days(3)), run_id=run_id)
        == 0
    )
    followup = session.scalars(select(FollowUp)).one()
    assert followup.due_on == dt.date(2026, 4, 6)  # named Saturday 4 April -> Monday

    early = reopen_due_followups(
        session, config, end_of(dt.datetime(2026, 4, 3, tzinfo=dt.UTC)), run_id=run_id
    )
    assert early.reopened == 0
    due = end_of(dt.datetime(2026, 4, 6, tzinfo=dt.UTC))
    first = reopen_due_followups(session, config, due, run_id=run_id)
    again = reopen_due_followups(session, config, due, run_id=run_id)
    session.commit()
    session.expire_all()

    assert (first.reopened, again.reopened) == (1, 0)
    new = session.scalars(select(Opportunity).where(Opportunity.reopened_from_id == lost.id)).one()
    assert new.status == OpportunityStatus.OPEN and new.stage == "discovery"
    assert new.cycle == 1 and new.owner_id is not None
    assert new.history["previous_lost_reason"] == "bad_timing"
    assert new.history["previous_notes"] == "Budget frees up after Q2"
    assert session.get(FollowUp, followup.id).status == FollowUpStatus.REOPENED
    email = session.scalars(select(OutboxEmail).where(OutboxEmail.template == "reengagement")).one()
    assert "Two-way calendar sync" in email.body_text
    assert session.scalar(select(func.count()).select_from(CadenceEnrolment)) == 1


def test_the_owner_is_warned_once_before_a_deal_rots(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    person = lead(session, ENTERED - days(5))
    deal(session, person.id, "discovery", ENTERED)  # rots on day 22; warned from day 19

    warned = [
        close_dead_deals(session, config, end_of(ENTERED + days(d)), run_id=run_id).owners_warned
        for d in (18, 19, 20, 21)
    ]
    session.commit()

    assert warned == [0, 1, 0, 0]
    warning = session.scalars(select(Decision).where(Decision.action == "warn_owner")).one()
    assert warning.facts == {"stage": "discovery", "rots_on": "2026-03-24"}


def test_reopen_is_exactly_once_when_two_runs_race(
    engine: Engine, session: Session, config: NurtureConfig, run_id: int
) -> None:
    sync_owners(session, config.owners)
    person = lead(session, ENTERED - days(30))
    lost = deal(session, person.id, "demo", ENTERED, status=OpportunityStatus.LOST,
                lost_reason=LostReason.UNRESPONSIVE, closed_at=ENTERED)  # fmt: skip
    schedule_for_lost_deals(session, config.followups, end_of(ENTERED), run_id=run_id)
    session.commit()
    due = end_of(ENTERED + days(90))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            with Session(engine, expire_on_commit=False) as own:
                reopen_due_followups(own, config, due, run_id=run_id)
                own.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    session.expire_all()
    reopened = session.scalars(
        select(Opportunity).where(Opportunity.reopened_from_id == lost.id)
    ).all()
    assert len(reopened) == 1
    assert session.scalar(select(func.count()).select_from(OutboxEmail)) == 1
    assert session.scalar(select(func.count()).where(Decision.action == "reopen")) == 1


def test_report_win_back_by_first_lost_reason(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    from tasks.reports.summary import pipeline_summary

    person = lead(session, ENTERED)
    first = deal(session, person.id, "demo", ENTERED, status=OpportunityStatus.LOST,
                 lost_reason=LostReason.NO_BUDGET, closed_at=ENTERED)  # fmt: skip
    for status in (OpportunityStatus.WON, OpportunityStatus.OPEN):
        again = deal(session, person.id, "discovery", ENTERED + days(120), status=status)
        again.reopened_from_id = first.id
    session.commit()
    summary = pipeline_summary(session)
    assert summary["win_back_by_lost_reason"] == {"no_budget": {"reopened": 2, "won": 1}}
    assert summary["win_back_rate"] == 0.5


def test_the_store_refuses_a_second_opportunity_for_one_followup(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    from sqlalchemy.exc import IntegrityError

    person = lead(session, ENTERED)
    lost = deal(session, person.id, "demo", ENTERED, status=OpportunityStatus.LOST,
                lost_reason=LostReason.BAD_TIMING, closed_at=ENTERED)  # fmt: skip
    schedule_for_lost_deals(session, config.followups, end_of(ENTERED), run_id=run_id)
    followup = session.scalars(select(FollowUp)).one()
    assert followup.opportunity_id == lost.id
    first = deal(session, person.id, "discovery", ENTERED + days(61))
    first.followup_id = followup.id
    session.flush()
    duplicate = Opportunity(lead_id=person.id, name="dup", stage="discovery", stage_entered_at=ENTERED,
                            created_at=ENTERED, followup_id=followup.id, history={})  # fmt: skip
    session.add(duplicate)
    with pytest.raises(IntegrityError):
        session.flush()


def test_a_deal_with_no_activity_at_all_closes_before_its_stage_limit(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    dead = config.pipeline.dead_deals.model_copy(
        update={"no_activity_after": relativedelta(days=30)}
    )
    strict = dataclasses.replace(
        config, pipeline=config.pipeline.model_copy(update={"dead_deals": dead})
    )
    person = lead(session, ENTERED - days(5))
    opp = deal(session, person.id, "negotiation", ENTERED)  # the stage allows 45 days
    activity(
        session, person.id, ActivityKind.STAGE_CHANGED, ENTERED + days(10), opportunity_id=opp.id
    )
    activity(session, person.id, ActivityKind.NOTE, ENTERED + days(12), opportunity_id=opp.id)

    assert close_dead_deals(session, strict, end_of(ENTERED + days(42)), run_id=run_id).closed == {}
    summary = close_dead_deals(session, strict, end_of(ENTERED + days(43)), run_id=run_id)
    assert summary.closed == {"unresponsive": 1}
    rule = session.scalars(select(Decision.rule).where(Decision.action == "close_lost")).one()
    assert rule == "dead_deals.no_activity"
