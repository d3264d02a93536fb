"""Lead facts as SQL expressions, evaluated as of a moment, portable across SQLite and PostgreSQL.

Every fact only sees what had happened by ``as_of`` (emails sent, activities occurred), which is
what makes a run for a past day reproduce the decisions of that day.

"Days since X" facts are compiled to timestamp comparisons against a bound computed in Python
(``days_since_last_reply >= 30`` becomes ``last_reply_at <= as_of - 30 days``): no dialect-specific
date arithmetic, and an index can serve it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, or_, select

from tasks.store.models import (
    OUT_THE_DOOR,
    PROGRESS_KINDS,
    Activity,
    ActivityKind,
    Delivery,
    Lead,
    OutboxEmail,
)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def greatest(dialect: str, *exprs: Any) -> ColumnElement[Any]:
    """The latest of several timestamps, NULL treated as the epoch, on either dialect."""
    args = [func.coalesce(e, literal(EPOCH, type_=Lead.created_at.type)) for e in exprs]
    return func.greatest(*args) if dialect == "postgresql" else func.max(*args)


@dataclass(frozen=True)
class FactSet:
    """The fact expressions for one evaluation moment and dialect."""

    as_of: dt.datetime
    dialect: str

    # -- timestamps -------------------------------------------------------------------------

    def _last_activity(self, kind: ColumnElement[bool]) -> ColumnElement[Any]:
        """When the lead's latest activity of these kinds happened, by ``as_of``."""
        return (
            select(func.max(Activity.occurred_at))
            .where(Activity.lead_id == Lead.id, kind, Activity.occurred_at <= self.as_of)
            .correlate(Lead)
            .scalar_subquery()
        )

    def last_reply_at(self) -> ColumnElement[Any]:
        return self._last_activity(Activity.kind == ActivityKind.REPLY)

    def last_progress_at(self) -> ColumnElement[Any]:
        return self._last_activity(Activity.kind.in_(PROGRESS_KINDS))

    def last_activity_at(self) -> ColumnElement[Any]:
        return self._last_activity(Activity.kind != ActivityKind.AUTO_REPLY)

    def _emails_out(self, aggregate: Any, *more: ColumnElement[bool]) -> ColumnElement[Any]:
        """An aggregate over the lead's emails out the door by ``as_of``."""
        return (
            select(aggregate)
            .where(
                OutboxEmail.lead_id == Lead.id,
                OutboxEmail.status.in_(OUT_THE_DOOR),
                OutboxEmail.sent_at <= self.as_of,
                *more,
            )
            .correlate(Lead)
            .scalar_subquery()
        )

    def last_email_at(self) -> ColumnElement[Any]:
        return self._emails_out(func.max(OutboxEmail.sent_at))

    def last_touch_at(self) -> ColumnElement[Any]:
        return greatest(
            self.dialect, self.last_email_at(), self.last_activity_at(), Lead.created_at
        )

    def owner_progress_at(self) -> ColumnElement[Any]:
        # NULL when nobody owns the lead: an unowned lead has no idle owner.
        return case(
            (Lead.owner_id.is_(None), None),
            # A new engagement cycle (a re-engaged lead) restarts the owner's clock too.
            else_=greatest(
                self.dialect, Lead.owner_assigned_at, self.last_progress_at(), Lead.cycle_started_at
            ),
        )

    def cycle_start(self) -> ColumnElement[Any]:
        return func.coalesce(Lead.cycle_started_at, Lead.created_at)

    # -- counts -----------------------------------------------------------------------------

    def emails_sent(self) -> ColumnElement[Any]:
        return self._emails_out(func.count(OutboxEmail.id))

    def unanswered_emails(self) -> ColumnElement[Any]:
        """Emails out the door since the later of the last real reply and the cycle start.

        Bounced or dropped emails never reached anyone and do not count; auto-replies are
        stored as their own activity kind and so never reset the count.
        """
        since = greatest(self.dialect, self.last_reply_at(), self.cycle_start())
        return self._emails_out(
            func.count(OutboxEmail.id),
            OutboxEmail.sent_at > since,
            or_(
                OutboxEmail.delivery.is_(None),
                OutboxEmail.delivery.not_in([Delivery.BOUNCED, Delivery.DROPPED]),
            ),
        )

    def missed_meetings(self) -> ColumnElement[Any]:
        """Meetings missed since the last one held."""
        last_held = self._last_activity(Activity.kind == ActivityKind.MEETING_HELD)
        return (
            select(func.count(Activity.id))
            .where(
                Activity.lead_id == Lead.id,
                Activity.kind == ActivityKind.MEETING_MISSED,
                Activity.occurred_at <= self.as_of,
                Activity.occurred_at
                > func.coalesce(last_held, literal(EPOCH, Lead.created_at.type)),
            )
            .correlate(Lead)
            .scalar_subquery()
        )

    # -- the registry -----------------------------------------------------------------------

    def value(self, fact: str) -> ColumnElement[Any]:
        """The fact's SQL value (days facts as the timestamp they are measured from)."""
        column: dict[str, Any] = {
            "score": Lead.score,
            "grade": Lead.grade,
            "status": Lead.status,
            "source": Lead.source,
            "country": Lead.country,
            "tags": Lead.tags,
            "budget": Lead.budget,
            "authority": Lead.authority,
            "need": Lead.need,
            "timing": Lead.timing,
        }
        if fact in column:
            return column[fact]
        computed = {
            "unanswered_emails": self.unanswered_emails,
            "emails_sent": self.emails_sent,
            "missed_meetings": self.missed_meetings,
            "days_since_last_reply": self.last_reply_at,
            "days_since_last_touch": self.last_touch_at,
            "owner_idle_days": self.owner_progress_at,
        }
        return computed[fact]()

    def days_bound(self, days: int) -> dt.datetime:
        return self.as_of - dt.timedelta(days=days)


DAYS_FACTS = frozenset({"days_since_last_reply", "days_since_last_touch", "owner_idle_days"})


def fact_for_display(fact: str, raw: Any, as_of: dt.datetime) -> Any:
    """A fact's value as people read it: days facts as whole days, enums as their values."""
    if fact in DAYS_FACTS:
        if raw is None:
            return None
        if isinstance(raw, str):  # SQLite returns computed max() timestamps as text
            raw = dt.datetime.fromisoformat(raw)
        if raw.tzinfo is None:
            raw = raw.replace(tzinfo=dt.UTC)
        return (as_of - raw).days
    return getattr(raw, "value", raw)
