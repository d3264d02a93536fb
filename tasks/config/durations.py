"""Human durations from marketing's YAML ("60 days", "3 weeks", "1 month 2 weeks") as relativedelta."""

from __future__ import annotations

import re

from dateutil.relativedelta import relativedelta

_PART = re.compile(r"(\d+)\s*(day|week|month|year)s?\b", re.IGNORECASE)
_WHOLE = re.compile(r"^\s*(\d+\s*(day|week|month|year)s?\s*)+$", re.IGNORECASE)


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> relativedelta:
    """Parse '60 days', '4 months', '1 year 2 weeks'; anything else is an error that says why."""
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise DurationError(
            f"expected a duration such as '60 days', '3 weeks' or '4 months', got {text!r}"
        )
    delta = relativedelta()
    for amount, unit in _PART.findall(text):
        delta += relativedelta(**{unit.lower() + "s": int(amount)})  # type: ignore[arg-type]
    return delta


def format_duration(delta: relativedelta) -> str:
    parts = [
        f"{value} {name if value != 1 else name[:-1]}"
        for name in ("years", "months", "days")
        if (value := getattr(delta, name))
    ]
    return " ".join(parts) or "0 days"
