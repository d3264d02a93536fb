"""Small pieces the importers share: dialect inserts, column-sized text, raw rows, decisions."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Table, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from tasks.store.models import Base, Decision


def table(model: type[Base]) -> Table:
    """The model's table, for bulk INSERTs.

    Given the ORM entity, SQLAlchemy's bulk insert groups rows by which columns are None and
    sends each group apart: on a real export that is thousands of one-row INSERTs. A Core
    INSERT on the table sends every batch as one multi-row statement.
    """
    return model.__table__  # type: ignore[return-value]


def dialect_insert(session: Session, model: type[Base]) -> Any:
    """A bulk INSERT that knows ON CONFLICT, for the store's dialect (SQLite or PostgreSQL)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table(model))
    if dialect == "sqlite":
        return sqlite.insert(table(model))
    raise NotImplementedError(dialect)  # pragma: no cover - only the two supported stores


def fit(column: InstrumentedAttribute[Any], value: str | None) -> str | None:
    """Cut text to its column's length: PostgreSQL refuses a longer value (and the whole import)."""
    length = getattr(column.property.columns[0].type, "length", None)
    return value[:length] if value is not None and length else value


def update_by_id(session: Session, model: type[Base], changes: list[dict[str, Any]]) -> None:
    """Bulk UPDATE by primary key (one executemany per set of columns), objects kept fresh."""
    if not changes:
        return
    session.execute(update(model), changes)
    # Objects the caller already holds would otherwise keep the values from before the update.
    changed = {c["id"] for c in changes}
    for obj in list(session.identity_map.values()):
        if isinstance(obj, model) and getattr(obj, "id", None) in changed:
            session.expire(obj)


def jsonable(raw: dict[str, Any]) -> dict[str, Any]:
    """The raw record as JSON can store it (keys as text; anything exotic as its text)."""
    try:
        json.dumps(raw)
    except (TypeError, ValueError):
        return {str(k): v if isinstance(v, str | int | float | bool | None) else str(v)
                for k, v in raw.items()}  # fmt: skip
    return {str(k): v for k, v in raw.items()}


def record_fresh_decisions(
    session: Session, decisions: list[dict[str, Any]], *, run_id: int | None, as_of: dt.datetime
) -> None:
    """Bulk-insert decisions whose keys embed an id created in this transaction (an import row).

    Such a key cannot exist yet, so the per-row insert-if-absent of ``record_decisions`` buys
    nothing and would cost one statement per rejected or merged row.
    """
    if not decisions:
        return
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "run_id": run_id,
            "as_of": as_of,
            "opportunity_id": None,
            "created_at": now,
            **d,
            "reason": (d.get("reason") or None) and fit(Decision.reason, d["reason"]),
        }
        for d in decisions
    ]
    session.execute(insert(table(Decision)), rows)
