"""When a cadence step falls due: a wait in calendar time or in business days, then the send hour.

Business days skip weekends and the recipient's holidays (``cadences.yaml`` ``holidays`` per
country, else ``default``), computed with dateutil's rrule. The email's moment is then moved
into the recipient's business hours, in their time zone, when it is queued (see
tasks/email/timing.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from dateutil.relativedelta import relativedelta

from tasks.config.models import BusinessDays
from tasks.deals.calendar import add_business_days


def after_wait(
    moment: dt.datetime, wait: relativedelta | BusinessDays, holidays: Sequence[dt.date] = ()
) -> dt.datetime:
    """``moment`` plus the wait; business days keep the time of day and land on one."""
    if isinstance(wait, BusinessDays):
        day = add_business_days(moment.date(), wait.days, holidays)
        return dt.datetime.combine(day, moment.timetz())
    return moment + wait


def next_occurrence(rule: str, start: dt.datetime, after: dt.datetime) -> dt.datetime:
    """The first day of ``rule`` (an RRULE counted from ``start``'s day) after ``after``'s day,
    as midnight UTC; the send time is applied by the caller."""
    from dateutil.rrule import rrulestr

    origin = dt.datetime.combine(start.date(), dt.time())
    occurrence = rrulestr(rule, dtstart=origin).after(
        dt.datetime.combine(after.date(), dt.time()), inc=False
    )
    if occurrence is None:
        raise ValueError(f"the schedule {rule!r} has no day after {after:%Y-%m-%d}")
    return occurrence.replace(tzinfo=dt.UTC)
