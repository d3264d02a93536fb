"""``nurture demo``: a synthetic book of business, imported and run for ~120 simulated days on the
embedded store (SQLite, emails recorded in the outbox, nothing sent), then told as a story.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow
from rich.console import Console

from flows.daily import run_day
from flows.timing import end_of_day
from tasks.demo.generator import generate_book
from tasks.ingest_tasks import import_crm_task, import_leads_task
from tasks.reports.render import render_story
from tasks.stages import current_config, report
from tasks.store.db import get_engine
from tasks.store.schema import upgrade

# A fixed start makes the story the same on every machine and every run.
DEMO_START = dt.date(2026, 3, 2)


@flow(name="demo", log_prints=False)
def demo_flow(workdir: str, leads: int, days: int, seed: int) -> dict[str, Any]:
    book = generate_book(Path(workdir), seed=seed, leads=leads, start=DEMO_START, days=days)
    imported_at = dt.datetime.combine(DEMO_START, dt.time(8), tzinfo=dt.UTC)
    counts: dict[str, Any] = {"truth": book.truth}
    counts["leads"] = import_leads_task([str(p) for p in book.lead_files], imported_at, None, None)
    counts["opportunities"] = import_crm_task(
        "opportunities", [str(book.opportunities)], imported_at
    )
    counts["activities"] = import_crm_task("activities", [str(book.activities)], imported_at)
    last: dict[str, Any] = {}
    for offset in range(days):
        last = run_day(end_of_day(DEMO_START + dt.timedelta(days=offset)))
    counts["last_day"] = {k: v for k, v in last.items() if k != "report"}
    counts["report"] = report(end_of_day(DEMO_START + dt.timedelta(days=days - 1)), None, {})
    return counts


def run_demo(
    *, leads: int, days: int, seed: int, database: str, workdir: Path, console: Console
) -> dict[str, Any]:
    current_config()
    if database.startswith("sqlite:///"):
        path = Path(database.removeprefix("sqlite:///"))
        for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
    os.environ["NURTURE_DATABASE_URL"] = database
    upgrade(get_engine())
    workdir.mkdir(parents=True, exist_ok=True)
    console.print(
        f"[bold]Nurture demo[/]: {leads} people, {days} simulated days from {DEMO_START}, "
        f"store {database}, emails recorded in the outbox (no SendGrid key: nothing is sent)."
    )
    started = time.perf_counter()
    counts = demo_flow(str(workdir), leads, days, seed)
    render_story(counts, console, database=database, seconds=time.perf_counter() - started)
    return counts
