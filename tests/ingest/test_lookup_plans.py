"""The import's lookup of stored leads goes through indexes on both stores, never a scan.

A batch's lookup that read every lead was 30 s of a million-row import. The planner is asked
about the very statements an import ran (see tests/plans.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tasks.ingest.leads import import_leads
from tests import builders
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
        import_leads(session, [file], run_id=builders.run(session, AS_OF), as_of=AS_OF)
    assert lookups
    connection = session.connection()
    for statement, params in lookups:
        assert not whole_reads(connection, statement, params, "leads"), statement


def test_a_phone_lookup_reads_only_leads_without_an_address(
    session: Session, run_id: int, tmp_path: Path
) -> None:
    """A switchboard shared by people who have addresses is no match for a row without one
    (see ``identity``): the lookup must not read them to find that out (migration 0014)."""
    colleagues = "".join(
        f"person{i}@acme.example,Per{i},Son,+1 415 555 0100,US\n" for i in range(40)
    )
    file = tmp_path / "leads.csv"
    file.write_text(
        "Email,First Name,Last Name,Phone,Country\n" + colleagues + ",Bo,Chen,+1 415 555 0100,US\n",
        encoding="utf-8",
    )
    import_leads(session, [file], run_id=run_id, as_of=AS_OF)
    again = tmp_path / "again.csv"
    again.write_text("Email,First Name,Last Name,Phone,Country\n,Bo,Chen,+1 415 555 0100,US\n")
    with statements(session.get_bind(), "SELECT leads.id, leads.email_key") as lookups:
        result = import_leads(session, [again], run_id=builders.run(session, AS_OF), as_of=AS_OF)
    assert result.counts["merged"] == 1
    # The lookup by phone (the other reads with these columns fetch fuzzy candidates by id).
    ((statement, params),) = [(s, p) for s, p in lookups if "leads.email_key IS NULL" in s]
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        (plan,) = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params
        ).one()
        assert _rows_read(plan[0]["Plan"]) == 1
    else:
        steps = [str(row[-1]) for row in connection.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + statement, params
        )]  # fmt: skip
        assert any("ix_leads_unaddressed_phone" in step for step in steps), steps


def _rows_read(node: dict[str, Any]) -> int:
    """Rows the plan's scans of ``leads`` produced, with those they read and threw away."""
    own = 0
    if node.get("Relation Name") == "leads":
        own = sum(
            int(node.get(k, 0))
            for k in ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck")
        )
    return own + sum(_rows_read(child) for child in node.get("Plans", []))
