"""Small pieces the importers share: bulk updates by id and raw rows as JSON."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from tasks.store.models import Base


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
