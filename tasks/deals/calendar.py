"""Business days: follow-ups never land on a weekend or a configured holiday."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from dateutil.rrule import DAILY, FR, MO, TH, TU, WE, rrule, rruleset


def next_business_day(day: dt.date, holidays: Iterable[dt.date] = ()) -> dt.date:
    """``day`` itself when it is a business day, else the first business day after it."""
    rules = rruleset()
    start = dt.datetime.combine(day, dt.time())
    rules.rrule(rrule(DAILY, dtstart=start, byweekday=(MO, TU, WE, TH, FR), count=60))
    for holiday in holidays:
        rules.exdate(dt.datetime.combine(holiday, dt.time()))
    first = rules.after(start, inc=True)
    if first is None:  # sixty consecutive holidays: a config mistake, not a calendar
        raise ValueError(f"no business day within 60 days of {day}")
    return first.date()
