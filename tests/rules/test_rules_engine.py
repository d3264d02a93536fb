"""The shipped rules against a real store (SQLite and PostgreSQL): the seeds' behaviour."""

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.rules.engine import apply_rules
from tasks.store.models import (
    ActivityKind,
    Decision,
    Delivery,
    FollowUp,
    Lead,
    LeadStatus,
    OutboxEmail,
)
from tests.builders import activity, days, lead, owner, sent_email

T0 = dt.datetime(2026, 3, 2, 15, tzinfo=dt.UTC)


def _emails(
    session: Session, lead_id: int, count: int, start: dt.datetime = T0, **kw: object
) -> dt.datetime:
    at = start
    for i in range(count):
        at = start + days(3 * i)
        sent_email(session, lead_id, at, **kw)  # type: ignore[arg-type]
    return at


def test_fifth_unanswered_email_disqualifies_and_fourth_does_not(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    rep = owner(session)
    four = lead(session, T0 - days(1), owner_id=rep.id)
    five = lead(session, T0 - days(1), owner_id=rep.id)
    _emails(session, four.id, 4)
    last = _emails(session, five.id, 5)
    as_of = last + days(1)

    summary = apply_rules(session, config, as_of, run_id=run_id)
    session.commit()
    session.expire_all()

    assert summary.matched["five_unanswered_emails"] == 1
    assert session.get(Lead, five.id).status == LeadStatus.DISQUALIFIED
    assert session.get(Lead, five.id).status_reason == "unresponsive"
    assert session.get(Lead, four.id).status == LeadStatus.NURTURING
    decision = session.scalars(
        select(Decision).where(Decision.lead_id == five.id, Decision.action == "disqualify")
    ).one()
    assert decision.rule == "five_unanswered_emails"
    assert decision.facts == {"unanswered_emails": 5}
    assert decision.run_id == run_id
    breakup = session.scalars(select(OutboxEmail).where(OutboxEmail.template == "breakup")).one()
    assert breakup.lead_id == five.id
    assert "we assume your priorities have changed" in breakup.body_text
    followup = session.scalars(select(FollowUp).where(FollowUp.lead_id == five.id)).one()
    assert followup.due_on >= (as_of + days(60)).date()
    assert followup.due_on.weekday() < 5


def test_a_reply_resets_the_count_an_auto_reply_and_a_bounce_do_not(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    replied = lead(session, T0 - days(1))
    auto = lead(session, T0 - days(1))
    bounced = lead(session, T0 - days(1))
    last = _emails(session, replied.id, 5)
    activity(session, replied.id, ActivityKind.REPLY, T0 + days(7))  # after email 3
    _emails(session, auto.id, 5)
    activity(session, auto.id, ActivityKind.AUTO_REPLY, T0 + days(7))
    _emails(session, bounced.id, 4)
    sent_email(session, bounced.id, T0 + days(13), delivery=Delivery.BOUNCED)

    apply_rules(session, config, last + days(1), run_id=run_id)
    session.commit()
    session.expire_all()

    status = dict(session.execute(select(Lead.id, Lead.status)).all())
    assert status[replied.id] != LeadStatus.DISQUALIFIED  # only 2 emails since the reply
    assert status[auto.id] == LeadStatus.DISQUALIFIED  # an out-of-office is not an answer
    assert status[bounced.id] != LeadStatus.DISQUALIFIED  # 4 delivered + 1 bounced


def test_rerunning_the_same_as_of_changes_nothing(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    person = lead(session, T0 - days(1))
    as_of = _emails(session, person.id, 5) + days(1)
    apply_rules(session, config, as_of, run_id=run_id)
    session.commit()
    counts = [
        session.scalar(select(func.count()).select_from(t))
        for t in (Decision, OutboxEmail, FollowUp)
    ]

    second = apply_rules(session, config, as_of, run_id=run_id)
    session.commit()

    assert [
        session.scalar(select(func.count()).select_from(t))
        for t in (Decision, OutboxEmail, FollowUp)
    ] == counts
    assert second.actions == {}


def test_owner_idle_for_100_days_releases_the_lead_to_another_owner(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    from tasks.owners import sync_owners

    sync_owners(session, config.owners)
    from tasks.store.models import Owner

    reps = session.scalars(select(Owner).order_by(Owner.id)).all()
    idle = lead(session, T0, owner_id=reps[0].id, status=LeadStatus.WORKING)
    busy = lead(session, T0, owner_id=reps[0].id, status=LeadStatus.WORKING)
    activity(session, busy.id, ActivityKind.MEETING_HELD, T0 + days(50))

    apply_rules(session, config, T0 + days(99), run_id=run_id)
    assert session.get(Lead, idle.id).owner_id == reps[0].id  # day 99: not yet

    apply_rules(session, config, T0 + days(100), run_id=run_id)
    session.commit()
    session.expire_all()
    assert session.get(Lead, idle.id).owner_id not in (None, reps[0].id)
    assert session.get(Lead, busy.id).owner_id == reps[0].id
    release = session.scalars(select(Decision).where(Decision.action == "release_owner")).one()
    assert release.lead_id == idle.id
    assert release.facts == {"owner_idle_days": 100, "status": "working"}
