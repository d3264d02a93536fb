"""Small builders for store rows in tests: real rows in the real store, no mocks."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

from sqlalchemy.orm import Session

from tasks.store.models import (
    Activity,
    ActivityKind,
    Delivery,
    EmailStatus,
    Lead,
    LeadStatus,
    LostReason,
    Opportunity,
    OpportunityStatus,
    OutboxEmail,
    Owner,
    Run,
    RunKind,
)

_seq = itertools.count(1)


def owner(session: Session, name: str = "Ava", region: str | None = None) -> Owner:
    n = next(_seq)
    row = Owner(name=name, email=f"{name.lower()}{n}@nurture.example", region=region, active=True)
    session.add(row)
    session.flush()
    return row


def run(session: Session, as_of: dt.datetime) -> int:
    """A new import run: each lead import is a run of its own (its rows are keyed by it)."""
    row = Run(kind=RunKind.INGEST, as_of=as_of, started_at=as_of, counts={})
    session.add(row)
    session.flush()
    return row.id


def lead(
    session: Session,
    created: dt.datetime,
    *,
    status: LeadStatus = LeadStatus.NURTURING,
    owner_id: int | None = None,
    **fields: object,
) -> Lead:
    n = next(_seq)
    email = str(fields.pop("email", f"person{n}@company{n}.example"))
    row = Lead(
        email=email,
        email_key=email.casefold(),
        first_name=str(fields.pop("first_name", "Pat")),
        last_name="Doe",
        status=status,
        status_changed_at=created,
        created_at=created,
        owner_id=owner_id,
        owner_assigned_at=created if owner_id else None,
        source="webinar",
        tags=[],
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def sent_email(
    session: Session,
    lead_id: int,
    at: dt.datetime,
    *,
    delivery: Delivery | None = None,
    status: EmailStatus = EmailStatus.RECORDED,
) -> OutboxEmail:
    n = next(_seq)
    row = OutboxEmail(
        dedupe_key=f"test:{n}",
        lead_id=lead_id,
        template="welcome",
        to_email="x@example.org",
        subject="s",
        body_text="t",
        body_html="h",
        status=status,
        delivery=delivery,
        due_at=at,
        created_at=at,
        sent_at=at if status in (EmailStatus.SENT, EmailStatus.RECORDED) else None,
    )
    session.add(row)
    session.flush()
    return row


def activity(
    session: Session,
    lead_id: int,
    kind: ActivityKind,
    at: dt.datetime,
    *,
    opportunity_id: int | None = None,
    **fields: object,
) -> Activity:
    row = Activity(
        lead_id=lead_id, kind=kind, occurred_at=at, opportunity_id=opportunity_id, **fields
    )
    session.add(row)
    session.flush()
    return row


def deal(
    session: Session,
    lead_id: int,
    stage: str,
    entered: dt.datetime,
    *,
    status: OpportunityStatus = OpportunityStatus.OPEN,
    lost_reason: LostReason | None = None,
    closed_at: dt.datetime | None = None,
) -> Opportunity:
    row = Opportunity(
        lead_id=lead_id,
        name=f"Deal {lead_id}",
        stage=stage,
        stage_entered_at=entered,
        created_at=entered,
        status=status,
        lost_reason=lost_reason,
        closed_at=closed_at,
        history={},
    )
    session.add(row)
    session.flush()
    return row


def days(n: float) -> dt.timedelta:
    return dt.timedelta(days=n)


def import_book(
    url: str, directory: Path, *, seed: int, leads: int, start: dt.date, days: int
) -> None:
    """A demo book (leads, deals, activities) imported into the store at ``url``, as ops would
    import a CRM's exports. NURTURE_DATABASE_URL must already name that store."""
    from tasks.demo.generator import generate_book
    from tasks.ingest.crm import import_activities, import_opportunities
    from tasks.ingest_tasks import import_leads_task
    from tasks.runs import start_run
    from tasks.stages import current_config
    from tasks.store.db import make_engine
    from tasks.store.models import RunKind

    book = generate_book(directory, seed=seed, leads=leads, start=start, days=days)
    imported = dt.datetime.combine(start, dt.time(8), tzinfo=dt.UTC)
    import_leads_task.fn([str(p) for p in book.lead_files], imported, None, None)
    stages = [s.name for s in current_config().pipeline.stages]
    with Session(make_engine(url)) as session:
        run = start_run(session, RunKind.IMPORT, imported)
        import_opportunities(
            session, [book.opportunities], run_id=run.id, as_of=imported, stages=stages
        )
        import_activities(session, [book.activities], run_id=run.id, as_of=imported)
        session.commit()


def truncate_store(url: str) -> None:
    """Empty every table of the PostgreSQL store at ``url``; ids start again from 1."""
    from sqlalchemy import text

    from tasks.store.db import make_engine
    from tasks.store.models import Base

    engine = make_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
