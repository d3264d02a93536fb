"""The daily run: rules, dead deals, follow-ups, cadences, sending, report; and backfills."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.timing import days, resolve_as_of
from tasks.stages import (
    STAGES,
    current_config,
    decisions_and_emails,
    dry_run_all,
    report,
    run_stage,
    send_emails,
    start_daily_run,
)
from tasks.store.schema import ensure_schema

# Called after each day of a backfill with (days done, days in all, that day's counts): how the
# CLI draws its progress bar. None: nobody is watching.
on_day_done: Callable[[int, int, dict[str, Any]], None] | None = None


def run_day(as_of: dt.datetime, send_late: bool = False) -> dict[str, Any]:
    """One day's stages, in order, as tasks of the calling flow run."""
    run_id = start_daily_run(as_of)
    counts: dict[str, Any] = {"as_of": as_of.isoformat(), "run_id": run_id}
    for stage in STAGES:
        counts[stage] = run_stage(stage, as_of, run_id)
    counts["sending"] = send_emails(as_of, send_late)
    counts["report"] = report(as_of, run_id, {k: v for k, v in counts.items() if k != "report"})
    _publish_decisions(run_id)
    return counts


@flow(name="day", flow_run_name="day {as_of:%Y-%m-%d}", log_prints=False)
def day(as_of: dt.datetime, send_late: bool = False) -> dict[str, Any]:
    """One day of a backfill: its own run in the Prefect UI, under the backfill's."""
    return run_day(as_of, send_late)


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


@flow(name="daily", log_prints=False)
def daily(as_of: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Run every daily stage as of ``as_of`` (YYYY-MM-DD or ISO datetime; default now)."""
    moment = resolve_as_of(as_of)
    current_config()  # nothing runs on an invalid config
    ensure_schema()
    if dry_run:
        return dry_run_all([moment])
    counts = run_day(moment)
    get_run_logger().info(
        "daily as of %s: %s", moment.isoformat(), {k: v for k, v in counts.items() if k != "report"}
    )
    _publish("nurture-daily", counts)
    return counts


@flow(name="backfill", log_prints=False)
def backfill(
    start: str, end: str, dry_run: bool = True, send_late: bool = False
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
    moments = [resolve_as_of(day) for day in span]
    if dry_run:
        return [dry_run_all(moments)]
    results: list[dict[str, Any]] = []
    for moment in moments:
        results.append(day(moment, send_late))
        if on_day_done is not None:
            on_day_done(len(results), len(moments), results[-1])
    _publish("nurture-backfill", {"days": len(results), "last": results[-1]["as_of"]})
    return results
