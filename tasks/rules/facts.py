"""Lead facts as SQL expressions, evaluated as of a moment, portable across SQLite and PostgreSQL.

Every fact only sees what had happened by ``as_of`` (emails sent, activities occurred), which is
what makes a run for a past day reproduce the decisions of that day.

"Days since X" facts are compiled to timestamp comparisons against a bound computed in Python
(``days_since_last_reply >= 30`` becomes ``last_reply_at <= as_of - 30 days``): no dialect-specific
date arithmetic, and an index can serve it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, or_, select

from tasks.spans import LeadSpan, within
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


def named_followup_date(lead_id: Any, as_of: dt.datetime, *, correlate: Any) -> ColumnElement[Any]:
    """The date the prospect last named for a follow-up ("call me after Q3"), by ``as_of``."""
    return (
        select(Activity.followup_on)
        .where(
            Activity.lead_id == lead_id,
            Activity.kind == ActivityKind.NAMED_FOLLOWUP,
            Activity.occurred_at <= as_of,
            Activity.followup_on.is_not(None),
        )
        .order_by(Activity.occurred_at.desc(), Activity.id.desc())
        .limit(1)
        .correlate(correlate)
        .scalar_subquery()
    )


def greatest(dialect: str, *exprs: Any) -> ColumnElement[Any]:
    """The latest of several timestamps, NULL treated as the epoch, on either dialect."""
    args = [func.coalesce(e, literal(EPOCH, type_=Lead.created_at.type)) for e in exprs]
    return func.greatest(*args) if dialect == "postgresql" else func.max(*args)


@dataclass(frozen=True)
class FactSet:
    """The fact expressions for one evaluation moment and dialect.

    Facts over a lead's emails and activities come from two grouped aggregates (one pass over
    each table, hash-joined to the leads) rather than from one correlated subquery per lead: a
    rule reads its facts for every lead in play, and PostgreSQL runs a correlated subquery once
    per outer row. ``select_facts`` adds the joins a set of facts needs.

    ``span``: only those leads' facts are wanted, so each aggregate reads only their rows (an
    index range) instead of grouping the whole table for the join to throw most of it away; a
    worker's slice of the day then costs what its own leads cost, not what the store does.
    """

    as_of: dt.datetime
    dialect: str
    span: LeadSpan | None = None
    _parts: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # -- per-lead aggregates ----------------------------------------------------------------

    def _part(self, name: str, build: Any) -> Any:
        if name not in self._parts:
            self._parts[name] = build()
        return self._parts[name]

    def _activity(self) -> Any:
        """The latest activity of each kind that matters, per lead, by ``as_of``."""

        def latest(*kinds: ActivityKind, exclude: bool = False) -> Any:
            kind = Activity.kind.not_in(kinds) if exclude else Activity.kind.in_(kinds)
            return func.max(case((kind, Activity.occurred_at)))

        return self._part(
            "activity",
            lambda: (
                select(
                    Activity.lead_id.label("lead_id"),
                    latest(ActivityKind.REPLY).label("last_reply"),
                    latest(*PROGRESS_KINDS).label("last_progress"),
                    latest(ActivityKind.AUTO_REPLY, exclude=True).label("last_activity"),
                    latest(ActivityKind.MEETING_HELD).label("last_held"),
                )
                .where(Activity.occurred_at <= self.as_of, within(self.span, Activity.lead_id))
                .group_by(Activity.lead_id)
                .subquery("activity_facts")
            ),
        )

    def _emails(self) -> Any:
        """Emails out the door per lead by ``as_of``: how many, the latest, how many unanswered.

        Unanswered: sent since the later of the last real reply and the cycle start. Bounced or
        dropped emails never reached anyone and do not count; auto-replies are their own
        activity kind and so never reset the count.
        """

        def build() -> Any:
            activity = self._activity()
            since = greatest(self.dialect, activity.c.last_reply, self.cycle_start())
            unanswered = and_(
                OutboxEmail.sent_at > since,
                or_(
                    OutboxEmail.delivery.is_(None),
                    OutboxEmail.delivery.not_in([Delivery.BOUNCED, Delivery.DROPPED]),
                ),
            )
            return (
                select(
                    OutboxEmail.lead_id.label("lead_id"),
                    func.count(OutboxEmail.id).label("sent"),
                    func.max(OutboxEmail.sent_at).label("last_sent"),
                    func.count(case((unanswered, OutboxEmail.id))).label("unanswered"),
                )
                .join(Lead, Lead.id == OutboxEmail.lead_id)
                .outerjoin(activity, activity.c.lead_id == OutboxEmail.lead_id)
                .where(
                    OutboxEmail.status.in_(OUT_THE_DOOR),
                    OutboxEmail.sent_at <= self.as_of,
                    within(self.span, OutboxEmail.lead_id),
                )
                .group_by(OutboxEmail.lead_id)
                .subquery("email_facts")
            )

        return self._part("emails", build)

    def _missed(self) -> Any:
        """Meetings missed since the last one held, per lead."""

        def build() -> Any:
            activity = self._activity()
            return (
                select(Activity.lead_id.label("lead_id"), func.count(Activity.id).label("missed"))
                .outerjoin(activity, activity.c.lead_id == Activity.lead_id)
                .where(
                    Activity.kind == ActivityKind.MEETING_MISSED,
                    Activity.occurred_at <= self.as_of,
                    within(self.span, Activity.lead_id),
                    Activity.occurred_at
                    > func.coalesce(activity.c.last_held, literal(EPOCH, Lead.created_at.type)),
                )
                .group_by(Activity.lead_id)
                .subquery("missed_facts")
            )

        return self._part("missed", build)

    # -- timestamps -------------------------------------------------------------------------

    def last_reply_at(self) -> ColumnElement[Any]:
        return self._activity().c.last_reply

    def last_touch_at(self) -> ColumnElement[Any]:
        return greatest(
            self.dialect,
            self._emails().c.last_sent,
            self._activity().c.last_activity,
            Lead.created_at,
        )

    def owner_progress_at(self) -> ColumnElement[Any]:
        # NULL when nobody owns the lead: an unowned lead has no idle owner.
        return case(
            (Lead.owner_id.is_(None), None),
            # A new engagement cycle (a re-engaged lead) restarts the owner's clock too.
            else_=greatest(
                self.dialect,
                Lead.owner_assigned_at,
                self._activity().c.last_progress,
                Lead.cycle_started_at,
            ),
        )

    def cycle_start(self) -> ColumnElement[Any]:
        return func.coalesce(Lead.cycle_started_at, Lead.created_at)

    def named_followup_date(self) -> ColumnElement[Any]:
        # Read for a few leads at a time (a follow-up action), so a correlated lookup is right.
        return named_followup_date(Lead.id, self.as_of, correlate=Lead)

    # -- counts -----------------------------------------------------------------------------

    def emails_sent(self) -> ColumnElement[Any]:
        return func.coalesce(self._emails().c.sent, 0)

    def unanswered_emails(self) -> ColumnElement[Any]:
        return func.coalesce(self._emails().c.unanswered, 0)

    def missed_meetings(self) -> ColumnElement[Any]:
        return func.coalesce(self._missed().c.missed, 0)

    # -- the registry -----------------------------------------------------------------------

    def value(self, fact: str) -> ColumnElement[Any]:
        """The fact's SQL value (days facts as the timestamp they are measured from).

        Aggregate facts need their joins: build the query with ``select_facts``.
        """
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
            "named_followup_date": self.named_followup_date,
        }
        return computed[fact]()

    def select_facts(self, names: Iterable[str], *extra: Any) -> Select[Any]:
        """``SELECT leads.id, <facts> FROM leads LEFT JOIN <the aggregates they need>``."""
        columns = [self.value(name).label(name) for name in names]
        query = select(Lead.id.label("id"), *extra, *columns).select_from(Lead)
        if self.span is not None:  # the aggregates hold only the span's leads
            query = query.where(self.span.clause(Lead.id))
        # The aggregates were built while the columns were: join exactly those.
        for part in ("activity", "emails", "missed"):
            if part in self._parts:
                sub = self._parts[part]
                query = query.outerjoin(sub, sub.c.lead_id == Lead.id)
        return query

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
