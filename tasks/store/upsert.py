"""Bulk inserts that know ON CONFLICT, the same on SQLite and PostgreSQL.

Idempotency lives here: a decision, email or follow-up is written with a unique key, and a
second attempt (rerun, backfill, concurrent run) inserts nothing and reports that it did not.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    ARRAY,
    BigInteger,
    ClauseElement,
    Column,
    ColumnElement,
    Enum,
    Executable,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    TableClause,
    TextClause,
    any_,
    cast,
    column,
    func,
    literal,
    text,
)
from sqlalchemy import table as table_clause
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import NullType, TypeEngine

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
    """Insert ``rows``, skipping any whose ``key`` already exists; return the new rows' ids.

    ``where`` names the predicate of a partial unique index when ``key`` is one. Every row must
    carry the same columns.
    """
    return [
        row[0] for row in insert_ignore_returning(session, model, rows, key, ["id"], where=where)
    ]


# From this many rows, PostgreSQL gets them by COPY into a staging table (see below).
STAGE_FROM_ROWS = 500


def insert_ignore_returning(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    key: Sequence[str],
    returning: Sequence[str],
    *,
    where: ColumnElement[bool] | TextClause | None = None,
) -> list[tuple[Any, ...]]:
    """``insert_ignore`` returning the named columns of the rows it inserted (no ``returning``:
    nothing, and nothing is sent back).

    A multi-row INSERT carries one parameter per value: PostgreSQL spends more time parsing a
    thousand-row statement of twenty columns than running it. Large batches are therefore
    COPYed into a temporary staging table and moved with one ``INSERT ... SELECT ... ON
    CONFLICT DO NOTHING RETURNING``: the same outcome, about ten times faster.
    """
    if not rows:
        return []
    target = table(model)
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql" and len(rows) >= STAGE_FROM_ROWS:
        return _staged_insert(session, target, rows, key, returning, where)
    stmt = dialect_insert(session, model).on_conflict_do_nothing(
        index_elements=list(key), index_where=where
    )
    if not returning:
        session.execute(stmt, list(rows))
        return []
    stmt = stmt.returning(*(target.c[name] for name in returning))
    return [tuple(row) for row in session.execute(stmt, list(rows))]


_staging = itertools.count()


def _staged_insert(
    session: Session,
    target: Table,
    rows: Sequence[dict[str, Any]],
    key: Sequence[str],
    returning: Sequence[str],
    where: ColumnElement[bool] | TextClause | None,
) -> list[tuple[Any, ...]]:
    connection = session.connection()
    names, values = _row_values(target, rows, connection.dialect)
    stage = f"_stage_{target.name}_{next(_staging)}"
    listed = ", ".join(names)
    connection.exec_driver_sql(
        f"CREATE TEMP TABLE {stage} AS SELECT {listed} FROM {target.name} WITH NO DATA"
    )
    _copy(connection, stage, listed, rows, values)
    predicate = ""
    if where is not None:
        compiled = where.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
        predicate = f" WHERE {compiled}"
    # ORDER BY keeps the staged (input) order, as the multi-row INSERT would.
    moved = (
        f"INSERT INTO {target.name} ({listed}) SELECT {listed} FROM {stage} ORDER BY ctid "
        f"ON CONFLICT ({', '.join(key)}){predicate} DO NOTHING"
    )
    result: list[Any] = []
    if returning:
        result = list(connection.exec_driver_sql(f"{moved} RETURNING {', '.join(returning)}"))
    else:
        connection.exec_driver_sql(moved)
    connection.exec_driver_sql(f"DROP TABLE {stage}")
    processors = [
        target.c[name].type.result_processor(connection.dialect, None) for name in returning
    ]
    return [
        tuple(process(v) if process else v for v, process in zip(row, processors, strict=True))
        for row in result
    ]


def _copy(
    connection: Any, table_name: str, listed: str, rows: Sequence[dict[str, Any]], values: Any
) -> None:
    """COPY rows into a table through psycopg, inside the session's transaction."""
    with _copy_in(connection, table_name, listed) as copy:
        for row in rows:
            copy.write_row(values(row))


@contextmanager
def _copy_in(connection: Any, table_name: str, listed: str, options: str = "") -> Iterator[Any]:
    """psycopg's COPY ... FROM STDIN into the table's ``listed`` columns, inside the
    connection's transaction (``options``: e.g. ``(FORMAT binary)``)."""
    driver: Any = connection.connection.driver_connection
    statement = f"COPY {table_name} ({listed}) FROM STDIN {options}".rstrip()
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        yield copy


