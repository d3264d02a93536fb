"""The daily run's stages and its Prefect tasks.

Each stage is a plain function over a set of leads, set-based; the per-lead stages take a span of
lead ids so that workers can share them (``tasks.batches``). A day is one ``plan-day`` task, then
``workers`` ``work-batches`` tasks that claim the day's batches from the store, then sending and
the report: a handful of task runs per day, however many leads. Tasks open their own session (never passed one), run a plain function and commit; they carry
ids and counts only, never personal data, and persist no results.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tasks.batches import BATCH_LEADS, StageWork, plan_day, stage_counts, work_day
from tasks.cadences.audience import enrol_audiences
from tasks.cadences.steps import send_due_steps
from tasks.config.loader import NurtureConfig, config_dir, load_config
from tasks.deals.close import close_dead_deals
from tasks.deals.followups import schedule_for_lost_deals
from tasks.deals.reopen import reopen_due_followups
from tasks.email.senders import sender_from_env
from tasks.email.sending import send_due_emails
from tasks.engagement import mark_engaged
from tasks.grading import grade_and_score
from tasks.reports.summary import pipeline_summary
from tasks.rules.engine import apply_rules
from tasks.runs import finish_run, start_run
from tasks.spans import LeadSpan
from tasks.store.db import get_engine, session_scope
from tasks.store.models import Decision, EmailStatus, OutboxEmail, Run, RunKind
from tasks.store.upsert import rowcount


@cache
def _config(directory: str, stamp: tuple[float, ...]) -> NurtureConfig:
    return load_config(Path(directory))


def current_config() -> NurtureConfig:
    """The validated config: an invalid config raises before any stage runs.

    Loaded once per process and state of the files: a long-lived worker picks up edits.
    """
    directory = config_dir().resolve()
    files = sorted(p for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else []
    return _config(str(directory), tuple(p.stat().st_mtime for p in files))


def stage_grading(
    session: Session,
    config: NurtureConfig,
    as_of: dt.datetime,
    run_id: int | None,
    span: LeadSpan | None = None,
) -> dict[str, Any]:
    # Before the rules, so a rule tests today's grade and score.
    return grade_and_score(session, config, as_of, run_id=run_id, span=span)


def stage_rules(
    session: Session,
    config: NurtureConfig,
    as_of: dt.datetime,
    run_id: int | None,
    span: LeadSpan | None = None,
) -> dict[str, Any]:
    engaged = mark_engaged(session, as_of, span)
    summary = apply_rules(session, config, as_of, run_id=run_id, span=span)
    return {"engaged": engaged, **asdict(summary)}


# The stages below act across leads (a deal and its follow-ups; cadence caps per recipient
# domain and per owner per day): each is one batch, never cut into lead ranges.


def stage_close(
    session: Session,
    config: NurtureConfig,
    as_of: dt.datetime,
    run_id: int | None,
    span: LeadSpan | None = None,
) -> dict[str, Any]:
    summary = asdict(close_dead_deals(session, config, as_of, run_id=run_id))
    summary["followups_scheduled"] = schedule_for_lost_deals(
        session, config.followups, as_of, run_id=run_id
    )
    return summary


def stage_reopen(
    session: Session,
    config: NurtureConfig,
    as_of: dt.datetime,
    run_id: int | None,
    span: LeadSpan | None = None,
) -> dict[str, Any]:
    return asdict(reopen_due_followups(session, config, as_of, run_id=run_id))


def stage_cadences(
    session: Session,
    config: NurtureConfig,
    as_of: dt.datetime,
    run_id: int | None,
    span: LeadSpan | None = None,
) -> dict[str, Any]:
    enrolled = enrol_audiences(session, config, as_of, run_id=run_id)
    summary = send_due_steps(session, config, as_of, run_id=run_id)
    summary.enrolled = enrolled
    return asdict(summary)


STAGES: dict[str, StageWork] = {
    "grade_and_score": stage_grading,
    "disqualification_rules": stage_rules,
    "close_dead_deals": stage_close,
    "reopen_due_followups": stage_reopen,
    "cadence_steps": stage_cadences,
}
# Stages whose work is confined to each lead: cut into lead-id ranges that workers share.
PER_LEAD = frozenset({"grade_and_score", "disqualification_rules"})


def plan_run(session: Session, as_of: dt.datetime, batch_leads: int = BATCH_LEADS) -> int:
    """A new daily run and its batches; returns the run's id."""
    run_id = start_run(session, RunKind.DAILY, as_of).id
    plan_day(session, run_id, {name: name in PER_LEAD for name in STAGES}, batch_leads=batch_leads)
    return run_id


