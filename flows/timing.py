"""``as_of``: the moment a flow decides as of. A date means the end of that day (UTC)."""

from __future__ import annotations

import datetime as dt

from dateutil import parser


def resolve_as_of(value: str | dt.date | dt.datetime | None) -> dt.datetime:
    """None -> now; 'YYYY-MM-DD' or a date -> 23:59:59 UTC that day; naive datetimes are UTC."""
    if value is None:
        return dt.datetime.now(dt.UTC)
    if isinstance(value, str):
        text = value.strip()
        try:
            return end_of_day(dt.date.fromisoformat(text))
        except ValueError:
            pass
        try:
            value = parser.isoparse(text)
        except ValueError:
            raise ValueError(
                f"as_of: expected a date (YYYY-MM-DD) or an ISO datetime, got {value!r}"
            ) from None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return end_of_day(value)


def end_of_day(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=dt.UTC)


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"backfill: end {end} is before start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
