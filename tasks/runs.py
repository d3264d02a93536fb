"""The run ledger: each flow execution gets a row that its decisions and emails point back at."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from tasks.store.models import Run, RunKind


def current_prefect_flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        run_id = flow_run.id
    except Exception:  # outside a flow run (plain-function tests, CLI helpers)
        return None
    return str(run_id) if run_id else None


def start_run(session: Session, kind: RunKind, as_of: dt.datetime) -> Run:
    run = Run(
        kind=kind,
        as_of=as_of,
        started_at=dt.datetime.now(dt.UTC),
        prefect_flow_run_id=current_prefect_flow_run_id(),
        counts={},
    )
    session.add(run)
    session.flush()
    return run


def finish_run(session: Session, run: Run, counts: dict[str, Any]) -> None:
    run.finished_at = dt.datetime.now(dt.UTC)
    run.counts = {**(run.counts or {}), **counts}
    session.flush()
