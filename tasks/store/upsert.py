"""Bulk inserts that know ON CONFLICT, the same on SQLite and PostgreSQL.

Idempotency lives here: a decision, email or follow-up is written with a unique key, and a
second attempt (rerun, backfill, concurrent run) inserts nothing and reports that it did not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, Integer, Table, TextClause, any_, cast, literal
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


# Ids named per statement on SQLite: under its default bound-parameter limit (32,766).
SQLITE_SLICE = 5_000


def id_slices(session: Session, ids: Sequence[int]) -> Iterator[Sequence[int]]:
    """The ids in as few slices as the store allows: one on PostgreSQL (see ``among``)."""
    size = len(ids) if session.get_bind().dialect.name == "postgresql" else SQLITE_SLICE
    for start in range(0, len(ids), max(size, 1)):
        yield ids[start : start + size]


def among(session: Session, column: Any, ids: Sequence[int]) -> ColumnElement[bool]:
    """``column IN ids``; on PostgreSQL as ``= ANY(array)``, ONE parameter however many ids.

    An IN list is one bound parameter per id: PostgreSQL refuses more than 65,535 of them, and
    planning a statement with thousands costs more than running it.
    """
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(cast(literal(list(ids), ARRAY(Integer)), ARRAY(Integer)))
    return column.in_(list(ids))


def append_rows(session: Session, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows that no constraint can refuse (a log such as import rows), in bulk, no ids back.

    PostgreSQL takes them by COPY, SQLite by the driver's executemany: either is several times
    faster than a multi-row INSERT built by SQLAlchemy, which matters at a million rows. Values
    go through each column's own bind processing (aware datetimes to naive UTC, enums to their
    values, JSON to text), so what is stored is what an ORM insert would store.
    """
    if not rows:
        return
    target = table(model)
    dialect = session.get_bind().dialect
    columns = [c for c in target.columns if c.name in rows[0]]
    processors = [c.type.bind_processor(dialect) for c in columns]

    def values(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            process(row[c.name]) if process else row[c.name]
            for c, process in zip(columns, processors, strict=True)
        )

    names = ", ".join(c.name for c in columns)
    connection = session.connection()
    if dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        copy_sql = f"COPY {target.name} ({names}) FROM STDIN"
        with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(values(row))
        return
    marks = ", ".join("?" for _ in columns)
    connection.exec_driver_sql(
        f"INSERT INTO {target.name} ({names}) VALUES ({marks})", [values(r) for r in rows]
    )