def _row_values(
    target: Table, rows: Sequence[dict[str, Any]], dialect: Any, prepared: Collection[str] = ()
) -> tuple[list[str], Any]:
    """The rows' column names, and a function giving a row's values as the driver takes them.

    Each value goes through its column's own bind processing (aware datetimes to naive UTC,
    enums to their values, JSON to text), so what is stored is what an ORM insert would store.
    """
    columns = [c for c in target.columns if c.name in rows[0]]
    names = [c.name for c in columns]
    # Only the columns whose type converts its values (dates, enums, JSON) pay for a call: the
    # rest are picked out of the row by one C-level itemgetter. A million rows is ten million
    # values, and a Python-level loop over each of them was a tenth of an import's time.
    converted = [
        (index, _remembered(process) if _hashable(column) else _empty_once(process))
        for index, (column, process) in enumerate(
            (c, None if c.name in prepared else c.type.bind_processor(dialect)) for c in columns
        )
        if process is not None
    ]
    pick = operator.itemgetter(*names)
    single = len(names) == 1

    def values(row: dict[str, Any]) -> tuple[Any, ...]:
        picked = (pick(row),) if single else pick(row)
        if not converted:
            return picked  # type: ignore[no-any-return]
        out = list(picked)
        for index, process in converted:
            out[index] = process(out[index])
        return tuple(out)

    return names, values


def _hashable(column: Column[Any]) -> bool:
    """Are the column's Python values hashable (dates, enums; not JSON documents)?"""
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return False
    return kind not in (dict, list)


def _remembered(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``process`` run once per distinct value: an import's rows share a handful of dates
    (the import's own moment, each file's dates) and enum members, converted once each instead
    of millions of times."""
    seen: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        try:
            return seen[value]
        except KeyError:
            converted = seen[value] = process(value)
            if len(seen) > 10_000:  # a column of distinct moments: stop remembering them
                seen.clear()
            return converted

    return convert


def _empty_once(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``process`` for JSON documents, which cannot be remembered (they are not hashable), but
    of which an import writes mostly empty ones (a new lead's field sources and tags, an
    accepted row's reasons): those are converted once. At 300k rows, 850k documents went
    through the column's processor and the serializer, a tenth of the writes' Python."""
    empty: dict[type, Any] = {dict: process({}), list: process([])}

    def convert(value: Any) -> Any:
        if not value and type(value) in empty:
            return empty[type(value)]
        return process(value)

    return convert


def fit(column: InstrumentedAttribute[Any], value: str | None) -> str | None:
    """Cut text to its column's length: PostgreSQL refuses a longer value (and the whole batch)."""
    if value is None:
        return None
    # An import fits several values of every row: each column's length is looked up once,
    # keyed by the attribute's identity (its own == builds SQL; mapped attributes live as long
    # as their classes, so an id is never reused).
    length = _LENGTHS.get(id(column), -1)
    if length == -1:
        length = _LENGTHS[id(column)] = getattr(column.property.columns[0].type, "length", None)
    return value[:length] if length else value


_LENGTHS: dict[int, int | None] = {}


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


# The ASCII unit separator: no key, address or name the store compares contains it.
_UNIT = "\x1f"


def among(session: Session, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL as ``= ANY(array)``, ONE parameter however many.

    An IN list is one bound parameter per value: PostgreSQL refuses more than 65,535 of them,
    and planning a statement with thousands costs more than running it.
    """
    if session.get_bind().dialect.name == "postgresql":
        element = column.type  # an array of the column's own type, empty or not
        if isinstance(element, Integer):
            # Ids as one array literal, parsed by the server: psycopg adapts a list element
            # by element in Python, which cost a second per 100,000 imported rows. Untyped, so
            # the server reads it as the array itself, a constant: a text parameter cast to an
            # array is evaluated again for every row a sequential scan reads.
            listed = "{" + ",".join(map(str, values)) + "}"
            return column == any_(cast(literal(listed, NullType()), ARRAY(element)))
        if (
            isinstance(element, String)
            and not isinstance(element, Enum)
            and all(isinstance(v, str) and _UNIT not in v for v in values)
        ):
            # Text the same way: one string split by the server (string_to_array is immutable,
            # so the planner folds it to the constant array an index scan takes). psycopg
            # dumping a list of strings cost seconds per million values.
            joined = literal(_UNIT.join(values), NullType())
            return column == any_(func.string_to_array(joined, literal(_UNIT, NullType())))
        return column == any_(cast(literal(list(values), ARRAY(element)), ARRAY(element)))
    return column.in_(list(values))


def joined_among(
    session: Session, query: Select[Any], column: Any, values: Sequence[str]
) -> Select[Any]:
    """``query`` narrowed to the rows whose ``column`` is among ``values`` (text), as a join to
    the values on PostgreSQL: a nested loop of index probes, one per value, whatever the table.

    ``among``'s ``= ANY(array)`` leaves the plan to the planner's guess of how many rows match,
    and for a batch's 5,000 addresses it guessed 5,000 wide rows: a sequential scan at 300k
    leads (70 ms), a parallel bitmap scan at a million (45 ms, most of it starting workers),
    for the few hundred found that 5,000 probes of the index return in 10 to 17 ms.
    """
    if (
        session.get_bind().dialect.name != "postgresql"
        or not values
        or any(_UNIT in v for v in values)
    ):
        return query.where(among(session, column, values))
    listed = func.string_to_array(
        literal(_UNIT.join(values), NullType()), literal(_UNIT, NullType())
    )
    wanted = func.unnest(listed).table_valued("value").render_derived(name="wanted")
    return query.join(wanted, column == wanted.c.value)


def append_rows(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    *,
    prepared: Collection[str] = (),
) -> None:
    """Insert rows that no constraint can refuse (a log such as import rows), in bulk, no ids back.

    PostgreSQL takes them by COPY, SQLite by the driver's executemany: either is several times
    faster than a multi-row INSERT built by SQLAlchemy, which matters at a million rows.
    ``prepared``: columns whose values come already as the driver takes them (JSON as its text,
    see ``tasks.store.db.to_json``), stored as they are.
    """
    if rows:
        _append(session.connection(), table(model), table(model).name, rows, prepared)


def _append(
    connection: Any,
    target: Table,
    into: str,
    rows: Sequence[dict[str, Any]],
    prepared: Collection[str] = (),
) -> None:
    """``append_rows`` into the table named ``into``, whose columns are ``target``'s."""
    names, values = _row_values(target, rows, connection.dialect, prepared)
    listed = ", ".join(names)
    if connection.dialect.name == "postgresql":
        _copy(connection, into, listed, rows, values)
        return
    marks = ", ".join("?" for _ in names)
    connection.exec_driver_sql(
        f"INSERT INTO {into} ({listed}) VALUES ({marks})", [values(r) for r in rows]
    )


# COPY's text format: these characters are written as backslash sequences (as psycopg does).
_COPY_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f",
     "\r": "\\r"}
)  # fmt: skip
_COPY_SPECIAL = re.compile(r"[\\\b\t\n\v\f\r]")
# A NULL in COPY's text format.
COPY_NULL = "\\N"


