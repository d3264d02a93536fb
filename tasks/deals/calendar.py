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


def add_business_days(day: dt.date, n: int, holidays: Iterable[dt.date] = ()) -> dt.date:
    """The ``n``-th business day after ``day`` (weekends and ``holidays`` skipped); 0: ``day``
    itself if it is a business day, else the next one."""
    if n <= 0:
        return next_business_day(day, holidays)
    rules = rruleset()
    start = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
    rules.rrule(rrule(DAILY, dtstart=start, byweekday=(MO, TU, WE, TH, FR), count=n * 2 + 60))
    for holiday in holidays:
        rules.exdate(dt.datetime.combine(holiday, dt.time()))
    found = list(rules)
    if len(found) < n:
        raise ValueError(f"fewer than {n} business days in the {n * 2 + 60} days after {day}")
    return found[n - 1].date()
