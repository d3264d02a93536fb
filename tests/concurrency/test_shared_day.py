"""Several workers share one day's batches through the store: each batch is done exactly once,
stages keep their order, a failed batch is pending again with nothing of it written, and two
worker processes leave the store as one worker would."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from tasks.batches import WAIT, Claimed, claim_next, plan_day, stage_counts, work_day
from tasks.config.loader import NurtureConfig
from tasks.decisions import NewDecision, record_decisions
from tasks.spans import LeadSpan, within
from tasks.store.models import (
    CadenceEnrolment,
    Decision,
    DecisionAction,
    Lead,
    OutboxEmail,
    StageBatch,
)
from tests.builders import import_book, lead, truncate_store

T0 = dt.datetime(2026, 3, 2, 15, tzinfo=dt.UTC)
START = dt.date(2026, 3, 2)


def _tag_each_lead(stage: str, fail_on: int | None = None) -> Any:
    """A per-lead stage that records one decision per lead of its span (and fails on a lead)."""

    def work(
        session: Session,
        config: NurtureConfig,
        as_of: dt.datetime,
        run_id: int | None,
        span: LeadSpan | None = None,
    ) -> dict[str, Any]:
        ids = session.scalars(select(Lead.id).where(within(span, Lead.id))).all()
        decisions = [
            NewDecision(f"{stage}:{i}", DecisionAction.TAG, rule=stage, lead_id=i) for i in ids
        ]
        record_decisions(session, decisions, run_id=run_id, as_of=as_of)
        session.flush()
        if fail_on in ids:
            raise RuntimeError(f"lead {fail_on} broke the batch")
        return {"leads": len(ids), "by_stage": {stage: len(ids)}}

    return work


def _leads(engine: Engine, n: int) -> list[int]:
    with Session(engine) as s:
        ids = [lead(s, T0 - dt.timedelta(days=1)).id for _ in range(n)]
        s.commit()
    return ids


def _run(engine: Engine) -> int:
    from tasks.runs import start_run
    from tasks.store.models import RunKind

    with Session(engine) as s:
        run_id = start_run(s, RunKind.DAILY, T0).id
        s.commit()
    return run_id


def test_every_lead_is_in_exactly_one_batch_and_counts_add_up(
    engine: Engine, config: NurtureConfig
) -> None:
    ids = _leads(engine, 23)
    run_id = _run(engine)
    with Session(engine) as s:
        assert plan_day(s, run_id, {"tag": True, "whole": False}, batch_leads=5) == 5 + 1
        s.commit()
    late = _leads(engine, 2)  # created after the plan: the last span is open-ended
    stages = {"tag": _tag_each_lead("tag"), "whole": _tag_each_lead("whole")}
    done = work_day(engine, run_id, stages, config, worker="w1")
    assert len(done) == 6
    with Session(engine) as s:
        tagged = Counter(s.scalars(select(Decision.lead_id).where(Decision.rule == "tag")))
        assert tagged == Counter(ids + late)  # each lead once, however the ids were cut
        assert s.scalar(select(func.count()).where(StageBatch.done_at.is_(None))) == 0
        assert set(s.scalars(select(StageBatch.worker))) == {"w1"}
        counts = stage_counts(s, run_id)
    assert counts["tag"] == {"leads": 25, "by_stage": {"tag": 25}}
    assert counts["whole"] == {"leads": 25, "by_stage": {"whole": 25}}
    # Done is done: a second worker finds nothing to do.
    assert work_day(engine, run_id, stages, config) == []


def test_a_failed_batch_writes_nothing_and_is_pending_for_the_next_worker(
    engine: Engine, config: NurtureConfig
) -> None:
    ids = _leads(engine, 10)
    run_id = _run(engine)
    with Session(engine) as s:
        plan_day(s, run_id, {"tag": True}, batch_leads=4)
        s.commit()
    broken = {"tag": _tag_each_lead("tag", fail_on=ids[5])}
    with pytest.raises(RuntimeError, match=f"lead {ids[5]} broke"):
        work_day(engine, run_id, broken, config)
    with Session(engine) as s:
        tagged = set(s.scalars(select(Decision.lead_id)))
        pending = s.execute(
            select(StageBatch.lo, StageBatch.hi).where(StageBatch.done_at.is_(None))
        ).all()
    assert tagged == set(ids[:4])  # the first batch stands; nothing of the failed one
    assert [(lo, hi) for lo, hi in pending] == [(ids[4], ids[7]), (ids[8], None)]
    work_day(engine, run_id, {"tag": _tag_each_lead("tag")}, config)
    with Session(engine) as s:
        assert sorted(s.scalars(select(Decision.lead_id))) == ids


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_claims_skip_locked_batches_and_wait_for_an_earlier_stage(engine: Engine) -> None:
    _leads(engine, 4)
    run_id = _run(engine)
    with Session(engine) as s:
        plan_day(s, run_id, {"first": True, "second": False}, batch_leads=2)
        s.commit()
    factory = sessionmaker(engine)
    with factory() as a, factory() as b, factory() as c:
        claim_a, claim_b = claim_next(a, run_id), claim_next(b, run_id)
        assert isinstance(claim_a, Claimed) and isinstance(claim_b, Claimed)
        assert claim_a.stage == claim_b.stage == "first"
        assert claim_a.id != claim_b.id  # SKIP LOCKED: never the same batch
        # Both "first" batches are taken: "second" must wait for them, not start beside them.
        assert claim_next(c, run_id) == WAIT
        c.rollback()
        a.rollback()  # worker a dies: its batch is free again, and c takes it
        again = claim_next(c, run_id)
        assert isinstance(again, Claimed) and again.id == claim_a.id
        b.rollback()
        c.rollback()


def _share_the_day(url: str, run_id: int, barrier: Any, name: str) -> None:
    import os

    os.environ["NURTURE_DATABASE_URL"] = url
    from tasks.batches import work_day
    from tasks.stages import STAGES, current_config
    from tasks.store.db import make_engine

    config, engine = current_config(), make_engine(url)
    barrier.wait()  # both start together
    work_day(engine, run_id, STAGES, config, worker=name)


def _day(url: str, as_of: dt.datetime, workers: int, batch_leads: int) -> int:
    """One day planned in batches of ``batch_leads``, shared by ``workers`` processes, then sent."""
    from tasks.email.senders import OutboxOnlySender
    from tasks.email.sending import send_due_emails
    from tasks.stages import current_config, plan_run
    from tasks.store.db import make_engine, session_scope

    engine = make_engine(url)
    with session_scope(engine=engine) as session:
        run_id = plan_run(session, as_of, batch_leads=batch_leads)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    processes = [
        context.Process(target=_share_the_day, args=(url, run_id, barrier, f"worker-{n}"))
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=600)
    assert [p.exitcode for p in processes] == [0] * workers
    send_due_emails(engine, OutboxOnlySender(), as_of=as_of, config=current_config())
    engine.dispose()
    return run_id


def _state(engine: Engine) -> dict[str, Any]:
    with Session(engine) as s:
        return {
            "decisions": sorted(s.execute(select(Decision.dedupe_key, Decision.lead_id)).tuples().all()),
            "leads": sorted(s.execute(select(Lead.id, Lead.status, Lead.status_reason, Lead.grade, Lead.score)).tuples().all()),
            "emails": sorted(s.execute(select(OutboxEmail.dedupe_key, OutboxEmail.status)).tuples().all()),
            "enrolments": sorted(s.execute(select(CadenceEnrolment.id, CadenceEnrolment.status)).tuples().all()),
        }  # fmt: skip


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
def test_two_workers_on_small_batches_leave_what_one_whole_pass_leaves(
    engine: Engine, tmp_path: Path
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    days = [dt.datetime.combine(START + dt.timedelta(days=d), dt.time(23), dt.UTC) for d in (0, 13)]

    def book_and_days(workers: int, batch_leads: int) -> tuple[dict[str, Any], list[int]]:
        truncate_store(url)
        import_book(url, tmp_path / f"book{workers}", seed=7, leads=150, start=START, days=14)
        runs = [_day(url, as_of, workers, batch_leads) for as_of in days]
        return _state(engine), runs

    # One batch per stage, as the stages ran before batches: the reference. Then spans of 15
    # leads: a span's work must never touch another span's leads (their rule episodes, say).
    alone, _ = book_and_days(1, batch_leads=10**9)
    shared, runs = book_and_days(2, batch_leads=15)
    assert shared == alone
    assert len(alone["decisions"]) > 100 and alone["emails"]
    with Session(engine) as s:
        batches = s.execute(
            select(StageBatch.worker, func.count(), func.count(StageBatch.done_at))
            .where(StageBatch.run_id.in_(runs))
            .group_by(StageBatch.worker)
        ).all()
    # Every batch done, and both workers did some of them.
    assert {worker for worker, _, _ in batches} == {"worker-0", "worker-1"}
    assert all(n == done for _, n, done in batches)


def test_a_rule_acts_once_per_episode_however_the_leads_are_cut(
    engine: Engine, cfg_dir: Path
) -> None:
    """Each span's worker compares only its own leads with the rule's open episodes: were it to
    close another span's, that span would open them again and the rule would act twice."""
    from tasks.config.loader import load_config
    from tasks.stages import STAGES, plan_run

    # A rule whose condition keeps holding day after day, and whose action leaves the lead in
    # play: it must act once, on the first day, for each lead.
    (cfg_dir / "rules.yaml").write_text(
        "rules:\n  - name: quiet\n    when: unanswered_emails == 0\n    then:\n"
        "      - tag: quiet\n",
        encoding="utf-8",
    )
    config = load_config(cfg_dir)
    _leads(engine, 6)
    for day in (1, 2, 3):
        with Session(engine) as s:
            run_id = plan_run(s, T0 + dt.timedelta(days=day), batch_leads=2)
            s.commit()
        work_day(engine, run_id, STAGES, config)
    with Session(engine) as s:
        tagged = s.scalars(select(Decision.lead_id).where(Decision.rule == "quiet")).all()
    assert len(tagged) == 6 and len(set(tagged)) == 6


def test_a_stage_is_cut_into_at_most_eight_ranges(engine: Engine) -> None:
    from tasks.batches import MAX_RANGES

    ids = _leads(engine, 100)
    run_id = _run(engine)
    with Session(engine) as s:
        plan_day(s, run_id, {"tag": True}, batch_leads=1)
        spans = s.execute(select(StageBatch.lo, StageBatch.hi).order_by(StageBatch.lo)).all()
    assert len(spans) == MAX_RANGES == 8
    assert spans[0] == (ids[0], ids[0] + 12) and spans[-1] == (ids[0] + 91, None)
