"""The import's lookup of stored leads goes through indexes on both stores, never a scan.

A batch's lookup that read every lead was 30 s of a million-row import. The planner is asked
about the very statements an import ran (see tests/plans.py).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from tasks.ingest.leads import import_leads
from tests.ingest.conftest import AS_OF
from tests.plans import statements, whole_reads

ROWS = (
    "Email,First Name,Last Name,Phone,Country\n"
    "ana@acme.example,Ana,Silva,,PT\n"
    "info@acme.example,,,,PT\n"
    ",Bo,Chen,+1 415 555 0100,US\n"
)


def test_stored_leads_are_found_through_indexes(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    file = tmp_path / "leads.csv"
    file.write_text(ROWS, encoding="utf-8")
    import_leads(session, [file], run_id=run_id, as_of=AS_OF)
    # The same rows again: all three are looked up.
    with statements(session.get_bind(), "SELECT leads.id, leads.email_key") as lookups:
        import_leads(session, [file], run_id=run_id, as_of=AS_OF)
    assert lookups
    connection = session.connection()
    for statement, params in lookups:
        assert not whole_reads(connection, statement, params, "leads"), statement
