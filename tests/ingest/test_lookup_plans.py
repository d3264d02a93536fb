"""The import's lookup of stored leads goes through indexes on both stores, never a scan.

A batch's lookup that reads every lead is invisible on a small store and quadratic on a large
one: at a million rows it was 30 s of an import. The planner is asked about the very statements
an import ran, with sequential scans priced out on PostgreSQL: a predicate no index can serve
still reads the whole table, by a scan or by walking an index end to end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, text
from sqlalchemy.orm import Session

from tasks.ingest.leads import import_leads
from tests.ingest.conftest import AS_OF

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
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        connection.execute(text("SET LOCAL enable_seqscan = off"))
    for statement, params in lookups:
        if postgres:
            (plan,) = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).one()
            scans = list(_whole_scans(plan[0]["Plan"]))
        else:
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            plan = [str(row[-1]) for row in rows]
            # "SCAN leads", or "SCAN leads USING INDEX ...": every row, in some order.
            scans = [line for line in plan if line.startswith("SCAN leads")]
        assert not scans, f"{statement}\n{plan}"


def _whole_scans(node: dict[str, Any]) -> Iterator[str]:
    """PostgreSQL plan nodes that read all of a table: a sequential scan, or an index walked
    end to end (no ``Index Cond``), which is what the planner does when it cannot use one."""
    kind = node["Node Type"]
    if kind == "Seq Scan" or ("Index" in kind and "Index Cond" not in node):
        yield f"{kind} on {node.get('Relation Name') or node.get('Index Name')}"
    for child in node.get("Plans", []):
        yield from _whole_scans(child)
