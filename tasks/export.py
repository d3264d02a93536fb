"""Export a table of the store, every row and every column, as CSV or JSON lines.

Rows stream from the database in batches (``yield_per``), ordered by id, so a table of any size
exports in constant memory. Values are written the way a person or a spreadsheet reads them:
datetimes in ISO 8601 with their offset (the store's are UTC), dates in ISO 8601, enums as their
values, JSON columns as JSON (as text in a CSV cell), NULL as an empty CSV cell or JSON null.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import json
from typing import Any, Literal, TextIO

from sqlalchemy import JSON, select
from sqlalchemy.orm import Session

from tasks.store.models import Base, Decision, FollowUp, Lead, Opportunity, OutboxEmail

ExportWhat = Literal["leads", "opportunities", "emails", "decisions", "followups"]
ExportFormat = Literal["csv", "jsonl"]

TABLES: dict[str, type[Base]] = {
    "leads": Lead,
    "opportunities": Opportunity,
    "emails": OutboxEmail,
    "decisions": Decision,
    "followups": FollowUp,
}
BATCH = 1000


def export(session: Session, what: ExportWhat, out: TextIO, fmt: ExportFormat) -> int:
    """Write every row of ``what`` to ``out`` in ``fmt``; return how many rows were written.

    For CSV, open ``out`` with ``newline=""`` (the csv module writes its own line endings).
    """
    if what not in TABLES:
        raise ValueError(f"what: expected one of {', '.join(TABLES)}, got {what!r}")
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"fmt: expected csv or jsonl, got {fmt!r}")
    table = TABLES[what].__table__
    columns = list(table.columns)
    names = [c.name for c in columns]
    json_columns = [isinstance(c.type, JSON) for c in columns]
    stmt = select(*columns).order_by(table.c.id).execution_options(yield_per=BATCH)
    writer = csv.writer(out) if fmt == "csv" else None
    if writer:
        writer.writerow(names)
    count = 0
    for row in session.execute(stmt):
        if writer:
            writer.writerow(
                _cell(value, is_json) for value, is_json in zip(row, json_columns, strict=True)
            )
        else:
            record = dict(zip(names, (_plain(v) for v in row), strict=True))
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count


def _plain(value: Any) -> Any:
    """A JSON-ready value: ISO 8601 for dates and times, the value of an enum."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        # The store keeps UTC; a naive value can only be UTC.
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _cell(value: Any, is_json: bool) -> str:
    if is_json:
        return "" if value is None else json.dumps(value, ensure_ascii=False)
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
