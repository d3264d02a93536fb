"""Dates in exports: ISO first, then what people type; naive values are UTC."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from dateutil import parser


@lru_cache(maxsize=100_000)
def parse_moment(value: str) -> dt.datetime | None:
    """A datetime (aware, UTC when the value has no zone), or None when it is not a date."""
    try:
        moment = parser.isoparse(value)
    except ValueError:
        try:
            moment = parser.parse(value, dayfirst=False)
        except (ValueError, OverflowError):
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def parse_day(value: str) -> dt.date | None:
    moment = parse_moment(value)
    return moment.date() if moment else None
