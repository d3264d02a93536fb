"""The daily run at scale, and what Prefect's orchestration costs on top of the work itself.

    python benchmarks/daily.py --leads 100000 --database postgresql+psycopg://postgres@127.0.0.1/nurture_bench

The store (wiped first: use a scratch database) gets N leads with 200 days of history (the rules
benchmark's builder: emails, replies, meetings, owners, enrolments). Then, on the same data
rebuilt in between, two runs of the same day:

* ``flow``: the ``daily`` Prefect flow (one task per stage, the send task and the report), with
  a temporary Prefect server already started and warmed up (its 10-20 s start is not counted);
* ``plain``: the very same stage functions called directly, no Prefect at all: the lower bound.

Prints both times and the share of the flow's time spent in orchestration ((flow - plain) /
flow; the goal at 100k leads is <= 5%). One worker: running the stages on several workers is
not built yet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rules import build

from tasks.config.loader import load_config
from tasks.store.db import make_engine
from tasks.store.schema import upgrade

AS_OF = dt.datetime(2026, 7, 20, 23, 0, tzinfo=dt.UTC)


def fresh(url: str, leads: int) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade(engine)
    build(engine, leads, load_config())
    engine.dispose()


def plain(url: str) -> float:
    """Every stage of the day as plain function calls, each in its own transaction."""
    from tasks.email.senders import OutboxOnlySender
    from tasks.email.sending import send_due_emails
    from tasks.reports.summary import pipeline_summary
    from tasks.runs import finish_run, start_run
    from tasks.stages import STAGES, current_config
    from tasks.store.db import session_scope
    from tasks.store.models import Run, RunKind

    engine = make_engine(url)
    config = current_config()
    started = time.perf_counter()
    with session_scope(engine=engine) as session:
        run_id = start_run(session, RunKind.DAILY, AS_OF).id
    counts: dict[str, object] = {}
    for name, stage in STAGES.items():
        with session_scope(engine=engine) as session:
            counts[name] = stage(session, config, AS_OF, run_id)
    counts["sending"] = asdict(
        send_due_emails(engine, OutboxOnlySender(), as_of=AS_OF, config=config)
    )
    with session_scope(engine=engine) as session:
        pipeline_summary(session)
        run = session.get(Run, run_id)
        assert run is not None
        finish_run(session, run, counts)
    return time.perf_counter() - started


def flow(url: str) -> float:
    from prefect import flow as prefect_flow

    from flows.daily import daily

    @prefect_flow
    def warm_up() -> None:
        pass

    warm_up()  # the temporary server starts here, outside the timing
    started = time.perf_counter()
    daily(as_of=AS_OF.isoformat())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--database", required=True, help="a scratch PostgreSQL database URL")
    args = parser.parse_args()
    os.environ["NURTURE_DATABASE_URL"] = args.database
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.pop("SENDGRID_API_KEY", None)  # the outbox only: nothing leaves this machine
    fresh(args.database, args.leads)
    base = plain(args.database)
    fresh(args.database, args.leads)
    orchestrated = flow(args.database)
    share = (orchestrated - base) / orchestrated
    print(f"daily run, {args.leads:,} leads on PostgreSQL, 1 worker: flow {orchestrated:.1f} s, "
          f"plain {base:.1f} s, orchestration {100 * share:.1f}% of the flow's time")  # fmt: skip


if __name__ == "__main__":
    main()
