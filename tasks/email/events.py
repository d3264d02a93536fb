"""SendGrid Event Webhook payloads: validated, stored once, applied to emails and leads.

Each event is stored once by SendGrid's ``sg_event_id`` (a retried POST stores nothing new) and
only newly stored events change anything, so replaying a payload is harmless. Effects do not
depend on the order events arrive in:

* ``processed``, ``delivered``, ``bounce``, ``dropped``, ``deferred``: the email was accepted.
  An email still in ``sending`` (its request went out but the answer was lost: see sending.py)
  becomes ``sent``; this is how the outbox reconciles a send without ever resending blindly.
* delivery is the strongest outcome seen: bounced or dropped > delivered > deferred, whatever
  came first;
* a hard bounce, a spam report, an unsubscribe (list or group) and a drop for a bounced,
  unsubscribed, spam-reported or invalid address suppress the address for every flow;
* opens and clicks are stored (engagement), nothing more.

An event names its email by our ``nurture_email_id`` custom arg, else by the SendGrid message id
the send returned. An event for an email we do not know is stored with no email.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from tasks.ingest.normalise import email_key
from tasks.store.models import (
    Delivery,
    EmailEvent,
    EmailStatus,
    OutboxEmail,
    Suppression,
    SuppressionReason,
)
from tasks.store.upsert import among, insert_ignore_returning, rowcount

EventName = Literal[
    "processed", "dropped", "delivered", "deferred", "bounce", "open", "click", "spamreport",
    "unsubscribe", "group_unsubscribe", "group_resubscribe",
]  # fmt: skip
ACCEPTED_BY_SENDGRID = frozenset({"processed", "delivered", "bounce", "dropped", "deferred"})
# The strongest delivery outcome wins, whatever the order events arrive in.
DELIVERY_RANK = {None: 0, Delivery.DEFERRED: 1, Delivery.DELIVERED: 2, Delivery.DROPPED: 3,
                 Delivery.BOUNCED: 3}  # fmt: skip
DELIVERY_OF = {"deferred": Delivery.DEFERRED, "delivered": Delivery.DELIVERED,
               "dropped": Delivery.DROPPED, "bounce": Delivery.BOUNCED}  # fmt: skip
# Most events per request: SendGrid batches up to about 1,000 (and 768 KB) per POST.
MAX_EVENTS = 10_000


class EventError(ValueError):
    """A payload that is not a list of SendGrid events; names the event and the field."""


class SendGridEvent(BaseModel):
    """What we read of one event; the rest is kept verbatim in the stored payload."""

    model_config = ConfigDict(extra="allow", frozen=True)

    sg_event_id: str = Field(min_length=1, max_length=128)
    event: EventName
    email: str = Field(min_length=3, max_length=320)
    timestamp: int = Field(ge=0, le=32_503_680_000)  # up to the year 3000
    sg_message_id: str | None = Field(default=None, max_length=256)
    nurture_email_id: str | None = None  # our custom arg, echoed on every event
    type: str | None = None  # bounce: "bounce" (hard) or "blocked" (soft)
    reason: str | None = None

    @property
    def occurred_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.timestamp, tz=dt.UTC)

    @property
    def message_id(self) -> str | None:
        # "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-..." -> the X-Message-Id the send returned.
        return self.sg_message_id.split(".", 1)[0] if self.sg_message_id else None


@dataclass
class EventSummary:
    received: int = 0
    stored: int = 0  # new: not seen before
    duplicates: int = 0
    unmatched: int = 0  # for no email of ours
    reconciled: int = 0  # emails in ``sending`` now known sent
    suppressed: int = 0  # addresses newly suppressed
    by_event: dict[str, int] = field(default_factory=dict)


def parse_events(body: bytes | str) -> list[SendGridEvent]:
    """A webhook body (a JSON array of events) as events; ``EventError`` names what is wrong."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EventError(f"not JSON: {exc}") from None
    if not isinstance(data, list):
        raise EventError("expected a JSON array of events")
    return events_from(data)


def events_from(items: Sequence[Any], where: str = "event") -> list[SendGridEvent]:
    if len(items) > MAX_EVENTS:
        raise EventError(f"{len(items)} events in one payload; at most {MAX_EVENTS}")
    events: list[SendGridEvent] = []
    for index, item in enumerate(items):
        try:
            events.append(SendGridEvent.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(p) for p in first["loc"]) or "(event)"
            raise EventError(f"{where} {index}: {name}: {first['msg']}") from None
    return events