def copy_text(value: str) -> str:
    """A text value as a field of COPY's text format (tab-separated, backslash-escaped)."""
    return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value


def copy_value(column: InstrumentedAttribute[Any], value: Any, dialect: Any) -> str:
    """A value of the column as a field of COPY's text format, converted as the column
    converts it for an insert (an enum member to its stored value, say)."""
    process = column.type.bind_processor(dialect)
    converted = process(value) if process is not None else value
    return COPY_NULL if converted is None else copy_text(str(converted))


def append_copy_text(session: Session, model: type[Base], names: Sequence[str], text: str) -> None:
    """Append rows already written as COPY's text format (PostgreSQL only): one line a row,
    its fields those ``names``, each made by ``copy_text`` or ``copy_value``.

    Rows whose fields another process has written out (the import's cleaning process, which
    has time to spare) cost this one a single write, not a conversion of every value.
    """
    if not text:
        return
    with _copy_in(session.connection(), table(model).name, ", ".join(names)) as copy:
        copy.write(text)


def append_int_columns(
    session: Session, model: type[Base], names: Sequence[str], columns: Sequence[IntArray]
) -> None:
    """Append rows of integers only (hashed keys and ids), given as one numpy array a column,
    like ``append_rows`` but without a Python object per value.

    An import stores about eight match keys per lead. PostgreSQL gets them by binary COPY, its
    rows laid out by numpy in one pass (each field's length, then its big-endian value): at a
    million leads, text made row by row in Python took longer than the server's work.
    """
    target = table(model)
    listed = ", ".join(names)
    connection = session.connection()
    if not len(columns[0]):
        return
    if connection.dialect.name != "postgresql":
        marks = ", ".join("?" for _ in names)
        rows = list(zip(*(c.tolist() for c in columns), strict=True))
        connection.exec_driver_sql(f"INSERT INTO {target.name} ({listed}) VALUES ({marks})", rows)
        return
    widths = [8 if isinstance(target.c[name].type, BigInteger) else 4 for name in names]
    fields: list[tuple[str, str]] = [("fields", ">i2")]
    for i, width in enumerate(widths):
        fields += [(f"length{i}", ">i4"), (f"value{i}", f">i{width}")]
    binary = np.empty(len(columns[0]), dtype=np.dtype(fields))
    binary["fields"] = len(names)
    for i, (width, values) in enumerate(zip(widths, columns, strict=True)):
        if width == 4 and (values.min() < -(2**31) or values.max() >= 2**31):
            raise OverflowError(f"{target.name}.{names[i]}: a value does not fit 32 bits")
        binary[f"length{i}"] = width
        binary[f"value{i}"] = values
    with _copy_in(connection, target.name, listed, "(FORMAT binary)") as copy:
        copy.write(_BINARY_HEADER + binary.tobytes() + _BINARY_TRAILER)


