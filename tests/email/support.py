"""Builders for the email tests: real rows in the real store."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable

from sqlalchemy.orm import Session

from tasks.store.models import Lead, LeadStatus, Owner

T0 = dt.datetime(2026, 3, 2, 14, tzinfo=dt.UTC)
_seq = itertools.count(1)

# The ``queue_emails`` fixture: ``queue_emails(n, due_at=..., template=...) -> ids``.
QueueEmails = Callable[..., list[int]]


def add_lead(session: Session, *, owner: bool = True, **fields: object) -> Lead:
    """A lead (with an owner unless told otherwise), flushed; every field can be overridden."""
    n = next(_seq)
    owner_id = None
    if owner:
        row = Owner(name="Ava Stone", email=f"ava{n}@nurture.example", active=True)
        session.add(row)
        session.flush()
        owner_id = row.id
    email = fields.pop("email", f"Person{n}@Company{n}.example")
    values: dict[str, object] = {
        "email": email,
        "email_key": email.casefold() if isinstance(email, str) else None,
        "first_name": "Pat",
        "last_name": "Doe",
        "company": "Acme",
        "status": LeadStatus.NURTURING,
        "status_changed_at": T0,
        "created_at": T0,
        "owner_id": owner_id,
        "tags": [],
        **fields,
    }
    lead = Lead(**values)
    session.add(lead)
    session.flush()
    return lead