@task(name="plan-day", cache_policy=NONE, persist_result=False)
def start_daily_run(as_of: dt.datetime, batch_leads: int = BATCH_LEADS) -> int:
    with session_scope() as session:
        return plan_run(session, as_of, batch_leads)


@task(name="work-batches", task_run_name="worker {index}", cache_policy=NONE, persist_result=False)
def work_batches(run_id: int, index: int = 1) -> int:
    """Claim and do the run's batches until none is left (see ``tasks.batches``)."""
    logger = get_run_logger()
    done = work_day(
        get_engine(),
        run_id,
        STAGES,
        current_config(),
        on_batch=lambda stage: logger.info("run %s: a %s batch done", run_id, stage),
    )
    return len(done)


def day_counts(run_id: int) -> dict[str, dict[str, Any]]:
    """The run's counts per stage, from its batches, in stage order."""
    with session_scope(dry_run=True) as session:
        return stage_counts(session, run_id)


@task(name="send-due-emails", cache_policy=NONE, persist_result=False)
def send_emails(as_of: dt.datetime, send_late: bool = False) -> dict[str, Any]:
    """``send_late``: a backfill told to send even what is past its lateness (see sending.yaml);
    otherwise such emails become ``skipped_late``."""
    lateness = dt.timedelta(days=36_500) if send_late else None
    return asdict(
        send_due_emails(
            get_engine(), sender_from_env(), as_of=as_of, config=current_config(), lateness=lateness
        )
    )


@task(name="report", cache_policy=NONE, persist_result=False)
def report(as_of: dt.datetime, run_id: int | None, counts: dict[str, Any]) -> dict[str, Any]:
    with session_scope() as session:
        summary = pipeline_summary(session)
        if run_id is not None:
            run = session.get(Run, run_id)
            assert run is not None
            finish_run(session, run, counts)
    return summary


def decisions_and_emails(run_id: int) -> list[dict[str, Any]]:
    """A run's decisions by action and rule, and its emails by status: rows for an artifact."""
    with session_scope(dry_run=True) as session:
        decided = session.execute(
            select(Decision.action, Decision.rule, func.count())
            .where(Decision.run_id == run_id)
            .group_by(Decision.action, Decision.rule)
            .order_by(Decision.action, Decision.rule)
        ).tuples()
        rows = [
            {"kind": f"decision: {action}", "name": rule or "", "count": int(n)}
            for action, rule, n in decided
        ]
        emails = session.execute(
            select(OutboxEmail.status, func.count())
            .where(OutboxEmail.run_id == run_id)
            .group_by(OutboxEmail.status)
            .order_by(OutboxEmail.status)
        ).tuples()
        rows += [{"kind": "email", "name": str(status), "count": int(n)} for status, n in emails]
    return rows


def simulate_sending(session: Session, as_of: dt.datetime) -> int:
    """Inside a dry run only: treat due emails as handed over, so later days see them."""
    result = session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.status == EmailStatus.QUEUED, OutboxEmail.due_at <= as_of)
        .values(status=EmailStatus.RECORDED, sent_at=as_of)
        .execution_options(synchronize_session="fetch")
    )
    return rowcount(result)


DRY_RUN_SAMPLE = 10


@task(name="dry-run", cache_policy=NONE, persist_result=False)
def dry_run_all(moments: list[dt.datetime]) -> dict[str, Any]:
    """Every stage of every day in one transaction that is rolled back: nothing is written.

    Emails queued in the dry run are counted as queued; nothing is handed to a sender.
    """
    config = current_config()
    counts: dict[str, Any] = {"dry_run": True, "days": []}
    with session_scope(dry_run=True) as session:
        for as_of in moments:
            run = start_run(session, RunKind.DAILY, as_of)
            day: dict[str, Any] = {"as_of": as_of.isoformat()}
            for name, stage in STAGES.items():
                day[name] = stage(session, config, as_of, run.id)
                # Stages update in bulk; what the next stage loads must come from the database.
                session.flush()
                session.expire_all()
            day["would_send"] = simulate_sending(session, as_of)
            # A few of the decisions the day would make, as a sample to read (no personal data).
            day["sample"] = [
                {"action": str(action), "rule": rule, "lead_id": lead_id, "reason": reason}
                for action, rule, lead_id, reason in session.execute(
                    select(Decision.action, Decision.rule, Decision.lead_id, Decision.reason)
                    .where(Decision.run_id == run.id)
                    .order_by(Decision.id)
                    .limit(DRY_RUN_SAMPLE)
                ).tuples()
            ]
            counts["days"].append(day)
        counts["report"] = pipeline_summary(session)
    return counts
