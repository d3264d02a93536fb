"""The daily flow with several workers: threads of one flow run, a Dask cluster, a second flow
run joining the day; SQLite refuses more than one."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from flows.daily import daily, daily_worker
from flows.runners import dask_runner, task_runner
from tasks.store.models import Decision, Lead, LeadStatus, StageBatch
from tests.builders import days, lead, owner, sent_email

T0 = dt.datetime(2026, 3, 2, 15, tzinfo=dt.UTC)


def _quiet_leads(engine: Engine, n: int) -> None:
    """``n`` leads, each with five unanswered emails: the rules disqualify every one."""
    with Session(engine) as s:
        rep = owner(s)
        for _ in range(n):
            quiet = lead(s, T0 - days(1), owner_id=rep.id)
            for i in range(5):
                sent_email(s, quiet.id, T0 + days(3 * i))
        s.commit()


def _disqualified(engine: Engine) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).where(Lead.status == LeadStatus.DISQUALIFIED)) or 0


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_two_workers_share_the_day_and_each_batch_is_done_once(engine: Engine) -> None:
    _quiet_leads(engine, 12)
    counts = daily(as_of="2026-03-20", workers=2, batch_leads=3)
    assert counts["disqualification_rules"]["actions"]["disqualify"] == 12
    assert _disqualified(engine) == 12
    with Session(engine) as s:
        run_id = counts["run_id"]
        batches = s.execute(
            select(StageBatch.stage, StageBatch.worker).where(StageBatch.run_id == run_id)
        ).all()
        decided = s.scalars(select(Decision.lead_id).where(Decision.action == "disqualify")).all()
    assert len(decided) == len(set(decided)) == 12
    assert len([b for b in batches if b.stage == "disqualification_rules"]) == 4
    assert all(worker for _, worker in batches)


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_the_daily_flow_on_a_dask_cluster(engine: Engine) -> None:
    _quiet_leads(engine, 6)
    on_dask = daily.with_options(task_runner=dask_runner(workers=2, processes=False))
    counts = on_dask(as_of="2026-03-20", workers=2, batch_leads=2)
    assert counts["disqualification_rules"]["actions"]["disqualify"] == 6
    assert _disqualified(engine) == 6


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_the_daily_flow_on_a_process_pool(engine: Engine) -> None:
    from prefect.task_runners import ProcessPoolTaskRunner

    _quiet_leads(engine, 6)
    in_processes = daily.with_options(task_runner=ProcessPoolTaskRunner(max_workers=2))
    counts = in_processes(as_of="2026-03-20", workers=2, batch_leads=2)
    assert counts["disqualification_rules"]["actions"]["disqualify"] == 6
    assert _disqualified(engine) == 6
    with Session(engine) as s:
        workers = set(
            s.scalars(select(StageBatch.worker).where(StageBatch.run_id == counts["run_id"]))
        )
    # Done in the pool's processes (worker names are host:pid:thread), none in this one.
    assert workers and all(w.split(":")[1] != str(os.getpid()) for w in workers)


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_worker_joining_finds_nothing_once_the_day_is_done(engine: Engine) -> None:
    _quiet_leads(engine, 3)
    counts = daily(as_of="2026-03-20")
    assert daily_worker() == {"run_id": None, "batches": 0}
    assert daily_worker(run_id=counts["run_id"]) == {"run_id": counts["run_id"], "batches": 0}


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_a_joining_worker_helps_the_latest_day_only(engine: Engine) -> None:
    from tasks.stages import plan_run
    from tasks.store.db import session_scope

    _quiet_leads(engine, 4)
    with session_scope() as session:
        stale = plan_run(session, T0 - days(1), batch_leads=2)  # its flow run crashed
        today = plan_run(session, T0 + days(18), batch_leads=2)
    assert daily_worker() == {"run_id": today, "batches": 7}  # 2 + 2 lead ranges, 3 whole stages
    assert _disqualified(engine) == 4
    assert daily_worker() == {"run_id": None, "batches": 0}  # never the stale day
    with Session(engine) as s:
        left = s.scalar(
            select(func.count()).where(StageBatch.run_id == stale, StageBatch.done_at.is_(None))
        )
    assert left == 7


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_sqlite_refuses_a_second_worker_before_anything_runs(engine: Engine) -> None:
    _quiet_leads(engine, 2)
    with pytest.raises(ValueError, match="workers=2 needs the PostgreSQL store"):
        daily(as_of="2026-03-20", workers=2)
    assert _disqualified(engine) == 0


def test_the_task_runner_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NURTURE_TASK_RUNNER", "dask")
    monkeypatch.setenv("NURTURE_DASK_WORKERS", "3")
    assert type(task_runner()).__name__ == "DaskTaskRunner"
    monkeypatch.setenv("NURTURE_DASK_WORKERS", "none")
    with pytest.raises(ValueError, match="NURTURE_DASK_WORKERS='none'"):
        task_runner()
    monkeypatch.setenv("NURTURE_TASK_RUNNER", "processes")
    monkeypatch.setenv("NURTURE_PROCESSES", "2")
    assert type(task_runner()).__name__ == "ProcessPoolTaskRunner"
    monkeypatch.setenv("NURTURE_TASK_RUNNER", "celery")
    with pytest.raises(ValueError, match="expected one of threads, processes, dask"):
        task_runner()
    monkeypatch.delenv("NURTURE_TASK_RUNNER")
    assert type(task_runner()).__name__ == "ThreadPoolTaskRunner"
