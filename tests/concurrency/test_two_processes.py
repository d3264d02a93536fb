"""Two processes running the same days at once (a backfill beside a scheduled run, two workers)
leave the store exactly as one process would: the unique keys and locks are the guarantee."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from tasks.store.models import CadenceEnrolment, Decision, FollowUp, Opportunity, OutboxEmail
from tests.builders import import_book

START = dt.date(2026, 3, 2)


def _run_days(url: str, days: list[str], barrier: Any) -> None:
    import os

    os.environ["NURTURE_DATABASE_URL"] = url
    from tasks.email.senders import OutboxOnlySender
    from tasks.email.sending import send_due_emails
    from tasks.runs import start_run
    from tasks.stages import STAGES, current_config, send_emails  # noqa: F401
    from tasks.store.db import make_engine, session_scope
    from tasks.store.models import RunKind

    config = current_config()
    engine = make_engine(url)
    barrier.wait()  # both start together
    for day in days:
        as_of = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
        with session_scope(engine=engine) as session:
            run_id = start_run(session, RunKind.DAILY, as_of).id
        for stage in STAGES.values():
            with session_scope(engine=engine) as session:
                stage(session, config, as_of, run_id)
        send_due_emails(engine, OutboxOnlySender(), as_of=as_of, config=config)


def _state(engine: Engine) -> dict[str, Any]:
    with Session(engine) as s:
        return {
            "decisions": sorted(s.scalars(select(Decision.dedupe_key)).all()),
            "emails": sorted(s.execute(select(OutboxEmail.dedupe_key, OutboxEmail.status)).tuples().all()),
            "followups": s.scalar(select(func.count()).select_from(FollowUp)),
            "opportunities": sorted(s.execute(select(Opportunity.id, Opportunity.status, Opportunity.lost_reason)).tuples().all()),
            "active_enrolments": s.scalar(select(func.count()).select_from(CadenceEnrolment).where(CadenceEnrolment.status == "active")),
        }  # fmt: skip


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"], indirect=True)
def test_two_processes_on_the_same_days_leave_what_one_would(
    engine: Engine, tmp_path: Path
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    days = [f"{START + dt.timedelta(days=d)}T23:00:00" for d in range(0, 6)]
    import_book(url, tmp_path / "book", seed=5, leads=60, start=START, days=14)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_run_days, args=(url, days, barrier)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=600)
    assert [w.exitcode for w in workers] == [0, 0]
    together = _state(engine)
    # The same days once more, alone: nothing changes, as for any day already run.
    _run_days(url, days, context.Barrier(1))
    assert _state(engine) == together
    assert together["decisions"] and together["emails"]
    keys = [k for k, _ in together["emails"]]
    assert len(keys) == len(set(keys))
