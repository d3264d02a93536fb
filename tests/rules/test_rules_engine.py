"""The shipped rules against a real store (SQLite and PostgreSQL): the seeds' behaviour."""

import dataclasses
import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.config.models import Rules
from tasks.rules.engine import apply_rules
from tasks.store.models import (
    ActivityKind,
    Decision,
    Delivery,
    FollowUp,
    Lead,
    LeadStatus,
    OutboxEmail,
    Owner,
    RuleEpisode,
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


def _with_rules(config: NurtureConfig, *rules: dict[str, object]) -> NurtureConfig:
    return dataclasses.replace(config, rules=Rules.model_validate({"rules": list(rules)}))


def test_a_rule_acts_once_per_condition_episode_and_again_when_the_condition_returns(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    quiet = _with_rules(
        config,
        {"name": "quiet", "when": "unanswered_emails >= 2", "then": [{"tag": "quiet"}]},
    )
    person = lead(session, T0 - days(1))
    _emails(session, person.id, 2)  # day 0 and day 3

    def tag_decisions(as_of: dt.datetime) -> int:
        apply_rules(session, quiet, as_of, run_id=run_id)
        session.flush()
        return session.scalar(
            select(func.count()).select_from(Decision).where(Decision.rule == "quiet")
        )

    assert tag_decisions(T0 + days(4)) == 1  # the episode begins: the rule acts
    sent_email(session, person.id, T0 + days(5))
    assert tag_decisions(T0 + days(6)) == 1  # still holding (3 unanswered): same episode
    activity(session, person.id, ActivityKind.REPLY, T0 + days(7))
    assert tag_decisions(T0 + days(8)) == 1  # a reply ends the episode
    episode = session.scalars(select(RuleEpisode)).one()
    assert (episode.started_at, episode.ended_at) == (T0 + days(4), T0 + days(8))
    _emails(session, person.id, 2, start=T0 + days(9))
    assert tag_decisions(T0 + days(13)) == 2  # the condition returns: a new episode acts again
    assert tag_decisions(T0 + days(13)) == 2  # and a rerun of that day does nothing new


def test_follow_up_on_the_date_the_prospect_named_else_after_the_delay(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    as_of = T0 + days(10)
    named = lead(session, T0, budget="no")
    activity(
        session, named.id, ActivityKind.NAMED_FOLLOWUP, T0 + days(2),
        followup_on=dt.date(2026, 9, 5),  # a Saturday; Monday 7 is Labor Day (configured)
    )  # fmt: skip
    stale = lead(session, T0, budget="no")
    activity(
        session, stale.id, ActivityKind.NAMED_FOLLOWUP, T0, followup_on=dt.date(2026, 3, 5)
    )  # a date already passed is no date
    silent = lead(session, T0, budget="no")

    apply_rules(session, config, as_of, run_id=run_id)
    session.flush()

    due = {
        f.lead_id: (f.due_on, f.basis)
        for f in session.scalars(select(FollowUp).where(FollowUp.opportunity_id.is_(None)))
    }
    four_months = dt.date(2026, 7, 13)  # 2026-03-12 + 4 months, a Sunday -> Monday
    assert due == {
        named.id: (dt.date(2026, 9, 8), "named_followup_date"),
        stale.id: (four_months, "rule_delay"),
        silent.id: (four_months, "rule_delay"),
    }
    assert {
        d.lead_id for d in session.scalars(select(Decision).where(Decision.rule == "no_budget"))
    } == {named.id, stale.id, silent.id}


def test_a_disabled_rule_does_nothing(session: Session, config: NurtureConfig, run_id: int) -> None:
    off = _with_rules(
        config,
        {"name": "quiet", "when": "emails_sent >= 1", "then": ["exit_cadences"], "enabled": False},
    )
    person = lead(session, T0 - days(1))
    _emails(session, person.id, 1)
    summary = apply_rules(session, off, T0 + days(1), run_id=run_id)
    assert summary.matched == {}
    assert session.scalar(select(func.count()).select_from(Decision)) == 0


def test_a_reassigned_lead_idle_again_for_100_days_is_released_again(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    from tasks.owners import sync_owners

    sync_owners(session, config.owners)
    first = session.scalars(select(Owner.id).order_by(Owner.id)).first()
    idle = lead(session, T0, owner_id=first, status=LeadStatus.WORKING)

    for day in (100, 150, 199, 200, 201):
        apply_rules(session, config, T0 + days(day), run_id=run_id)
    session.flush()

    releases = session.scalars(
        select(Decision.as_of).where(Decision.action == "release_owner").order_by(Decision.as_of)
    ).all()
    assert releases == [T0 + days(100), T0 + days(200)]  # each new owner gets 100 days
    assert session.get(Lead, idle.id).owner_assigned_at == T0 + days(200)
