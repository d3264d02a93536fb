"""The daily run: rules, dead deals, follow-ups, cadences, sending, report; and backfills."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.runners import task_runner
from flows.timing import days, resolve_as_of
from tasks.batches import BATCH_LEADS, open_day
from tasks.stages import (
    current_config,
    day_counts,
    decisions_and_emails,
    dry_run_all,
    report,
    send_emails,
    start_daily_run,
    work_batches,
)
from tasks.store.db import get_engine, session_scope
from tasks.store.schema import ensure_schema

# Called after each day of a backfill with (days done, days in all, that day's counts): how the
# CLI draws its progress bar. None: nobody is watching.
on_day_done: Callable[[int, int, dict[str, Any]], None] | None = None


def run_day(
    as_of: dt.datetime, send_late: bool = False, workers: int = 1, batch_leads: int = BATCH_LEADS
) -> dict[str, Any]:
    """One day's stages, in order, as tasks of the calling flow run.

    The day is planned as batches in the store; ``workers`` tasks (threads, or Dask workers
    under the Dask task runner) share them, and so may flow runs on other machines that join
    the day (``daily-worker``). Sending and the report follow once every batch is done.
    """
    check_workers(workers)
    run_id = start_daily_run(as_of, batch_leads)
    futures = [work_batches.submit(run_id, index) for index in range(1, workers + 1)]
    for future in futures:
        future.result()  # a worker's failure fails the day; its batch stays pending
    counts: dict[str, Any] = {"as_of": as_of.isoformat(), "run_id": run_id}
    counts.update(day_counts(run_id))
    counts["sending"] = send_emails(as_of, send_late)
    counts["report"] = report(as_of, run_id, {k: v for k, v in counts.items() if k != "report"})
    _publish_decisions(run_id)
    return counts


def check_workers(workers: int) -> None:
    """Several workers need a store with row locks that writers can skip: PostgreSQL."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if workers > 1 and get_engine().dialect.name != "postgresql":
        raise ValueError(
            f"workers={workers} needs the PostgreSQL store: SQLite has a single writer, so "
            "a second worker would only wait (set NURTURE_DATABASE_URL, or use workers=1)"
        )


@flow(
    name="day",
    flow_run_name="day {as_of:%Y-%m-%d}",
    log_prints=False,
    task_runner=task_runner(),
)
def day(as_of: dt.datetime, send_late: bool = False, workers: int = 1) -> dict[str, Any]:
    """One day of a backfill: its own run in the Prefect UI, under the backfill's."""
    return run_day(as_of, send_late, workers)


def _publish_decisions(run_id: int | None) -> None:
    """A table artifact: the run's decisions by action and rule, its emails by status."""
    if run_id is None:
        return
    rows = decisions_and_emails(run_id)
    create_table_artifact(
        key="nurture-daily-decisions",
        table=rows or [{"kind": "none", "name": "", "count": 0}],
        description="What the day's run decided and queued, by rule and status; no personal data",
    )


def _publish(key: str, counts: dict[str, Any]) -> None:
    lines = [f"# Nurture {key}", "", "| stage | counts |", "| --- | --- |"]
    for stage, value in counts.items():
        if stage != "report":
            lines.append(f"| {stage} | `{value}` |")
    create_markdown_artifact(
        key=key, markdown="\n".join(lines), description="Counts, no personal data"
    )


@flow(name="daily", log_prints=False, task_runner=task_runner())
def daily(
    as_of: str | None = None,
    dry_run: bool = False,
    workers: int = 1,
    batch_leads: int = BATCH_LEADS,
) -> dict[str, Any]:
    """Run every daily stage as of ``as_of`` (YYYY-MM-DD or ISO datetime; default now).

    ``workers``: how many workers of this flow run share the day's batches (PostgreSQL only);
    ``batch_leads``: the fewest leads in a batch of the per-lead stages (at most eight a stage).
    """
    moment = resolve_as_of(as_of)
    current_config()  # nothing runs on an invalid config
    ensure_schema()
    check_workers(workers)
    if dry_run:
        return dry_run_all([moment])
    counts = run_day(moment, workers=workers, batch_leads=batch_leads)
    get_run_logger().info(
        "daily as of %s: %s", moment.isoformat(), {k: v for k, v in counts.items() if k != "report"}
    )
    _publish("nurture-daily", counts)
    return counts


@flow(name="backfill", log_prints=False)
def backfill(
    start: str, end: str, dry_run: bool = True, send_late: bool = False, workers: int = 1
) -> list[dict[str, Any]]:
    """The daily run for each day from ``start`` to ``end`` (YYYY-MM-DD), in order.

    Days already run change nothing (every decision, email and follow-up has a unique key).
    A dry run applies every day in one transaction that is rolled back, and reports counts per
    stage and a sample of decisions. Emails whose moment is past sending.yaml's lateness are
    never sent (``skipped_late``) unless ``send_late`` says so.
    """
    span = days(dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    current_config()
    ensure_schema()
    check_workers(workers)
    moments = [resolve_as_of(day) for day in span]
    if dry_run:
        return [dry_run_all(moments)]
    results: list[dict[str, Any]] = []
    for moment in moments:
        results.append(day(moment, send_late, workers))
        if on_day_done is not None:
            on_day_done(len(results), len(moments), results[-1])
    _publish("nurture-backfill", {"days": len(results), "last": results[-1]["as_of"]})
    return results


@flow(name="daily-worker", log_prints=False)
def daily_worker(run_id: int | None = None) -> dict[str, Any]:
    """Join a daily run in progress (default: the latest with batches pending) and share its
    batches until none is left: the way a second machine's Prefect worker helps with one day."""
    ensure_schema()
    if get_engine().dialect.name != "postgresql":
        raise ValueError(
            "daily-worker joins a day on the PostgreSQL store only (SQLite has one writer)"
        )
    with session_scope(dry_run=True) as session:
        joined = run_id if run_id is not None else open_day(session)
    if joined is None:
        get_run_logger().info("no daily run has batches pending: nothing to join")
        return {"run_id": None, "batches": 0}
    return {"run_id": joined, "batches": work_batches(joined)}
