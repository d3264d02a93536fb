"""The import's lookup of stored leads goes through indexes on both stores, never a scan.

A batch's lookup that read every lead was 30 s of a million-row import. The planner is asked
about the very statements an import ran (see tests/plans.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.orm import Session

from tasks.ingest.leads import import_leads
from tests.ingest.conftest import AS_OF
from tests.plans import whole_reads

ROWS = (
    "Email,First Name,Last Name,Phone,Country\n"
    "ana@acme.example,Ana,Silva,,PT\n"
    "info@acme.example,,,,PT\n"
    ",Bo,Chen,+1 415 555 0100,US\n"
)


def _lookups(session: Session, file: Path, run_id: int) -> list[tuple[str, Any]]:
    """The statements an import ran to find its rows among the stored leads."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Connection, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith("SELECT leads.id, leads.email_key"):
            seen.append((statement, params))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        import_leads(session, [file], run_id=run_id, as_of=AS_OF)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return seen


def test_stored_leads_are_found_through_indexes(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    file = tmp_path / "leads.csv"
    file.write_text(ROWS, encoding="utf-8")
    import_leads(session, [file], run_id=run_id, as_of=AS_OF)
    lookups = _lookups(session, file, run_id)  # the same rows again: all three are looked up
    assert lookups
    connection = session.connection()
    for statement, params in lookups:
        assert not whole_reads(connection, statement, params, "leads"), statement
