"""Bulk inserts that know ON CONFLICT, the same on SQLite and PostgreSQL.

Idempotency lives here: a decision, email or follow-up is written with a unique key, and a
second attempt (rerun, backfill, concurrent run) inserts nothing and reports that it did not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, TextClause
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from tasks.store.models import Base


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


def insert_ignore(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    key: Sequence[str],
    *,
    where: ColumnElement[bool] | TextClause | None = None,
) -> list[int]:
    """Insert ``rows`` in one statement, skipping any whose ``key`` already exists.

    Returns the new rows' ids (a skipped row returns none). ``where`` names the predicate of a
    partial unique index when ``key`` is one. Every row must carry the same columns.
    """
    if not rows:
        return []
    stmt = (
        dialect_insert(session, model)
        .on_conflict_do_nothing(index_elements=list(key), index_where=where)
        .returning(table(model).c.id)
    )
    return list(session.scalars(stmt, list(rows)))


def fit(column: InstrumentedAttribute[Any], value: str | None) -> str | None:
    """Cut text to its column's length: PostgreSQL refuses a longer value (and the whole batch)."""
    length = getattr(column.property.columns[0].type, "length", None)
    return value[:length] if value is not None and length else value


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE touched (a CursorResult's rowcount; 0 when unknown)."""
    return max(int(getattr(result, "rowcount", 0) or 0), 0)
