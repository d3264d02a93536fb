"""The store's schema: every table Nurture reads or writes, typed, with the invariants as constraints.

Timestamps are stored as naive UTC and returned as aware UTC (``UTCDateTime``) so SQLite and
PostgreSQL behave identically. Closed vocabularies are Python enums stored as short strings.
Nothing is ever deleted: rows change status and keep the reason and the run that changed them.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database (same on SQLite and PostgreSQL)."""

    impl = DateTime
    cache_ok = True

    @property
    def python_type(self) -> type[dt.datetime]:
        # A TypeDecorator does not say by itself: bulk writes convert each distinct moment of a
        # column once when they know its values are hashable (see upsert._hashable).
        return dt.datetime

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store only takes aware datetimes")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as VARCHAR with the member values, no native PG enum: adding a value is then a
    # config-level change rather than a type migration.
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )


class LeadStatus(enum.StrEnum):
    NEW = "new"
    WORKING = "working"
    NURTURING = "nurturing"
    QUALIFIED = "qualified"
    CUSTOMER = "customer"
    DISQUALIFIED = "disqualified"


# Leads still being worked: rules, grading, audiences and owners' caps look at these only.
IN_PLAY: tuple[LeadStatus, ...] = (
    LeadStatus.NEW,
    LeadStatus.WORKING,
    LeadStatus.NURTURING,
    LeadStatus.QUALIFIED,
)


