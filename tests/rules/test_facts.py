"""Facts for a span of leads are the facts a whole pass computes for those leads, and only theirs."""

import datetime as dt

from sqlalchemy.orm import Session

from tasks.rules.facts import FactSet
from tasks.spans import LeadSpan
from tasks.store.models import ActivityKind
from tests.builders import activity, days, lead, owner, sent_email

T0 = dt.datetime(2026, 3, 2, 15, tzinfo=dt.UTC)
FACTS = [
    "unanswered_emails",
    "emails_sent",
    "missed_meetings",
    "days_since_last_reply",
    "days_since_last_touch",
    "owner_idle_days",
]


def _facts(session: Session, facts: FactSet) -> dict[int, tuple[object, ...]]:
    rows = session.execute(facts.select_facts(FACTS)).all()
    return {row.id: tuple(row[1:]) for row in rows}


def test_a_span_reads_the_same_facts_for_its_leads_and_no_others(session: Session) -> None:
    rep = owner(session)
    people = [lead(session, T0 - days(30), owner_id=rep.id) for _ in range(5)]
    # Each lead a different history, so a fact read from a neighbour's rows would show.
    for n, person in enumerate(people):
        for i in range(n + 1):
            sent_email(session, person.id, T0 + days(i))
        activity(session, person.id, ActivityKind.MEETING_MISSED, T0 + days(n))
        if n % 2:
            activity(session, person.id, ActivityKind.REPLY, T0 + days(n))
            activity(session, person.id, ActivityKind.MEETING_MISSED, T0 + days(n + 1))
    session.commit()
    as_of = T0 + days(20)
    dialect = session.get_bind().dialect.name

    whole = _facts(session, FactSet(as_of, dialect))
    middle = LeadSpan(people[1].id, people[3].id)
    spanned = _facts(session, FactSet(as_of, dialect, middle))
    open_ended = _facts(session, FactSet(as_of, dialect, LeadSpan(people[3].id)))

    assert len({facts for facts in whole.values()}) == len(people)  # histories tell apart
    assert spanned == {p.id: whole[p.id] for p in people[1:4]}
    assert open_ended == {p.id: whole[p.id] for p in people[3:]}