# PostgreSQL's binary COPY: a signature, no flags, no header extension; a field count of -1.
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_BINARY_TRAILER = (-1).to_bytes(2, "big", signed=True)
IntArray = npt.NDArray[np.int64]


class _CreateTempAs(Executable, ClauseElement):
    """``CREATE TEMP TABLE name AS query``, with the query's parameters bound as usual.

    Cached like any statement (its name and query make the key): a caller that keeps one
    table name for a loop of the same query compiles it once (see ``temp_name``).
    """

    _traverse_internals = [
        ("name", InternalTraversal.dp_string),
        ("query", InternalTraversal.dp_clauseelement),
    ]
    inherit_cache = True

    def __init__(self, name: str, query: Select[Any]) -> None:
        self.name = name
        self.query = query


@compiles(_CreateTempAs)
def _compile_create_temp_as(element: _CreateTempAs, compiler: Any, **kw: Any) -> str:
    return f"CREATE TEMP TABLE {element.name} AS {compiler.process(element.query, **kw)}"


def temp_name(hint: str) -> str:
    """A temporary table's name no other in the process has: for a caller that makes the same
    table again and again (a batch at a time) under one name, so that the statements that
    read it are compiled once, not once per batch."""
    return f"_{hint}_{next(_staging)}"


@contextmanager
def kept(
    session: Session, query: Select[Any], hint: str, *, name: str | None = None
) -> Iterator[TableClause]:
    """The query's rows in a temporary table while the block runs, its columns named as the
    query names them: several statements then read a costly query's result, not run it again.

    Dropped when the block ends well; after an error the caller's rollback drops it (both
    stores undo a CREATE TABLE with the transaction). ``name``: the table's (see ``temp_name``).
    """
    name = name or temp_name(f"kept_{hint}")
    session.flush()  # wrapped, the query is not one the session autoflushes for
    session.execute(_CreateTempAs(name, query))
    yield table_clause(name, *(column(c.name, c.type) for c in query.selected_columns))
    session.execute(text(f"DROP TABLE {name}"))


def reserve_ids(session: Session, model: type[Base], count: int) -> list[int]:
    """``count`` new ids for the model's table, ascending, taken before its rows are written.

    PostgreSQL hands them out from the table's sequence (a concurrent writer takes others;
    an id a conflict leaves unused is a gap, as it would have been anyway). SQLite has no
    sequence, but a writer holds the store's one write lock until it commits: the ids after
    the largest stored one are its own.
    """
    if count <= 0:
        return []
    name = table(model).name
    if session.get_bind().dialect.name == "postgresql":
        # One text value back, not a row per id: fetching thousands of rows through the
        # driver cost several times the server's work.
        listed = session.scalar(
            text(
                f"SELECT string_agg(nextval(pg_get_serial_sequence('{name}', 'id'))::text, ',') "
                "FROM generate_series(1, :count)"
            ),
            {"count": count},
        )
        return sorted(map(int, listed.split(",")))
    last = session.scalar(text(f"SELECT coalesce(max(id), 0) FROM {name}")) or 0
    return list(range(last + 1, last + 1 + count))


@contextmanager
def staged(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    hint: str,
    *,
    name: str | None = None,
    extra: Sequence[tuple[str, TypeEngine[Any]]] = (),
) -> Iterator[TableClause]:
    """The rows in a temporary table shaped like the model's (every column; those the rows do
    not carry are NULL) while the block runs: SQL can then work on rows before they are
    written (see grading's ``NewLeadGrades``). ``extra``: columns beyond the model's, (name,
    type), for what the rows carry that the model does not keep. Dropped as ``kept`` tables
    are; ``name`` as there."""
    target = table(model)
    name = name or temp_name(f"staged_{hint}")
    connection = session.connection()
    connection.exec_driver_sql(
        f"CREATE TEMP TABLE {name} AS SELECT * FROM {target.name} WHERE 1 = 0"
    )
    for extra_name, kind in extra:
        connection.exec_driver_sql(
            f"ALTER TABLE {name} ADD COLUMN {extra_name} {kind.compile(connection.dialect)}"
        )
    shape = Table(
        name,
        MetaData(),
        *(Column(c.name, c.type) for c in target.columns),
        *(Column(extra_name, kind) for extra_name, kind in extra),
    )
    if rows:
        _append(connection, shape, name, rows)
    yield table_clause(name, *(column(c.name, c.type) for c in shape.columns))
    connection.exec_driver_sql(f"DROP TABLE {name}")
