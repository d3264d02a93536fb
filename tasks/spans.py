"""A range of lead ids: the slice of a per-lead stage one worker does at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, true


@dataclass(frozen=True)
class LeadSpan:
    """Lead ids from ``lo`` to ``hi`` inclusive; ``hi`` None: every id from ``lo`` up, so a lead
    created after the day was planned still falls in the last span."""

    lo: int
    hi: int | None = None

    def clause(self, column: Any) -> ColumnElement[bool]:
        if self.hi is None:
            return column >= self.lo  # type: ignore[no-any-return]
        return and_(column >= self.lo, column <= self.hi)


def within(span: LeadSpan | None, column: Any) -> ColumnElement[bool]:
    """The span's condition on ``column`` (a lead id); no span: every lead."""
    return true() if span is None else span.clause(column)
