"""Ingest flows: leads (clean, dedupe, assign, enrol) and CRM exports (deals, activities)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.timing import resolve_as_of
from tasks.email.events import apply_events, load_event_file
from tasks.ingest.reader import IngestFileError
from tasks.ingest_tasks import import_crm_task, import_leads_task
from tasks.stages import current_config
from tasks.store.db import session_scope
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


def _move(path: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    target = into / path.name
    if target.exists():  # the same name dropped again: keep both
        target = into / f"{path.stem}.{int(path.stat().st_mtime)}{path.suffix}"
    return Path(shutil.move(str(path), target))


def _set_aside(path: Path, base: Path, error: Exception) -> Path:
    """A file that could not be read: into ``base/failed/``, its error beside it."""
    moved = _move(path, base / "failed")
    moved.with_name(moved.name + ".error.txt").write_text(f"{error}\n", encoding="utf-8")
    return moved


@flow(name="ingest-folder", log_prints=False)
def ingest_folder(folder: str, as_of: str | None = None) -> dict[str, Any]:
    """Import each lead file dropped in ``folder`` (*.csv, *.jsonl), oldest first, one at a time.

    An imported file moves to ``folder/imported/``; one that cannot be read moves to
    ``folder/failed/`` with its error beside it (``NAME.error.txt``) and imports nothing, and the
    others still go in. Re-dropping a file creates nothing new (re-import is idempotent).
    """
    current_config()
    ensure_schema()
    base = Path(folder)
    files = sorted(
        (p for p in base.iterdir() if p.is_file() and p.suffix.lower() in (".csv", ".jsonl")),
        key=lambda p: (p.stat().st_mtime, p.name),
    ) if base.is_dir() else []  # fmt: skip
    counts: dict[str, Any] = {"files": len(files), "imported": 0, "failed": 0, "rows": 0}
    log = get_run_logger()
    for path in files:
        try:
            result = import_leads_task([str(path)], resolve_as_of(as_of), None, None)
        except IngestFileError as exc:
            moved = _set_aside(path, base, exc)
            counts["failed"] += 1
            log.warning("%s: %s; moved to %s", path.name, exc, moved.parent)
            continue
        _move(path, base / "imported")
        counts["imported"] += 1
        counts["rows"] += result["rows"]
    return counts


@flow(name="webhook-events", log_prints=False)
def webhook_events(folder: str) -> dict[str, Any]:
    """Apply saved SendGrid webhook payloads dropped in ``folder`` (``*.json``, ``*.jsonl``).

    What ``nurture events load`` does, for a folder on a schedule: each file is applied in its
    own transaction and moves to ``folder/applied/``; a malformed one moves to ``folder/failed/``
    with its error beside it and writes nothing. Events already stored are skipped.
    """
    ensure_schema()
    base = Path(folder)
    files = sorted(p for p in base.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl")) if base.is_dir() else []  # fmt: skip
    counts: dict[str, Any] = {"files": len(files), "applied": 0, "failed": 0, "events": 0, "new": 0}
    for path in files:
        try:
            events = load_event_file(path)
        except ValueError as exc:
            _set_aside(path, base, exc)
            counts["failed"] += 1
            continue
        with session_scope() as session:
            summary = apply_events(session, events, now=dt.datetime.now(dt.UTC))
        _move(path, base / "applied")
        counts["applied"] += 1
        counts["events"] += summary.received
        counts["new"] += summary.stored
    return counts
