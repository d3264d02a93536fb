"""A backfill over a range decides exactly what running each day in turn decides."""

import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from flows.daily import backfill, daily
from tasks.store.db import make_engine
from tasks.store.models import Decision, FollowUp, Opportunity, OutboxEmail
from tasks.store.schema import upgrade
from tests.builders import import_book
from tests.conftest import PG_ADMIN_URL

START = dt.date(2026, 3, 2)
DAYS = 24


@pytest.fixture(params=["sqlite", "postgresql"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Make empty stores of one kind: SQLite files, or fresh PostgreSQL databases."""
    made: list[str] = []

    def make(name: str) -> str:
        if request.param == "sqlite":
            return f"sqlite:///{tmp_path / name}"
        if os.environ.get("NURTURE_TEST_SKIP_PG"):
            pytest.skip("NURTURE_TEST_SKIP_PG is set")
        database = f"nurture_test_{uuid.uuid4().hex[:10]}"
        with create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        made.append(database)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"

    yield make
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for database in made:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    admin.dispose()


def _store(url: str, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("NURTURE_DATABASE_URL", url)
    upgrade(make_engine(url))
    import_book(url, tmp_path / f"{name}-in", seed=3, leads=80, start=START, days=DAYS)
    return url


def _outcome(url: str) -> dict[str, list[tuple[object, ...]]]:
    with Session(make_engine(url)) as s:
        return {
            "decisions": s.execute(
                select(Decision.dedupe_key, Decision.action, Decision.rule, Decision.lead_id,
                       Decision.opportunity_id, Decision.reason, Decision.as_of)
                .order_by(Decision.dedupe_key)
            ).all(),
            "opportunities": s.execute(
                select(Opportunity.id, Opportunity.status, Opportunity.lost_reason,
                       Opportunity.closed_at, Opportunity.reopened_from_id).order_by(Opportunity.id)
            ).all(),
            "followups": s.execute(
                select(FollowUp.dedupe_key, FollowUp.due_on, FollowUp.status).order_by(FollowUp.dedupe_key)
            ).all(),
            "emails": s.execute(
                select(OutboxEmail.dedupe_key, OutboxEmail.template, OutboxEmail.status,
                       OutboxEmail.sent_at).order_by(OutboxEmail.dedupe_key)
            ).all(),
        }  # fmt: skip


def test_backfill_equals_day_by_day(
    new_store: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    end = START + dt.timedelta(days=DAYS - 1)
    day_by_day = _store(new_store("daily.db"), tmp_path, "daily.db", monkeypatch)
    for offset in range(DAYS):
        daily(as_of=(START + dt.timedelta(days=offset)).isoformat())
    expected = _outcome(day_by_day)

    backfilled = _store(new_store("backfill.db"), tmp_path, "backfill.db", monkeypatch)
    backfill(start=START.isoformat(), end=end.isoformat(), dry_run=False)
    got = _outcome(backfilled)

    assert len(expected["decisions"]) > 50 and expected["emails"]  # the range really did work
    for key in expected:
        missing = set(expected[key]) - set(got[key])
        extra = set(got[key]) - set(expected[key])
        assert not missing and not extra, (key, sorted(missing)[:5], sorted(extra)[:5])
    assert got == expected
