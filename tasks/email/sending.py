"""Send due emails exactly once: claim, commit, send, record; never resend blindly.

States: queued -> sending -> sent | failed (or back to queued when retryable), and queued ->
suppressed | skipped_late | recorded (outbox only). A row is marked ``sending`` and committed
before the HTTP call; a row found in ``sending`` later (a crash mid-send) is left for
reconciliation from the webhook's ``processed`` event and is never sent again by this path.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Engine, and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tasks.config.loader import NurtureConfig
from tasks.email.outbox import email_token
from tasks.email.senders import EmailSender, OutgoingMessage
from tasks.store.models import EmailStatus, Lead, OutboxEmail, Suppression
from tasks.store.upsert import rowcount

MAX_ATTEMPTS = 5


@dataclass
class SendSummary:
    by_status: dict[str, int] = field(default_factory=dict)
    needs_reconcile: int = 0
    would_send: int = 0

    def add(self, status: str, n: int = 1) -> None:
        if n:
            self.by_status[status] = self.by_status.get(status, 0) + n


def _due(as_of: dt.datetime) -> ColumnElement[bool]:
    return and_(OutboxEmail.status == EmailStatus.QUEUED, OutboxEmail.due_at <= as_of)


def _settle_unsendable(
    session: Session, as_of: dt.datetime, lateness: dt.timedelta, summary: SendSummary
) -> None:
    """Suppressed addresses (checked now, at send time) and emails whose moment has passed."""
    suppressed = OutboxEmail.lead_id.in_(
        select(Lead.id).join(Suppression, Suppression.email_key == Lead.email_key)
    )
    summary.add(
        "suppressed",
        rowcount(
            session.execute(
                update(OutboxEmail)
                .where(_due(as_of), suppressed)
                .values(status=EmailStatus.SUPPRESSED)
            )
        ),
    )
    summary.add(
        "skipped_late",
        rowcount(
            session.execute(
                update(OutboxEmail)
                .where(_due(as_of), OutboxEmail.due_at < as_of - lateness)
                .values(status=EmailStatus.SKIPPED_LATE)
            )
        ),
    )


def send_due_emails(
    engine: Engine,
    sender: EmailSender,
    *,
    as_of: dt.datetime,
    config: NurtureConfig | None = None,
    lateness: dt.timedelta = dt.timedelta(days=2),
    batch_size: int = 500,
    dry_run: bool = False,
) -> SendSummary:
    summary = SendSummary()
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session, session.begin():
        summary.needs_reconcile = (
            session.scalar(select(func.count()).where(OutboxEmail.status == EmailStatus.SENDING))
            or 0
        )
        if dry_run:
            summary.would_send = session.scalar(select(func.count()).where(_due(as_of))) or 0
            return summary
        _settle_unsendable(session, as_of, lateness, summary)
        if sender.records_only:
            recorded = session.execute(
                update(OutboxEmail)
                .where(_due(as_of))
                .values(status=EmailStatus.RECORDED, sent_at=as_of)
            )
            summary.add("recorded", rowcount(recorded))
            return summary
    if config is None:
        from tasks.stages import current_config

        config = current_config()
    attempted: set[int] = set()
    while claimed := _claim(factory, as_of, batch_size, attempted):
        for email in claimed:
            attempted.add(email.id)
            _deliver(factory, sender, config, email, as_of, summary)
    return summary


def _claim(
    factory: sessionmaker[Session], as_of: dt.datetime, batch_size: int, attempted: set[int]
) -> list[OutboxEmail]:
    """Mark a batch ``sending`` and commit before any HTTP call (row locks on PostgreSQL).

    Rows already attempted in this call are not claimed again: a retryable failure waits for
    the next run instead of hammering a struggling API.
    """
    with factory() as session, session.begin():
        query = (
            select(OutboxEmail)
            .where(_due(as_of), OutboxEmail.id.not_in(attempted))
            .order_by(OutboxEmail.due_at, OutboxEmail.id)
            .limit(batch_size)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = list(session.scalars(query))
        for row in rows:
            row.status = EmailStatus.SENDING
            row.attempts += 1
        return rows


def _deliver(
    factory: sessionmaker[Session],
    sender: EmailSender,
    config: NurtureConfig,
    email: OutboxEmail,
    as_of: dt.datetime,
    summary: SendSummary,
) -> None:
    sending = config.sending
    result = sender.send(
        OutgoingMessage(
            email_id=email.id,
            dedupe_key=email.dedupe_key,
            to_email=email.to_email,
            from_email=sending.from_email,
            from_name=sending.from_name,
            reply_to=sending.reply_to,
            subject=email.subject,
            text=email.body_text,
            html=email.body_html,
            unsubscribe_url=sending.unsubscribe_url.replace(
                "{token}", email_token(email.dedupe_key)
            ),
        )
    )
    if result.ok:
        values: dict[str, object] = {
            "status": EmailStatus.SENT,
            "sent_at": as_of,
            "message_id": result.message_id,
            "error": None,
        }
    elif result.retryable and email.attempts < MAX_ATTEMPTS:
        values = {"status": EmailStatus.QUEUED, "error": result.error}
    else:
        values = {"status": EmailStatus.FAILED, "error": result.error}
    with factory() as session, session.begin():
        session.execute(
            update(OutboxEmail)
            .where(OutboxEmail.id == email.id, OutboxEmail.status == EmailStatus.SENDING)
            .values(**values)
        )
    summary.add("retry_later" if values["status"] == EmailStatus.QUEUED else str(values["status"]))
