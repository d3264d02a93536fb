"""The outbox: every email is a row with a unique key, rendered and stored before any send.

A rerun, backfill or concurrent run that asks for the same email (same ``dedupe_key``) inserts
nothing. Suppressed addresses get a row in status ``suppressed`` and are never sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.store.models import EmailStatus, Lead, OutboxEmail, Owner, Suppression
from tasks.store.upsert import insert_ignore

DEV_SECRET = "nurture-development-secret"


@dataclass(frozen=True)
class QueuedEmail:
    dedupe_key: str
    lead_id: int
    template: str
    context: dict[str, Any]
    due_at: dt.datetime
    opportunity_id: int | None = None
    enrolment_id: int | None = None
    step: int | None = None
    decision_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def email_token(dedupe_key: str) -> str:
    """An unguessable per-email token (unsubscribe links, reply threading), derived, not stored."""
    secret = os.environ.get("NURTURE_SECRET", DEV_SECRET).encode()
    return hmac.new(secret, dedupe_key.encode(), hashlib.sha256).hexdigest()[:32]


def enqueue_emails(
    session: Session,
    config: NurtureConfig,
    emails: list[QueuedEmail],
    *,
    run_id: int | None,
    as_of: dt.datetime,
) -> list[int]:
    """Render and insert the emails not yet in the outbox; return the ids of the new rows."""
    if not emails:
        return []
    lead_ids = {e.lead_id for e in emails}
    people = {
        row.id: row
        for row in session.execute(
            select(
                Lead.id,
                Lead.email,
                Lead.email_key,
                Lead.first_name,
                Lead.last_name,
                Lead.company,
                Owner.name.label("owner_name"),
                Owner.email.label("owner_email"),
            )
            .outerjoin(Owner, Owner.id == Lead.owner_id)
            .where(Lead.id.in_(lead_ids))
        )
    }
    keys = {p.email_key for p in people.values() if p.email_key}
    suppressed = set(
        session.scalars(select(Suppression.email_key).where(Suppression.email_key.in_(keys)))
    )
    sending = config.sending
    rows = []
    for email in emails:
        person = people.get(email.lead_id)
        if person is None or not person.email:
            continue  # no address, nothing to send: the decision itself is still recorded
        token = email_token(email.dedupe_key)
        # Lead fields are data handed to the template, never template source: markup or
        # "{{ }}" in a name stays inert (and is escaped in the HTML part).
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
            "unsubscribe_url": sending.unsubscribe_url.replace("{token}", token),
            **email.context,
        }
        rendered = config.templates[email.template].render(context)
        rows.append(
            {
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
                "status": (
                    EmailStatus.SUPPRESSED if person.email_key in suppressed else EmailStatus.QUEUED
                ),
                "due_at": email.due_at,
                "created_at": as_of,
                "attempts": 0,
                "run_id": run_id,
            }
        )
    return insert_ignore(session, OutboxEmail, rows, ["dedupe_key"])
