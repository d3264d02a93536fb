"""Small pieces the importers share: bulk updates by id, raw rows as JSON, import rows as COPY
text, fewer collections."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from tasks.store.db import to_json
from tasks.store.models import Base
from tasks.store.upsert import copy_text


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


def raw_json(raw: dict[str, Any]) -> str:
    """``jsonable(raw)`` as the JSON text the store keeps (its own serializer), made once.

    The cleaning process makes it beside the cleaning: a text crosses the pipe to the writer
    in a third of the time a dict of every column does, and the writer stores it as it is.
    """
    try:
        return to_json({str(k): v for k, v in raw.items()})
    except TypeError:  # orjson's: a value it cannot write (an object, an integer past 64 bits)
        return json.dumps(jsonable(raw), ensure_ascii=False)


# An import row's columns as its COPY text lists them: first those known once its input row
# is cleaned (``import_row_head``), then the run's and the outcome's, which the writer adds.
IMPORT_ROW_COLUMNS = ("file", "row_number", "line_number", "raw", "reasons", "run_id", "kind",
                      "outcome", "lead_id")  # fmt: skip


def import_row_head(
    stored_file: str, row_number: int, line_number: int, raw: str, reasons: Sequence[str]
) -> str:
    """The first five fields of an input row's import row (see ``IMPORT_ROW_COLUMNS``) as COPY
    text, each followed by its tab; ``stored_file``: the file's name as the column keeps it,
    made COPY text already; ``raw``: the row as JSON text (``raw_json``).

    The cleaning process writes them beside the cleaning: the writer then appends four fields
    to it, instead of converting nine values a row, a million times, while it judges."""
    return (
        f"{stored_file}\t{row_number}\t{line_number}\t{copy_text(raw)}\t"
        f"{copy_text(to_json(reasons))}\t"
    )


# Allocations between two young-generation collections during an import (Python's default: 700).
IMPORT_GC_THRESHOLD = 100_000


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the block with the cyclic garbage collector woken 140 times less often.

    An import allocates millions of small objects (rows, dicts, tuples) that die young and
    form no cycles, while the collector, woken every 700 allocations, walked the batches
    still alive each time, and now and then the whole heap: a quarter of the writer's time at
    30k rows. Cycles are still collected, only later; the old thresholds come back after.
    """
    old = gc.get_threshold()
    gc.set_threshold(IMPORT_GC_THRESHOLD, *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
