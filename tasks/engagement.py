"""Leads who answered: a real reply (never an auto-reply) moves a lead to working."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import exists, func, update
from sqlalchemy.orm import Session

from tasks.spans import LeadSpan, within
from tasks.store.models import Activity, ActivityKind, Lead, LeadStatus
from tasks.store.upsert import rowcount


def mark_engaged(session: Session, as_of: dt.datetime, span: LeadSpan | None = None) -> int:
    replied = exists().where(
        Activity.lead_id == Lead.id,
        Activity.kind == ActivityKind.REPLY,
        Activity.occurred_at <= as_of,
        Activity.occurred_at >= func.coalesce(Lead.cycle_started_at, Lead.created_at),
    )
    result = session.execute(
        update(Lead)
        .where(
            Lead.status.in_([LeadStatus.NEW, LeadStatus.NURTURING]),
            Lead.created_at <= as_of,
            within(span, Lead.id),
            replied,
        )
        .values(status=LeadStatus.WORKING, status_changed_at=as_of, status_reason="replied")
        .execution_options(synchronize_session="fetch")
    )
    return rowcount(result)
