"""Dates in exports: ISO first, then what people type; naive values are UTC."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from dateutil import parser

# dateutil fills the parts a value leaves out from a default (today, unless told): parsing with
# two different defaults shows when it had to, so "March" or "5" is refused, not guessed.
_DEFAULTS = (dt.datetime(2001, 1, 1), dt.datetime(2002, 2, 2))


@lru_cache(maxsize=100_000)
def parse_moment(value: str) -> dt.datetime | None:
    """An aware UTC datetime, or None when ``value`` is not a complete date.

    A naive value is UTC; a date alone is midnight UTC; an offset is converted to UTC.
    """
    value = value.strip()
    if not value:
        return None
    try:
        moment = parser.isoparse(value)
    except (ValueError, OverflowError):
        try:
            first, second = (parser.parse(value, dayfirst=False, default=d) for d in _DEFAULTS)
        except (ValueError, OverflowError):
            return None
        if first.date() != second.date():
            return None
        moment = first
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def parse_day(value: str) -> dt.date | None:
    """A calendar date as written (no conversion to UTC: "2026-06-01" is the 1st everywhere)."""
    value = value.strip()
    if not value:
        return None
    try:
        return parser.isoparse(value).date()
    except (ValueError, OverflowError):
        moment = parse_moment(value)
        return moment.date() if moment else None