def load_event_file(path: Path) -> list[SendGridEvent]:
    """Saved payloads: one JSON array, or JSON Lines of arrays or single events. An error names
    the file and line."""
    text = path.read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, list):
        try:
            return events_from(whole, where=f"{path}: event")
        except EventError as exc:
            raise ValueError(str(exc)) from None
    events: list[SendGridEvent] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            events += events_from(
                item if isinstance(item, list) else [item], where=f"{path}:{number}: event"
            )
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON: {exc.msg}") from None
        except EventError as exc:
            raise ValueError(str(exc)) from None
    return events


def apply_events(
    session: Session, events: Iterable[SendGridEvent], *, now: dt.datetime
) -> EventSummary:
    """Store the events not seen before and apply them, in the caller's transaction."""
    listed = list(events)
    summary = EventSummary(received=len(listed))
    if not listed:
        return summary
    unique = list({e.sg_event_id: e for e in listed}.values())
    emails = _emails_of(session, unique)
    rows = [
        {
            "sg_event_id": e.sg_event_id,
            "email_id": emails[e.sg_event_id][0] if e.sg_event_id in emails else None,
            "lead_id": emails[e.sg_event_id][1] if e.sg_event_id in emails else None,
            "event": e.event,
            "occurred_at": e.occurred_at,
            "payload": e.model_dump(mode="json", exclude_none=True),
        }
        for e in unique
    ]
    new_ids = {
        key
        for (key,) in insert_ignore_returning(
            session, EmailEvent, rows, ["sg_event_id"], ["sg_event_id"]
        )
    }
    fresh = [e for e in unique if e.sg_event_id in new_ids]
    summary.stored = len(fresh)
    summary.duplicates = len(listed) - len(fresh)
    summary.unmatched = sum(1 for e in fresh if e.sg_event_id not in emails)
    for e in fresh:
        summary.by_event[e.event] = summary.by_event.get(e.event, 0) + 1
    summary.reconciled = _reconcile(session, fresh, emails)
    _record_delivery(session, fresh, emails)
    _record_engagement(session, fresh, emails)
    summary.suppressed = suppress(
        session,
        [(e.email, reason) for e in fresh if (reason := _suppression_reason(e)) is not None],
        source="sendgrid",
        now=now,
    )
    return summary


def suppress(
    session: Session,
    addresses: Iterable[tuple[str, SuppressionReason]],
    *,
    source: str,
    now: dt.datetime,
) -> int:
    """Suppress addresses (by match key) not suppressed yet; return how many are new."""
    rows = {
        email_key(address): {
            "email_key": email_key(address),
            "reason": reason,
            "created_at": now,
            "source": source,
        }
        for address, reason in addresses
    }
    if not rows:
        return 0
    inserted = insert_ignore_returning(
        session, Suppression, list(rows.values()), ["email_key"], ["id"]
    )
    return len(inserted)


def _emails_of(session: Session, events: Sequence[SendGridEvent]) -> dict[str, tuple[int, int]]:
    """{sg_event_id: (email id, lead id)} for the events that name an email of ours."""
    # Only ids an email could have: anything else (or out of the column's range) names none.
    ids = {e.sg_event_id: int(e.nurture_email_id) for e in events
           if e.nurture_email_id and e.nurture_email_id.isdigit()
           and int(e.nurture_email_id) < 2**31}  # fmt: skip
    by_id = dict(
        session.execute(
            select(OutboxEmail.id, OutboxEmail.lead_id).where(
                among(session, OutboxEmail.id, sorted(set(ids.values())))
            )
        ).tuples().all()
    ) if ids else {}  # fmt: skip
    message_ids = {e.message_id for e in events if e.sg_event_id not in ids and e.message_id}
    by_message: dict[str, tuple[int, int]] = {}
    if message_ids:
        for email_id, lead_id, message_id in session.execute(
            select(OutboxEmail.id, OutboxEmail.lead_id, OutboxEmail.message_id).where(
                among(session, OutboxEmail.message_id, sorted(message_ids))
            )
        ).tuples():
            by_message[message_id or ""] = (email_id, lead_id)
    found: dict[str, tuple[int, int]] = {}
    for e in events:
        if e.sg_event_id in ids and ids[e.sg_event_id] in by_id:
            email_id = ids[e.sg_event_id]
            found[e.sg_event_id] = (email_id, by_id[email_id])
        elif e.message_id and e.message_id in by_message:
            found[e.sg_event_id] = by_message[e.message_id]
    return found


