"""The outbox: every email is a row with a unique key, rendered and stored before any send.

A rerun, backfill or concurrent run that asks for the same email (same ``dedupe_key``) inserts
nothing. Suppressed addresses get a row in status ``suppressed`` and are never sent; a lead
without an address gets no row (the decision that wanted the email is recorded elsewhere).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.config.models import BusinessHours, Sending
from tasks.email.timing import recipient_zone, within_hours
from tasks.email.tokens import email_token
from tasks.store.models import EmailStatus, Lead, OutboxEmail, Owner, Suppression
from tasks.store.upsert import among, insert_ignore

# Leads loaded per query: well under SQLite's bound-parameter limit.
BATCH = 1000


@dataclass(frozen=True)
class QueuedEmail:
    dedupe_key: str  # e.g. "cadence:{enrolment_id}:{step}", "decision:{id}", "followup:{id}"
    lead_id: int
    template: str  # a name in config.templates
    context: dict[str, Any]  # extra template variables (reason, whats_new, ...)
    due_at: dt.datetime  # aware UTC
    opportunity_id: int | None = None
    enrolment_id: int | None = None
    step: int | None = None
    decision_id: int | None = None
    hours: BusinessHours | None = None  # a cadence step's own send window, else sending.yaml's


def unsubscribe_url(sending: Sending, dedupe_key: str) -> str:
    return sending.unsubscribe_url.replace("{token}", email_token(dedupe_key))


def enqueue_emails(
    session: Session,
    config: NurtureConfig,
    emails: list[QueuedEmail],
    *,
    run_id: int | None,
    as_of: dt.datetime,
) -> list[int]:
    """Render and insert the emails not yet in the outbox; return the ids of the new rows."""
    unknown = sorted({e.template for e in emails} - config.templates.keys())
    if unknown:
        raise ValueError(f"unknown email template(s) {unknown}: not in config/templates/")
    inserted: list[int] = []
    for batch in _batches(emails, BATCH):
        people = _recipients(session, {e.lead_id for e in batch})
        rows = [
            _row(config, email, people[email.lead_id], run_id=run_id, as_of=as_of)
            for email in batch
            if email.lead_id in people and people[email.lead_id].email
        ]
        inserted += insert_ignore(session, OutboxEmail, rows, ["dedupe_key"])
    return inserted


def _batches(emails: Sequence[QueuedEmail], size: int) -> Iterator[Sequence[QueuedEmail]]:
    for start in range(0, len(emails), size):
        yield emails[start : start + size]


def _recipients(session: Session, lead_ids: set[int]) -> dict[int, Row[Any]]:
    """Leads, their owners and whether their address is suppressed: one query."""
    query = (
        select(
            Lead.id,
            Lead.email,
            Lead.first_name,
            Lead.last_name,
            Lead.company,
            Lead.phone,
            Lead.country,
            Owner.name.label("owner_name"),
            Owner.email.label("owner_email"),
            Suppression.id.label("suppression_id"),
        )
        .outerjoin(Owner, Owner.id == Lead.owner_id)
        .outerjoin(Suppression, Suppression.email_key == Lead.email_key)
        .where(among(session, Lead.id, sorted(lead_ids)))
    )
    return {row.id: row for row in session.execute(query)}


def _row(
    config: NurtureConfig,
    email: QueuedEmail,
    person: Row[Any],
    *,
    run_id: int | None,
    as_of: dt.datetime,
) -> dict[str, Any]:
    sending = config.sending
    # Lead fields are values handed to the template, never template source: markup or "{{ }}"
    # in a name stays inert, and the HTML part escapes it.
    context = {
        "lead": {
            "first_name": person.first_name,
            "last_name": person.last_name,
            "company": person.company,
            "email": person.email,
        },
        "owner": {
            "name": person.owner_name or sending.from_name,
            "email": person.owner_email or sending.from_email,
        },
        "sender": sending,
        "unsubscribe_url": unsubscribe_url(sending, email.dedupe_key),
        **email.context,
    }
    template = config.templates[email.template]
    rendered = template.render(context)
    suppressed = person.suppression_id is not None
    return {
        "dedupe_key": email.dedupe_key,
        "lead_id": email.lead_id,
        "opportunity_id": email.opportunity_id,
        "enrolment_id": email.enrolment_id,
        "step": email.step,
        "decision_id": email.decision_id,
        "template": email.template,
        "to_email": person.email,
        "subject": rendered.subject,
        "body_text": rendered.text,
        "body_html": rendered.html,
        "template_id": template.sendgrid_template,
        # SendGrid renders these itself (Handlebars escapes them): plain JSON data, frozen now.
        "template_data": _template_data(context, rendered.subject)
        if template.sendgrid_template
        else None,
        "status": EmailStatus.SUPPRESSED if suppressed else EmailStatus.QUEUED,
        # Moved, if need be, into the recipient's business hours in their own time zone.
        "due_at": within_hours(
            email.due_at,
            recipient_zone(person.phone, person.country, sending.default_timezone),
            email.hours or sending.business_hours,
        ),
        "created_at": as_of,
        "attempts": 0,
        "run_id": run_id,
    }


def _template_data(context: dict[str, Any], subject: str) -> dict[str, Any]:
    sender = context["sender"]
    return {
        **{k: v for k, v in context.items() if k != "sender"},
        "sender": {"from_name": sender.from_name, "postal_address": sender.postal_address},
        "subject": subject,
    }
