"""Insert-if-absent on a unique key, the same on SQLite and PostgreSQL.

Idempotency lives here: a decision, email or follow-up is written with a unique key, and a
second attempt (rerun, backfill, concurrent run) inserts nothing and reports that it did not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Insert, TextClause
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tasks.store.models import Base


def insert_ignore(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    key: Sequence[str],
    *,
    where: ColumnElement[bool] | TextClause | None = None,
) -> list[int]:
    """Insert ``rows``, skipping any whose ``key`` already exists; return the new rows' ids.

    ``where`` names the predicate of a partial unique index when ``key`` is one.
    """
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    stmt: Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(model).on_conflict_do_nothing(
            index_elements=list(key), index_where=where
        )
    elif dialect == "sqlite":
        stmt = sqlite.insert(model).on_conflict_do_nothing(
            index_elements=list(key), index_where=where
        )
    else:  # pragma: no cover - only the two supported stores
        raise NotImplementedError(dialect)
    ids: list[int] = []
    # One statement per row keeps RETURNING exact on both dialects; callers batch the work.
    for row in rows:
        result = session.execute(stmt.values(**row).returning(model.id))  # type: ignore[attr-defined]
        new = result.scalar_one_or_none()
        if new is not None:
            ids.append(new)
    return ids


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE touched (a CursorResult's rowcount; 0 when unknown)."""
    return max(int(getattr(result, "rowcount", 0) or 0), 0)
