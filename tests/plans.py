"""What the planner would do with a statement: does it read a whole table to answer?

Asked with sequential scans priced out on PostgreSQL, so that only a predicate no index can
serve still reads the whole table, by a scan or by walking an index end to end. A lookup that
reads everything is invisible on a test's small store and quadratic on a large one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, event, text


@contextmanager
def statements(engine: Engine | Connection, starting: str) -> Iterator[list[tuple[str, Any]]]:
    """The statements (with their parameters) run on ``engine`` meanwhile that start so."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Connection, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith(starting):
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def whole_reads(connection: Connection, statement: str, params: Any, table: str) -> list[str]:
    """The plan steps that read all of ``table`` (none is what an indexed lookup shows)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL enable_seqscan = off"))
        (plan,) = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).one()
        return [step for step, on in _whole_scans(plan[0]["Plan"]) if on == table]
    rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
    # "SCAN leads", or "SCAN leads USING INDEX ...": every row, in some order.
    return [str(row[-1]) for row in rows if str(row[-1]).startswith(f"SCAN {table}")]


def _whole_scans(node: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """PostgreSQL plan nodes that read all of a table: a sequential scan, or an index walked
    end to end (no ``Index Cond``), which is what the planner does when it cannot use one."""
    kind = node["Node Type"]
    if kind == "Seq Scan" or ("Index" in kind and "Index Cond" not in node):
        yield (
            f"{kind} on {node.get('Relation Name')} ({node.get('Index Name')})",
            str(node.get("Relation Name")),
        )
    for child in node.get("Plans", []):
        yield from _whole_scans(child)
