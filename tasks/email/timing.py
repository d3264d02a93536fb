"""When an email may go out: inside the recipient's business hours, in their own time zone.

The recipient's zone comes from their phone number when it names exactly one (``+1 415`` is Los
Angeles), else from their country (its first zone in the tz database: New York for the US),
else from config. An email due outside the window moves to the window's next opening, local
time, with daylight saving handled by the tz database (9:00 stays 9:00 across a change).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import pytz
from phonenumbers import timezone as phone_zones

from tasks.config.models import BusinessHours


@lru_cache(maxsize=65_536)
def recipient_zone(phone: str | None, country: str | None, fallback: str) -> ZoneInfo:
    # A country with one zone needs no phone parsing (Germany is Berlin whatever the number).
    listed = pytz.country_timezones.get(country.upper()) if country else None
    if listed and len(listed) == 1:
        return _zone(listed[0], fallback)
    if phone:
        try:
            zones = phone_zones.time_zones_for_number(phonenumbers.parse(phone))
        except phonenumbers.NumberParseException:
            zones = ()
        if len(zones) == 1 and zones[0] != phone_zones.UNKNOWN_TIMEZONE:
            return _zone(zones[0], fallback)
    if listed:
        return _zone(listed[0], fallback)
    return _zone(fallback, fallback)


def _zone(name: str, fallback: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(fallback)


def within_hours(due: dt.datetime, zone: ZoneInfo, hours: BusinessHours) -> dt.datetime:
    """``due`` if it falls inside the window in ``zone``, else the window's next opening (UTC)."""
    return _within(due, zone, hours.start, hours.end, frozenset(hours.days))


# A day's emails share a handful of (moment, zone, window) triples, and each costs a few
# time-zone conversions: a rules stage queueing 100,000 emails computes each triple once.
@lru_cache(maxsize=4096)
def _within(
    due: dt.datetime, zone: ZoneInfo, start: dt.time, end: dt.time, weekdays: frozenset[int]
) -> dt.datetime:
    local = due.astimezone(zone)
    for days_ahead in range(8):
        day = local.date() + dt.timedelta(days=days_ahead)
        if day.isoweekday() not in weekdays:
            continue
        opens = wall_clock(day, start, zone)
        closes = wall_clock(day, end, zone)
        if days_ahead == 0 and opens <= local < closes:
            return due
        if local < opens:
            return opens.astimezone(dt.UTC)
    raise ValueError("business hours name no day of the week")  # the config model forbids it


def wall_clock(day: dt.date, clock: dt.time, zone: ZoneInfo) -> dt.datetime:
    # Wall-clock time on that day; in a spring-forward gap, the first moment after it.
    naive = dt.datetime.combine(day, clock)
    moment = naive.replace(tzinfo=zone)
    back = moment.astimezone(dt.UTC).astimezone(zone)
    return moment if back.replace(tzinfo=None) == naive else back
