"""Survivorship: which value of each field a lead keeps when rows of the same person merge."""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Fields a duplicate row may fill on the surviving lead when they are empty; never overwritten.
FILLABLE = ("phone", "phone_ext", "first_name", "last_name", "company", "company_key",
            "website", "industry", "employees", "title", "country", "source", "budget",
            "authority", "need", "timing", "tags")  # fmt: skip
# Fields that travel together: a trusted source's phone brings its extension, and so on.
COUPLED = {"phone": ("phone_ext",), "company": ("company_key",)}
# Where the lead came from is recorded once, never replaced by a later source.
FIRST_ONLY = frozenset({"source", "phone_ext", "company_key"})
fillable = operator.attrgetter(*FILLABLE)


@dataclass(frozen=True)
class Provenance:
    """Where an incoming row's values come from: its source and when it was true."""

    source: str
    at: dt.datetime


def fill(
    current: dict[str, Any],
    incoming: Mapping[str, Any],
    into: dict[str, Any],
    origin: Provenance,
    trust: Mapping[str, int],
) -> list[str]:
    """Merge an incoming row's values into ``current`` (and ``into``); return the fields taken.

    Survivorship, field by field: an empty field takes any value; a filled one takes the
    incoming value when its source is more trusted (lower rank in ``trust``; unlisted sources
    rank last), or equally trusted and more recent. ``current["field_sources"]`` remembers where
    each value came from; a field without an entry came with the lead (its source, creation).
    """
    taken = []
    sources: dict[str, Any] = dict(current.get("field_sources") or {})
    default = [current.get("source") or "unknown", _iso(current.get("created_at"))]
    last = len(trust)
    for name in FILLABLE:
        value = incoming.get(name)
        if _empty(name, value) or (name in FIRST_ONLY and not _empty(name, current.get(name))):
            continue
        if not _empty(name, current.get(name)):
            if value == current.get(name):
                continue
            held_source, held_at = sources.get(name, default)
            held, offered = trust.get(held_source, last), trust.get(origin.source, last)
            if offered > held or (offered == held and (_iso(origin.at) or "") <= (held_at or "")):
                continue
        for field_name in (name, *COUPLED.get(name, ())):
            current[field_name] = into[field_name] = incoming.get(field_name)
        sources[name] = [origin.source, _iso(origin.at)]
        taken.append(name)
    if taken:
        current["field_sources"] = into["field_sources"] = sources
    return taken


def dated(target: dict[str, Any], created: dt.datetime) -> None:
    """The lead began at ``created`` (a later row told when an undated lead was created)."""
    target["created_at"] = target["status_changed_at"] = target["cycle_started_at"] = created


def _empty(name: str, value: Any) -> bool:
    return value is None or value == "" or value == [] or (name == "source" and value == "unknown")


def _iso(moment: Any) -> str | None:
    if isinstance(moment, str) or moment is None:
        return moment
    return str(moment.astimezone(dt.UTC).isoformat())
