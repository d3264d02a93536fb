"""Ingest flows: leads (clean, dedupe, assign, enrol) and CRM exports (deals, activities)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.timing import resolve_as_of
from tasks.ingest_tasks import import_crm_task, import_leads_task
from tasks.stages import current_config
from tasks.store.schema import ensure_schema


@flow(name="ingest", log_prints=False)
def ingest(
    files: list[str],
    as_of: str | None = None,
    encoding: str | None = None,
    outcomes: str | None = None,
) -> dict[str, Any]:
    """Import lead files (CSV or JSONL). ``outcomes``: write row,outcome,lead_id,reasons there."""
    current_config()
    ensure_schema()
    return import_leads_task(files, resolve_as_of(as_of), encoding, outcomes)


@flow(name="import-crm", log_prints=False)
def import_crm(kind: str, files: list[str], as_of: str | None = None) -> dict[str, Any]:
    """Import a CRM export: ``kind`` is opportunities or activities."""
    if kind not in ("opportunities", "activities"):
        raise ValueError(f"kind: expected opportunities or activities, got {kind!r}")
    current_config()
    ensure_schema()
    return import_crm_task(kind, files, resolve_as_of(as_of))
