"""The migrations build exactly the schema the models declare, on both stores."""

import datetime as dt

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tasks.store.models import Lead, LeadStatus
from tasks.store.schema import alembic_config, current_revision, head_revision


def test_migrations_match_the_models(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    config = alembic_config(engine)
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.check(config)  # raises if autogenerate would find any difference


def test_timestamps_round_trip_as_aware_utc(session: Session) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    at = dt.datetime(2026, 6, 1, 12, 30, tzinfo=paris)
    session.add(
        Lead(
            email="a@b.example",
            email_key="a@b.example",
            status=LeadStatus.NEW,
            status_changed_at=at,
            created_at=at,
            source="x",
            tags=[],
        )
    )
    session.commit()
    session.expire_all()
    stored = session.query(Lead).one().created_at
    assert stored == at and stored.tzinfo == dt.UTC and stored.hour == 10


def test_naive_datetimes_are_refused(session: Session) -> None:
    session.add(
        Lead(
            email="a@b.example",
            email_key="a@b.example",
            status=LeadStatus.NEW,
            status_changed_at=dt.datetime(2026, 1, 1),
            created_at=dt.datetime(2026, 1, 1),
        )
    )
    with pytest.raises(Exception, match="naive datetime"):
        session.flush()


def test_email_key_is_unique(session: Session) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for _ in range(2):
        session.add(
            Lead(
                email="a@b.example",
                email_key="a@b.example",
                status=LeadStatus.NEW,
                status_changed_at=now,
                created_at=now,
                source="x",
                tags=[],
            )
        )
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()
    assert session.execute(text("select count(*) from leads")).scalar() == 0