class OpportunityStatus(enum.StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class LostReason(enum.StrEnum):
    NO_BUDGET = "no_budget"
    BAD_TIMING = "bad_timing"
    COMPETITOR = "competitor"
    NO_AUTHORITY = "no_authority"
    NO_NEED = "no_need"
    UNRESPONSIVE = "unresponsive"
    CONTACT_LEFT = "contact_left"
    OUT_OF_BUSINESS = "out_of_business"
    COMPETITOR_IMPLEMENTED = "competitor_implemented"
    OTHER = "other"


class ClosedBy(enum.StrEnum):
    ENGINE = "engine"
    PERSON = "person"


class ActivityKind(enum.StrEnum):
    REPLY = "reply"
    AUTO_REPLY = "auto_reply"
    MEETING_SCHEDULED = "meeting_scheduled"
    MEETING_HELD = "meeting_held"
    MEETING_MISSED = "meeting_missed"
    CALL = "call"
    SAID_NO = "said_no"
    NAMED_FOLLOWUP = "named_followup"
    STAGE_CHANGED = "stage_changed"
    NOTE = "note"


# Activities that count as the prospect or owner making real progress (owner_idle_days, rot).
PROGRESS_KINDS: tuple[ActivityKind, ...] = (
    ActivityKind.REPLY,
    ActivityKind.MEETING_HELD,
    ActivityKind.STAGE_CHANGED,
)


class ImportKind(enum.StrEnum):
    LEAD = "lead"
    OPPORTUNITY = "opportunity"
    ACTIVITY = "activity"


class ImportOutcome(enum.StrEnum):
    ACCEPTED = "accepted"
    MERGED = "merged"
    UPDATED = "updated"
    REJECTED = "rejected"


class EnrolmentStatus(enum.StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    EXITED = "exited"


class EmailStatus(enum.StrEnum):
    QUEUED = "queued"
    # Taken by a sending run, not yet handed to SendGrid: safe to take back (see sending.py).
    CLAIMED = "claimed"
    # Handed to SendGrid; what happened is known only once recorded (or from the webhook).
    SENDING = "sending"
    SENT = "sent"
    # Kept in the outbox only: no SendGrid key configured (the embedded default).
    RECORDED = "recorded"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    SKIPPED_LATE = "skipped_late"


# Outbound emails that reached (or, in outbox-only mode, would have reached) the prospect.
OUT_THE_DOOR: tuple[EmailStatus, ...] = (EmailStatus.SENT, EmailStatus.RECORDED)


class Delivery(enum.StrEnum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    DROPPED = "dropped"


class FollowUpStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    REOPENED = "reopened"
    CANCELLED = "cancelled"


class SuppressionReason(enum.StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    SPAM_REPORT = "spam_report"
    INVALID = "invalid"
    MANUAL = "manual"


class DecisionAction(enum.StrEnum):
    ACCEPT = "accept"
    MERGE = "merge"
    REJECT = "reject"
    ASSIGN_OWNER = "assign_owner"
    RELEASE_OWNER = "release_owner"
    ENROL = "enrol"
    EXIT_CADENCE = "exit_cadence"
    DISQUALIFY = "disqualify"
    SEND = "send"
    CLOSE_LOST = "close_lost"
    SCHEDULE_FOLLOW_UP = "schedule_follow_up"
    CANCEL_FOLLOW_UP = "cancel_follow_up"
    REOPEN = "reopen"
    REENGAGE = "reengage"
    WARN_OWNER = "warn_owner"
    TAG = "tag"
    SET_GRADE = "set_grade"


class RunKind(enum.StrEnum):
    INGEST = "ingest"
    DAILY = "daily"
    IMPORT = "import"


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class Run(Base):
    """One execution of a flow: every decision and email points back at the run that made it."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[RunKind] = mapped_column(_enum(RunKind))
    as_of: Mapped[dt.datetime]
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64))
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)


class StageBatch(Base):
    """A slice of one stage of a daily run: the unit several workers share.

    A worker claims a pending batch with ``FOR UPDATE SKIP LOCKED`` and does its work in the
    same transaction that marks it done, so a batch is done exactly once: a worker that dies
    rolls back both, and the batch is pending again for the next one.
    """

    __tablename__ = "stage_batches"
    __table_args__ = (UniqueConstraint("run_id", "seq", "lo"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    # The stage's place in the day: no batch starts while an earlier stage has one pending.
    seq: Mapped[int]
    stage: Mapped[str] = mapped_column(String(64))
    # Lead ids lo..hi inclusive; both None: the whole stage at once (work across leads).
    lo: Mapped[int | None] = mapped_column(BigInteger)
    hi: Mapped[int | None] = mapped_column(BigInteger)
    done_at: Mapped[dt.datetime | None]
    worker: Mapped[str | None] = mapped_column(String(200))
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Owner(Base):
    __tablename__ = "owners"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    region: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(default=True)


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    # The address's match key (see tasks.ingest.normalise.email_key): unique among personal
    # addresses; a role address (info@, sales@) may be shared by several people.
    email_key: Mapped[str | None] = mapped_column(String(320))
    email_role: Mapped[bool] = mapped_column(default=False, server_default=false())
    phone: Mapped[str | None] = mapped_column(String(32))
    phone_ext: Mapped[str | None] = mapped_column(String(16))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(300))
    # The company's match key (legal forms dropped) and registrable web domain: dedupe blocks.
    company_key: Mapped[str | None] = mapped_column(String(300), index=True)
    website: Mapped[str | None] = mapped_column(String(253))
    industry: Mapped[str | None] = mapped_column(String(100))
    employees: Mapped[int | None]
    title: Mapped[str | None] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(2))
    source: Mapped[str] = mapped_column(String(64), default="unknown")
    grade: Mapped[str | None] = mapped_column(String(1))
    score: Mapped[int] = mapped_column(default=0)
    status: Mapped[LeadStatus] = mapped_column(_enum(LeadStatus), default=LeadStatus.NEW)
    status_changed_at: Mapped[dt.datetime]
    status_reason: Mapped[str | None] = mapped_column(String(64))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("owners.id"))
    owner_assigned_at: Mapped[dt.datetime | None]
    budget: Mapped[str | None] = mapped_column(String(32))
    authority: Mapped[str | None] = mapped_column(String(32))
    need: Mapped[str | None] = mapped_column(String(32))
    timing: Mapped[str | None] = mapped_column(String(32))
    tags: Mapped[list[str]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime]
    # Start of the current engagement cycle (creation, or the last re-engagement): emails before
    # it do not count as unanswered, and rules fire at most once per lead per cycle.
    cycle_started_at: Mapped[dt.datetime | None]
    # The run that created the lead. Provenance pointers to runs (here, on enrolments, decisions
    # and import rows) carry no foreign key: the run writes them about itself, runs are never
    # deleted, and PostgreSQL checked each one row by row (migration 0013).
    created_run_id: Mapped[int | None]
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))

    # Which source gave each field its value, and when: {"phone": ["webinar", "2026-03-01..."]};
    # a value from a more trusted source replaces one from a less trusted one on a merge.
    field_sources: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")

    __table_args__ = (
        Index("ix_leads_status_owner", "status", "owner_id"),
        Index(
            "uq_leads_email_key",
            "email_key",
            unique=True,
            sqlite_where=text("NOT email_role"),
            postgresql_where=text("NOT email_role"),
        ),
        # Role addresses (info@) are shared, so not unique, but looked up by key all the same.
        Index(
            "ix_leads_role_email_key",
            "email_key",
            sqlite_where=text("email_role"),
            postgresql_where=text("email_role"),
        ),
        # A phone finds a stored person only when neither has an address (see 0014).
        Index(
            "ix_leads_unaddressed_phone",
            "phone",
            sqlite_where=text("email_key IS NULL"),
            postgresql_where=text("email_key IS NULL"),
        ),
    )


class LeadAlias(Base):
    """Another address or number a lead was seen with (a merged row, a second email).

    Exact dedupe looks here as well as at the lead's own email and phone, so a person merged
    under their work address is found again by their personal one.
    """

    __tablename__ = "lead_aliases"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # "email" or "phone"
    value: Mapped[str] = mapped_column(String(320))  # as given (normalised)
    key: Mapped[str] = mapped_column(String(320))  # the match key
    source: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))

    __table_args__ = (
        UniqueConstraint("lead_id", "kind", "key"),
        Index("ix_lead_aliases_key", "kind", "key"),
    )


class LeadMatchKey(Base):
    """A lead's fuzzy-matching block key (see tasks.ingest.matching), as a 64-bit hash.

    An incoming row looks up its own keys here to find the few stored people worth comparing
    it with; a key held by more than ``MAX_BLOCK`` leads is not evidence and is not followed.
    """

    __tablename__ = "lead_match_keys"

    key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # A lead's id, without a foreign key: the keys are derived from leads, written with them,
    # and leads are never deleted; checking each of seven keys a lead cost more than writing it.
    lead_id: Mapped[int] = mapped_column(primary_key=True)


class ImportRow(Base):
    """Every input row we were given, with what became of it: nothing is lost."""

    __tablename__ = "import_rows"

    id: Mapped[int] = mapped_column(primary_key=True)
    # No foreign keys on this log (nor on decisions): it is written in bulk, a row per input row,
    # by the run about leads it created or read, and neither runs nor leads are ever deleted.
    run_id: Mapped[int] = mapped_column(index=True)
    kind: Mapped[ImportKind] = mapped_column(_enum(ImportKind))
    file: Mapped[str] = mapped_column(String(500))
    row_number: Mapped[int]
    line_number: Mapped[int]
    raw: Mapped[dict[str, Any]]
    outcome: Mapped[ImportOutcome] = mapped_column(_enum(ImportOutcome))
    lead_id: Mapped[int | None] = mapped_column(index=True)
    reasons: Mapped[list[str]] = mapped_column(default=list)


class Opportunity(Base):
    __tablename__ = "opportunities"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("owners.id"))
    name: Mapped[str] = mapped_column(String(300))
    amount: Mapped[int | None]
    stage: Mapped[str] = mapped_column(String(64))
    stage_entered_at: Mapped[dt.datetime]
    status: Mapped[OpportunityStatus] = mapped_column(
        _enum(OpportunityStatus), default=OpportunityStatus.OPEN
    )
    created_at: Mapped[dt.datetime]
    closed_at: Mapped[dt.datetime | None]
    closed_by: Mapped[ClosedBy | None] = mapped_column(_enum(ClosedBy))
    lost_reason: Mapped[LostReason | None] = mapped_column(_enum(LostReason))
    competitor: Mapped[str | None] = mapped_column(String(100))
    lost_notes: Mapped[str | None] = mapped_column(Text)
    reopened_from_id: Mapped[int | None] = mapped_column(ForeignKey("opportunities.id"))
    # The follow-up that opened this opportunity: unique, so one follow-up opens at most one.
    followup_id: Mapped[int | None] = mapped_column(
        ForeignKey("followups.id", use_alter=True), unique=True
    )
    cycle: Mapped[int] = mapped_column(default=0)
    # What a reopened opportunity carries from the lost one: reason, competitor, notes, cycles.
    history: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_opportunities_status_stage", "status", "stage"),)


class Activity(Base):
    __tablename__ = "activities"

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"))
    opportunity_id: Mapped[int | None] = mapped_column(ForeignKey("opportunities.id"), index=True)
    kind: Mapped[ActivityKind] = mapped_column(_enum(ActivityKind))
    occurred_at: Mapped[dt.datetime]
    # For named_followup: the date the prospect asked to be contacted again.
    followup_on: Mapped[dt.date | None] = mapped_column(Date)
    # For said_no: the prospect's reason, from the lost-reason picklist.
    reason: Mapped[LostReason | None] = mapped_column(_enum(LostReason))
    competitor: Mapped[str | None] = mapped_column(String(100))
    email_id: Mapped[int | None] = mapped_column(ForeignKey("outbox_emails.id"))
    notes: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_activities_lead_kind_time", "lead_id", "kind", "occurred_at"),)


class CadenceEnrolment(Base):
    __tablename__ = "cadence_enrolments"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"))
    cadence: Mapped[str] = mapped_column(String(64))
    status: Mapped[EnrolmentStatus] = mapped_column(
        _enum(EnrolmentStatus), default=EnrolmentStatus.ACTIVE
    )
    enrolled_at: Mapped[dt.datetime]
    next_step: Mapped[int] = mapped_column(default=0)
    next_due_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[int | None]  # no foreign key: see Lead.created_run_id
    # The cadence's steps as they were when the lead started (or last moved to a new version):
    # an edit to the cadence does not surprise a lead already in it (see the cadence's on_change).
    steps: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)

    __table_args__ = (
        # A lead is in a given cadence at most once at a time.
        Index(
            "uq_cadence_enrolments_active",
            "lead_id",
            "cadence",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_cadence_enrolments_due", "status", "next_due_at"),
    )


class OutboxEmail(Base):
    """An email, written before any attempt to send it; ``dedupe_key`` makes sending exactly-once."""

    __tablename__ = "outbox_emails"

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    opportunity_id: Mapped[int | None] = mapped_column(ForeignKey("opportunities.id"))
    enrolment_id: Mapped[int | None] = mapped_column(ForeignKey("cadence_enrolments.id"))
    step: Mapped[int | None]
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"))
    template: Mapped[str] = mapped_column(String(100))
    to_email: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(500))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    # A SendGrid dynamic template: its id and the data it is rendered with, frozen at enqueue.
    template_id: Mapped[str | None] = mapped_column(String(64))
    template_data: Mapped[dict[str, Any] | None]
    status: Mapped[EmailStatus] = mapped_column(_enum(EmailStatus), default=EmailStatus.QUEUED)
    delivery: Mapped[Delivery | None] = mapped_column(_enum(Delivery))
    due_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime]
    sent_at: Mapped[dt.datetime | None]
    # The first open and click SendGrid reported (engagement; the events themselves are kept).
    opened_at: Mapped[dt.datetime | None]
    clicked_at: Mapped[dt.datetime | None]
    message_id: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(default=0)
    # The sending run's claim on a ``claimed`` row: its token and when it was taken.
    claim: Mapped[str | None] = mapped_column(String(32))
    claimed_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))

    __table_args__ = (
        Index("ix_outbox_emails_status_due", "status", "due_at"),
        Index("ix_outbox_emails_lead_sent", "lead_id", "sent_at"),
    )


class EmailEvent(Base):
    __tablename__ = "email_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    # SendGrid's own event id: an event delivered twice is stored once.
    sg_event_id: Mapped[str] = mapped_column(String(128), unique=True)
    email_id: Mapped[int | None] = mapped_column(ForeignKey("outbox_emails.id"), index=True)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))
    event: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[dt.datetime]
    payload: Mapped[dict[str, Any]]


class FollowUp(Base):
    __tablename__ = "followups"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    # The lost opportunity this follow-up comes back to (none for a disqualified lead).
    opportunity_id: Mapped[int | None] = mapped_column(ForeignKey("opportunities.id"))
    # What made it: one follow-up per lost opportunity or per disqualifying decision.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    due_on: Mapped[dt.date] = mapped_column(Date)
    basis: Mapped[str] = mapped_column(String(32))
    status: Mapped[FollowUpStatus] = mapped_column(
        _enum(FollowUpStatus), default=FollowUpStatus.SCHEDULED
    )
    created_at: Mapped[dt.datetime]
    resolved_at: Mapped[dt.datetime | None]
    resolution: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))

    __table_args__ = (Index("ix_followups_status_due", "status", "due_on"),)


class Suppression(Base):
    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[SuppressionReason] = mapped_column(_enum(SuppressionReason))
    created_at: Mapped[dt.datetime]
    source: Mapped[str | None] = mapped_column(String(64))


class RuleEpisode(Base):
    """A stretch of days during which a rule's condition held for a lead.

    A rule acts when an episode opens and not again while it stays open; the episode closes on
    the first run at which the condition no longer holds, so a later return of the condition is
    a new episode and acts again. That is what "once per lead per condition episode" means.
    """

    __tablename__ = "rule_episodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule: Mapped[str] = mapped_column(String(100))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"))
    # The as_of of the run that first saw the condition hold: also part of the decisions' keys.
    started_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))

    __table_args__ = (
        # At most one open episode per rule and lead.
        Index(
            "uq_rule_episodes_open",
            "rule",
            "lead_id",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
    )


class Decision(Base):
    """Every automatic decision: what, about whom, why (rule and facts), by which run, as of when."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Makes the decision idempotent: the same decision for the same episode is recorded once.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    # No foreign keys to the run and the lead: see ImportRow.run_id (an import writes about two
    # decisions per new lead).
    run_id: Mapped[int | None] = mapped_column(index=True)
    as_of: Mapped[dt.datetime]
    action: Mapped[DecisionAction] = mapped_column(_enum(DecisionAction))
    lead_id: Mapped[int | None] = mapped_column(index=True)
    opportunity_id: Mapped[int | None] = mapped_column(ForeignKey("opportunities.id"))
    rule: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(100))
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime]

    __table_args__ = (
        # Where each round robin stopped: its latest assignment. Without it, finding that walked
        # the decisions back from the newest, through every decision made since.
        Index(
            "ix_decisions_assignments",
            "rule",
            "id",
            sqlite_where=text("action = 'assign_owner'"),
            postgresql_where=text("action = 'assign_owner'"),
        ),
    )