def _reconcile(
    session: Session, events: Sequence[SendGridEvent], emails: dict[str, tuple[int, int]]
) -> int:
    """Emails SendGrid accepted that the outbox still has in flight become ``sent``."""
    accepted: dict[int, SendGridEvent] = {}
    for e in events:
        if e.event in ACCEPTED_BY_SENDGRID and e.sg_event_id in emails:
            email_id = emails[e.sg_event_id][0]
            if email_id not in accepted or e.timestamp < accepted[email_id].timestamp:
                accepted[email_id] = e
    reconciled = 0
    for email_id, e in sorted(accepted.items()):
        result = session.execute(
            update(OutboxEmail)
            .where(
                OutboxEmail.id == email_id,
                OutboxEmail.status.in_([EmailStatus.SENDING, EmailStatus.CLAIMED]),
            )
            .values(
                status=EmailStatus.SENT,
                sent_at=e.occurred_at,
                error=None,
                message_id=e.message_id,
                claim=None,
            )
            .execution_options(synchronize_session=False)
        )
        reconciled += rowcount(result)
    return reconciled


def _record_delivery(
    session: Session, events: Sequence[SendGridEvent], emails: dict[str, tuple[int, int]]
) -> None:
    strongest: dict[int, Delivery] = {}
    for e in events:
        delivery = DELIVERY_OF.get(e.event)
        if delivery is None or e.sg_event_id not in emails:
            continue
        if e.event == "bounce" and (e.type or "bounce") == "blocked":
            delivery = Delivery.DEFERRED  # a soft bounce: SendGrid will not retry, but it may pass
        email_id = emails[e.sg_event_id][0]
        if DELIVERY_RANK[delivery] > DELIVERY_RANK[strongest.get(email_id)]:
            strongest[email_id] = delivery
    if not strongest:
        return
    current = dict(
        session.execute(
            select(OutboxEmail.id, OutboxEmail.delivery).where(
                among(session, OutboxEmail.id, sorted(strongest))
            )
        )
        .tuples()
        .all()
    )
    for email_id, delivery in sorted(strongest.items()):
        if DELIVERY_RANK[delivery] > DELIVERY_RANK[current.get(email_id)]:
            session.execute(
                update(OutboxEmail)
                .where(OutboxEmail.id == email_id)
                .values(delivery=delivery)
                .execution_options(synchronize_session=False)
            )


def _record_engagement(
    session: Session, events: Sequence[SendGridEvent], emails: dict[str, tuple[int, int]]
) -> None:
    """The earliest open and click of each email, whatever order the events come in."""
    first: dict[tuple[str, int], dt.datetime] = {}
    for e in events:
        if e.event in ("open", "click") and e.sg_event_id in emails:
            key = (e.event, emails[e.sg_event_id][0])
            if key not in first or e.occurred_at < first[key]:
                first[key] = e.occurred_at
    for (kind, email_id), at in sorted(first.items()):
        column = OutboxEmail.opened_at if kind == "open" else OutboxEmail.clicked_at
        session.execute(
            update(OutboxEmail)
            .where(OutboxEmail.id == email_id, or_(column.is_(None), column > at))
            .values({column: at})
            .execution_options(synchronize_session=False)
        )


def _suppression_reason(e: SendGridEvent) -> SuppressionReason | None:
    if e.event == "bounce":
        return SuppressionReason.BOUNCED if (e.type or "bounce") == "bounce" else None
    if e.event == "spamreport":
        return SuppressionReason.SPAM_REPORT
    if e.event in ("unsubscribe", "group_unsubscribe"):
        return SuppressionReason.UNSUBSCRIBED
    if e.event == "dropped":
        reason = (e.reason or "").lower()
        for word, why in (("bounce", SuppressionReason.BOUNCED),
                          ("unsubscribe", SuppressionReason.UNSUBSCRIBED),
                          ("spam", SuppressionReason.SPAM_REPORT),
                          ("invalid", SuppressionReason.INVALID)):  # fmt: skip
            if word in reason:
                return why
    return None
