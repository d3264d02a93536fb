"""What an import writes names only runs and leads that exist.

The import's logs (decisions, import rows) and the provenance pointers to runs (a lead's
creating run, an enrolment's run) carry no foreign keys (migration 0013: PostgreSQL checked each
row by itself, a tenth of an import). These tests hold the writer to what the keys guarded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tasks.ingest import cleaning
from tests.ingest.conftest import AS_OF, FIXTURES

# (table, column, referred table): every column that lost its foreign key.
POINTERS = [
    ("decisions", "lead_id", "leads"),
    ("decisions", "run_id", "runs"),
    ("import_rows", "lead_id", "leads"),
    ("import_rows", "run_id", "runs"),
    ("leads", "created_run_id", "runs"),
    ("cadence_enrolments", "run_id", "runs"),
]


def _dangling(session: Session) -> dict[str, int]:
    found = {}
    for table, column, referred in POINTERS:
        found[f"{table}.{column}"] = session.execute(
            text(
                f"SELECT count(*) FROM {table} t WHERE t.{column} IS NOT NULL AND NOT EXISTS "
                f"(SELECT 1 FROM {referred} r WHERE r.id = t.{column})"
            )
        ).scalar_one()
    return found


def _pointing(session: Session) -> dict[str, int]:
    return {
        f"{table}.{column}": session.execute(
            text(f"SELECT count(*) FROM {table} WHERE {column} IS NOT NULL")
        ).scalar_one()
        for table, column, _ in POINTERS
    }


def test_imports_write_no_pointer_to_a_missing_lead_or_run(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three exports of overlapping people, in small batches (merges into leads of an earlier
    batch and of an earlier import, rejections, owners, grades, enrolments), then the same
    files again: every pointer those columns hold names a row that exists."""
    from tasks.ingest_tasks import import_leads_task

    monkeypatch.setattr(cleaning, "BATCH", 3)
    files = [str(FIXTURES / name) for name in
             ("hubspot_contacts.csv", "salesforce_leads.csv", "pipedrive_persons.csv")]  # fmt: skip
    first: dict[str, Any] = import_leads_task.fn(files[:1], AS_OF, None, None)
    second: dict[str, Any] = import_leads_task.fn(files, AS_OF, None, None)
    assert first["accepted"] and first["rejected"] and second["merged"]
    with Session(engine) as session:
        pointing = _pointing(session)
        # Each kind of pointer is exercised, so the check below has something to check.
        assert all(pointing.values()), pointing
        assert _dangling(session) == dict.fromkeys(pointing, 0)


def test_the_check_finds_a_pointer_to_a_missing_lead(engine: Engine) -> None:
    """The check above is not vacuous: a decision about a lead that does not exist is seen."""
    with Session(engine) as session:
        session.execute(
            text(
                "INSERT INTO decisions (dedupe_key, as_of, action, rule, lead_id, facts, "
                "created_at) VALUES ('x', '2026-03-02', 'merge', 'test', 999999, '{}', "
                "'2026-03-02')"
            )
        )
        assert _dangling(session)["decisions.lead_id"] == 1
